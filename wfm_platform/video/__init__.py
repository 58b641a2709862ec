"""Video IO: probe, streaming decode, H.264 encode, thumbnails (PyAV + OpenCV)."""

from .decode import fit_size, iter_frames, sample_frames
from .encode import transcode_clip, write_mp4
from .probe import VideoError, VideoInfo, probe

__all__ = [
    "VideoError",
    "VideoInfo",
    "fit_size",
    "iter_frames",
    "probe",
    "sample_frames",
    "transcode_clip",
    "write_mp4",
]
