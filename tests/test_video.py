"""Probe and decode on real footage and on every kind of bad input the issue lists."""

import numpy as np
import pytest

import media_factory as mf
from wfm_platform.video import VideoError, iter_frames, probe, sample_frames, transcode_clip
from wfm_platform.video.encode import transcode_segments


def test_probe_real_footage(samples_dir):
    bikes = probe(samples_dir / "bikes.mp4", count_frames=True)
    assert (bikes.width, bikes.height, bikes.num_frames, bikes.codec) == (640, 272, 250, "h264")
    assert bikes.fps == pytest.approx(25.0)
    bbb = probe(samples_dir / "bigbuckbunny.mp4")
    assert bbb.has_audio and (bbb.width, bbb.height) == (1280, 720)


@pytest.fixture(scope="module")
def extra_dir():
    from wfm_platform import samples

    d = samples.fetch(debian=False, extra=True)
    missing = [n for n in samples.EXTRA_DEBIAN_FILES if not (d / n).exists()]
    if missing:
        pytest.skip(f"`wfm samples --extra` could not fetch {missing} (needs apt-get and the Debian mirror)")
    return d


@pytest.mark.parametrize("name, codec, size, frames", [
    ("diver.mov", "mjpeg", (640, 480), 351),
    ("city_night.mpg", "mpeg2video", (720, 405), 190),
    ("rocket_launch.webm", "vp8", (640, 360), 194),
    ("coin_pen.mov", "h264", (568, 320), 242),  # 243 packets, one of which decodes to no frame
    ("lego.mp4", "h264", (560, 320), 166),
    ("classroom_ball.mp4", "h264", (720, 576), 255),
    ("dog_1080p.mp4", "h264", (1920, 1080), 41),
])
def test_extra_real_footage_probes_and_decodes(extra_dir, name, codec, size, frames):
    """The `--extra` scenes: containers and codecs the base set lacks (MPEG-2 PS, Motion-JPEG and H.264 in
    QuickTime, VP8 in WebM, a 1080p phone video), read whole by the same decoder curation uses."""
    info = probe(extra_dir / name, count_frames=True)
    assert (info.codec, (info.width, info.height)) == (codec, size)
    decoded = [img for _, img in iter_frames(extra_dir / name)]
    assert len(decoded) == frames and info.num_frames in (frames, frames + 1)
    assert decoded[0].shape == (size[1], size[0], 3) and 10 < float(np.mean(decoded[len(decoded) // 2])) < 245


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d, s: mf.zero_byte(d / "empty.mp4"), "empty file"),
        (lambda d, s: mf.not_a_video(d / "notes.mp4"), "not a video"),
        (lambda d, s: mf.audio_only(d / "tone.mp4"), "no video stream"),
        (lambda d, s: mf.tiny(s / "bikes.mp4", d / "tiny.mp4"), "too small"),
        (lambda d, s: mf.truncated(s / "bikes.mp4", d / "cut.mp4", keep=0.5), "truncated or corrupt MP4"),
    ],
    ids=["zero-byte", "non-video", "audio-only", "16x16", "truncated-header"],
)
def test_probe_rejects_with_reason(tmp_path, samples_dir, make, reason):
    p = make(tmp_path, samples_dir)
    with pytest.raises(VideoError) as e:
        probe(p)
    assert e.value.reason and reason in e.value.reason


def test_truncated_tail_decodes_what_is_there(tmp_path, samples_dir):
    # Matroska keeps its headers up front, so a cut-off upload still has frames worth decoding
    mkv = mf.matroska_named_mp4(samples_dir / "bikes.mp4", tmp_path / "full.mkv", frames=250)
    p = mf.truncated(mkv, tmp_path / "half.mkv", keep=0.5)
    n = sum(1 for _ in iter_frames(p, fmt="gray"))
    assert 0 < n < 250  # stops at the damage instead of raising or hanging


def test_one_frame_video(tmp_path, samples_dir):
    info = probe(mf.one_frame(samples_dir / "bikes.mp4", tmp_path / "one.mp4"), count_frames=True)
    assert info.num_frames == 1


def test_rotated_video_is_decoded_upright(tmp_path, samples_dir):
    p = mf.rotated(samples_dir / "bikes.mp4", tmp_path / "phone.mp4")
    info = probe(p)
    assert info.rotation in (90, 270)
    assert (info.width, info.height) == (272, 640)  # display size, portrait
    _, img = next(iter_frames(p))
    assert img.shape[:2] == (640, 272)
    _, plain = next(iter_frames(samples_dir / "bikes.mp4"))
    # 90 degrees clockwise: the source's first row becomes the display's last column.
    assert np.abs(img[:, -1].astype(int) - plain[0, ::1].astype(int)).mean() < 12


def test_variable_frame_rate_detected(tmp_path, samples_dir):
    info = probe(mf.variable_frame_rate(samples_dir / "bikes.mp4", tmp_path / "vfr.mp4"), count_frames=True)
    assert info.variable_frame_rate and info.num_frames == 100


def test_matroska_named_mp4_probed_by_content(tmp_path, samples_dir):
    info = probe(mf.matroska_named_mp4(samples_dir / "bikes.mp4", tmp_path / "really_mkv.mp4"))
    assert "matroska" in info.container


def test_unicode_and_space_path(tmp_path, samples_dir):
    p = mf.copy_as(samples_dir / "bikes.mp4", tmp_path / "vidéo 動画 с пробелом.mp4")
    assert probe(p).num_frames == 250


def test_sample_frames_and_transcode(tmp_path, samples_dir):
    got = sample_frames(samples_dir / "bikes.mp4", 30, 75, 4, size=(160, 68))
    assert [i for i, _ in got] == [30, 45, 60, 75] and got[0][1].shape == (68, 160, 3)
    n = transcode_clip(samples_dir / "bikes.mp4", 30, 75, tmp_path / "c.mp4", fps=25)
    assert n == 46 and probe(tmp_path / "c.mp4", count_frames=True).num_frames == 46


def test_transcode_segments_one_pass_and_truncated_source(tmp_path, samples_dir):
    segs = [(0, 29, tmp_path / "a.mp4"), (30, 75, tmp_path / "b.mp4"), (240, 300, tmp_path / "past_end.mp4")]
    written = transcode_segments(samples_dir / "bikes.mp4", segs, fps=25)
    assert written[str(tmp_path / "a.mp4")] == 30 and written[str(tmp_path / "b.mp4")] == 46
    # the segment the source could not finish is discarded, never left half-written
    assert written[str(tmp_path / "past_end.mp4")] == 0 and not (tmp_path / "past_end.mp4").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
