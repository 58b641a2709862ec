"""Video post-guard: what a world model generated is checked and anonymised before anyone sees it.

A chain of two stages over one decode pass, streaming (bounded memory):
- unsafe: sampled frames go to an UnsafeClassifier (NudeNet offline); any unsafe frame rejects the video;
- faces: every frame is anonymised (detect every k-th frame, track, blur; see faces.py).

FAIL CLOSED: a stage whose model cannot load, or that errors while running (GuardError), blocks the
video with that error as the reason and no output is published. A rejected video is never written
(the encoder writes to a temp name that is discarded). Unreadable input raises VideoError.

    guard = PostGuard(PostGuardConfig())
    out, verdict = guard.apply("gen.mp4", "gen.guarded.mp4")     # out is None when blocked
    frames, verdict = guard.apply_frames(frames, fps=24)          # [] when blocked
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
import yaml
from pydantic import BaseModel, Field

from ..storage.atomic import atomic_path
from ..video import iter_frames, probe, write_mp4
from .faces import FaceBlurConfig, FaceBlurrer, FaceDetector, make_detector
from .unsafe import FrameSampler, UnsafeClassifier, UnsafeConfig, UnsafeScan, make_classifier
from .verdict import GuardError, StageResult, Verdict

log = logging.getLogger(__name__)


class PostGuardConfig(BaseModel):
    """The `post:` section of configs/guardrails.yaml."""

    faces: FaceBlurConfig = Field(default_factory=FaceBlurConfig)
    unsafe: UnsafeConfig = Field(default_factory=UnsafeConfig)
    stop_on_unsafe: bool = Field(
        True, description="stop decoding at the first unsafe frame (it is rejected anyway)"
    )
    crf: int = Field(18, ge=0, le=51, description="H.264 quality of the guarded output")
    preset: str = "veryfast"
    copy_when_unchanged: bool = Field(
        True,
        description="publish a byte copy of the input instead of re-encoding it when no frame was changed "
        "(no face found), if the input is already silent H.264/yuv420p in mp4, unrotated",
    )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> PostGuardConfig:
        """Read a YAML file: its `post:` section if there is one, else the whole document."""
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"cannot read post-guard config {path}: {e}") from e
        return cls.model_validate(doc.get("post", doc) if isinstance(doc, dict) else {})


class _Unsafe(Exception):
    """Internal: stop the stream early, the video is rejected."""


class PostGuardRun:
    """One video going through the guard: iterate `frames()` for the guarded frames, then `verdict()`."""

    def __init__(self, guard: PostGuard, frames: Iterable[np.ndarray], fps: float):
        self.guard, self._src, self.fps = guard, frames, fps
        self.scan = UnsafeScan(guard.cfg.unsafe.threshold)
        self.blurrer = (
            FaceBlurrer(guard.cfg.faces, guard.face_detector) if guard.face_detector is not None else None
        )
        self.unsafe_ms = 0.0
        self.faces_ms = 0.0
        self.frames_in = 0
        self.error: str | None = None  # a stage that failed mid-run (GuardError): blocks
        self.stopped_early = False

    def _tap(self) -> Iterator[np.ndarray]:
        """Source frames, with the sampled ones scored by the unsafe classifier on the way (originals, pre-blur)."""
        clf = self.guard.unsafe_classifier
        sampler = FrameSampler(self.fps, self.guard.cfg.unsafe.sample_every_s)
        last: tuple[int, np.ndarray] | None = None
        for idx, f in enumerate(self._src):
            self.frames_in += 1
            if clf is not None and sampler.wants(idx):
                self._classify(clf, idx, f)
            last = (idx, f)
            yield f
        if clf is not None and last is not None and not sampler.wants(last[0]):
            self._classify(clf, *last)  # the last frame is always looked at

    def _classify(self, clf: UnsafeClassifier, idx: int, f: np.ndarray) -> None:
        t0 = time.perf_counter()
        self.scan.add(idx, clf.classify(f))
        self.unsafe_ms += (time.perf_counter() - t0) * 1000
        if self.scan.unsafe and self.guard.cfg.stop_on_unsafe:
            raise _Unsafe

    def frames(self) -> Iterator[np.ndarray]:
        """Guarded frames, streaming. Ends early (without error) if the video is rejected midway."""
        src = self._tap()
        out = self.blurrer.process(src) if self.blurrer is not None else src
        t0 = time.perf_counter()
        try:
            yield from out
        except _Unsafe:
            self.stopped_early = True
        except GuardError as e:
            self.error = str(e)
            log.error("post-guard stage failed, blocking: %s", e)
        finally:
            self.faces_ms = (time.perf_counter() - t0) * 1000 - self.unsafe_ms

    def verdict(self) -> Verdict:
        cfg = self.guard.cfg
        results: list[StageResult] = []
        if cfg.unsafe.enabled:
            s = self.scan
            reasons = [
                f"unsafe: frame {i}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in labels.items())
                + f" (threshold {s.threshold})"
                for i, labels in s.flagged[:5]
            ]
            if self.error and self.error.startswith("unsafe"):
                reasons.append(self.error)
            ok = not s.unsafe and not (self.error and self.error.startswith("unsafe"))
            if ok and s.sampled == 0:
                ok, reasons = False, ["unsafe: no frame was classified (empty video?)"]  # fail closed
            results.append(
                StageResult(
                    "unsafe", ok, reasons, {"unsafe": s.max_score, "sampled": s.sampled}, self.unsafe_ms
                )
            )
        if cfg.faces.enabled and self.blurrer is not None:
            st = self.blurrer.stats
            err = self.error if self.error and not self.error.startswith("unsafe") else None
            results.append(
                StageResult(
                    "faces",
                    err is None,
                    [err] if err else [],
                    {
                        "faces": float(st.tracks),
                        "frames_blurred": st.frames_blurred,
                        "blurred_area_share": float(st.blurred_area_share),
                    },
                    self.faces_ms,
                )
            )
        return Verdict.from_stages(results)


class PostGuard:
    """The video post-guard: `apply(video) -> (path | None, Verdict)`, `apply_frames(frames, fps)`."""

    def __init__(
        self,
        cfg: PostGuardConfig | None = None,
        *,
        face_detector: FaceDetector | None = None,
        unsafe_classifier: UnsafeClassifier | None = None,
    ):
        self.cfg = cfg or PostGuardConfig()
        self.load_errors: list[str] = []  # models that did not load: every video is blocked (fail closed)
        self.face_detector = face_detector
        self.unsafe_classifier = unsafe_classifier
        if self.cfg.faces.enabled and face_detector is None:
            try:
                self.face_detector = make_detector(self.cfg.faces)
            except GuardError as e:
                self.load_errors.append(str(e))
        if self.cfg.unsafe.enabled and unsafe_classifier is None:
            try:
                self.unsafe_classifier = make_classifier(self.cfg.unsafe)
            except GuardError as e:
                self.load_errors.append(str(e))
        for e in self.load_errors:
            log.error("post-guard stage cannot load, every video will be blocked: %s", e)

    def _blocked_by_load(self) -> Verdict:
        return Verdict(
            allowed=False,
            reasons=list(self.load_errors),
            scores={},
            stage_results=[StageResult(e.split(":", 1)[0], False, [e]).to_dict() for e in self.load_errors],
        )

    def run(self, frames: Iterable[np.ndarray], fps: float) -> PostGuardRun:
        """Low-level streaming API: iterate run.frames(), then read run.verdict()."""
        return PostGuardRun(self, frames, fps)

    def apply_frames(self, frames: Iterable[np.ndarray], fps: float) -> tuple[list[np.ndarray], Verdict]:
        """Guard frames held in memory (generation pipelines). Returns ([], verdict) when blocked.

        Collects the output: for long videos use `apply` (file to file) or `run` (streaming).
        """
        if self.load_errors:
            return [], self._blocked_by_load()
        r = self.run(frames, fps)
        out = list(r.frames())
        if r.frames_in == 0:
            raise ValueError("apply_frames: no frames given")
        v = r.verdict()
        return (out if v.allowed else []), v

    def apply(
        self, video: str | os.PathLike, out: str | os.PathLike | None = None
    ) -> tuple[Path | None, Verdict]:
        """Guard a video file. Writes the anonymised H.264 mp4 atomically to `out` (default:
        `<stem>.guarded.mp4` beside the input) and returns (out, verdict); (None, verdict) when blocked.

        Raises VideoError for input that is not a readable video (empty, not a video, undecodable).
        """
        video = Path(video)
        info = probe(video)  # VideoError with a readable reason for broken input
        dst = Path(out) if out is not None else video.with_name(f"{video.stem}.guarded.mp4")
        if dst.resolve() == video.resolve():
            raise ValueError(f"output {dst} would overwrite the input")
        if self.load_errors:
            return None, self._blocked_by_load()
        src = (img for _, img in iter_frames(video, on_error="raise"))
        r = self.run(src, info.fps)
        # Encode into a temp name: published only if the verdict allows it, discarded otherwise.
        tmp = dst.with_name(f".pending-{os.getpid()}-{dst.name}")
        n = 0
        frames: Iterator[np.ndarray] = r.frames()
        copied = False
        if self._can_copy(info, r):
            # Hold off the encoder until a frame is changed (a face blurred). Most curated clips have no
            # face: then the input is published as is (no re-encode: faster, and no generation loss).
            # Unchanged frames are not kept: on the first change the prefix is decoded again.
            prefix, first = 0, None
            for f in frames:
                if r.blurrer is not None and r.blurrer.stats.frames_blurred:
                    first = f
                    break
                prefix += 1
            if first is None:
                if r.frames_in and not (r.stopped_early or r.error):
                    shutil.copyfile(video, tmp)
                    n, copied = prefix, True
            else:
                again = (img for _, img in iter_frames(video, on_error="raise"))
                frames = itertools.chain(itertools.islice(again, prefix), [first], frames)
        try:
            if not copied:
                with atomic_path(tmp) as t:
                    n = write_mp4(frames, t, fps=info.fps, crf=self.cfg.crf, preset=self.cfg.preset)
        except ValueError:
            if r.frames_in == 0 or r.stopped_early or r.error:
                n = 0  # nothing reached the encoder (rejected at frame 0): handled by the verdict below
            else:
                raise
        v = r.verdict()
        if r.frames_in == 0 and v.allowed:  # decoder produced nothing although probe passed: fail closed
            v = Verdict(False, ["input: no frames decoded"], v.scores, v.stage_results)
        if not v.allowed or r.stopped_early or r.error:
            tmp.unlink(missing_ok=True)
            log.info("post-guard blocked %s: %s", video, "; ".join(v.reasons))
            return None, v
        os.replace(tmp, dst)
        log.info(
            "post-guard passed %s -> %s (%d frames%s)", video, dst, n, ", copied: no face" if copied else ""
        )
        return dst, v

    def _can_copy(self, info: Any, r: PostGuardRun) -> bool:
        """A byte copy is only equivalent to re-encoding for silent, unrotated H.264 yuv420p mp4 input."""
        return (
            self.cfg.copy_when_unchanged
            and info.codec == "h264"
            and "mp4" in info.container
            and info.pix_fmt == "yuv420p"
            and not info.rotation
            and not info.has_audio  # re-encoding drops audio (voices are personal data too): keep that
        )


# ---- CLI (the lead mounts it: app.add_typer(postguard_app, name="postguard")) ----

postguard_app = typer.Typer(help="Video post-guard: blur faces, reject unsafe videos.", no_args_is_help=True)


@postguard_app.callback()
def _group() -> None:
    """Video post-guard: blur faces, reject unsafe videos."""  # a callback keeps `video` a subcommand


@postguard_app.command("video")
def cli_video(
    video: Annotated[Path, typer.Argument(help="a video file (e.g. a generated clip)")],
    out: Annotated[Path | None, typer.Option(help="guarded mp4 to write; default <stem>.guarded.mp4")] = None,
    config: Annotated[Path | None, typer.Option(help="guardrails YAML (its post: section)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print {output, verdict} as JSON")] = False,
) -> None:
    """Anonymise faces and check for unsafe content. Exit code 0: allowed; 1: blocked; 2: unreadable input."""
    from ..video import VideoError

    cfg = PostGuardConfig.from_yaml(config) if config else PostGuardConfig()
    try:
        path, v = PostGuard(cfg).apply(video, out)
    except VideoError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    res: dict[str, Any] = {"output": str(path) if path else None, "verdict": v.to_dict()}
    if as_json:
        typer.echo(json.dumps(res, indent=2))
    else:
        typer.echo(f"{'ALLOWED' if v.allowed else 'BLOCKED'}: {path or '-'}")
        for reason in v.reasons:
            typer.echo(f"  {reason}")
    if not v.allowed:
        raise typer.Exit(1)
