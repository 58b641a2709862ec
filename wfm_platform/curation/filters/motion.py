"""Motion scores from OpenCV DIS optical flow on small gray frames.

Units: every velocity is in frame diagonals per second (flow in pixels / diagonal of the analysed frame
/ seconds between the two frames), so thresholds hold at any resolution and frame rate.
"""

from __future__ import annotations

import cv2
import numpy as np

# A pixel moving less than this (diagonals/s) counts as still: ~0.3 px/frame on a 320x180 frame at 25 fps,
# below what DIS resolves reliably on compressed video.
STILL_SPEED = 0.02
# Two frames are "the same picture" when their mean absolute luma difference is below this (0-255 scale):
# H.264 re-encoding of a held still stays well under 1, any real motion or noise is above.
SAME_FRAME_MAD = 1.0


def _flow(dis: cv2.DISOpticalFlow, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return dis.calc(a, b, None)


def _global_motion(flow: np.ndarray) -> tuple[float, float, float]:
    """Global translation (median flow, robust to moving objects) and zoom rate (divergence).

    Zoom: least-squares scale s in flow - t ~= s * (p - center); s > 0 means the picture expands
    (zoom in / dolly forward), in "fraction of the distance to the center per frame interval".
    """
    h, w = flow.shape[:2]
    tx = float(np.median(flow[..., 0]))
    ty = float(np.median(flow[..., 1]))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs -= (w - 1) / 2
    ys -= (h - 1) / 2
    num = float(np.sum((flow[..., 0] - tx) * xs + (flow[..., 1] - ty) * ys))
    den = float(np.sum(xs * xs + ys * ys)) or 1.0
    return tx, ty, num / den


def motion_scores(sample) -> dict[str, float]:
    """Scores from the motion triples of a ClipSample (see sampling.py)."""
    triples = sample.triples
    if not triples:
        # A clip of one or two frames has no measurable motion: report it as still.
        return {
            "motion_mean": 0.0, "motion_p90": 0.0, "shakiness": 0.0, "camera_pan": 0.0,
            "camera_pan_x": 0.0, "camera_pan_y": 0.0, "camera_zoom": 0.0, "static_ratio": 1.0,
            "still_area_ratio": 1.0, "motion_pairs": 0,
        }
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    h, w = sample.gray[triples[0][0]].shape
    diag = float(np.hypot(w, h))
    dt = sample.gap / sample.fps  # seconds between the two frames of a pair
    to_speed = 1.0 / (diag * dt)

    means, p90s, pans, zooms, jitters, same = [], [], [], [], [], []
    still_masks = []
    for a, b, c in triples:
        fa, fb, fc = sample.gray[a], sample.gray[b], sample.gray[c]
        velocities = []
        for x, y in ((fa, fb), (fb, fc)):
            mad = float(cv2.absdiff(x, y).mean())
            if mad < SAME_FRAME_MAD:
                # Identical pictures: DIS would still return sub-pixel noise on flat areas, so force zero.
                flow = np.zeros((h, w, 2), np.float32)
                same.append(1.0)
            else:
                flow = _flow(dis, x, y)
                same.append(0.0)
            speed = np.hypot(flow[..., 0], flow[..., 1]) * to_speed
            means.append(float(speed.mean()))
            p90s.append(float(np.percentile(speed, 90)))
            still_masks.append(speed < STILL_SPEED)
            tx, ty, zoom = _global_motion(flow)
            velocities.append((tx * to_speed, ty * to_speed))
            pans.append((tx * to_speed, ty * to_speed))
            zooms.append(zoom / dt)
        # Shakiness: change of the global (camera) velocity between two consecutive short intervals.
        # A smooth pan keeps its velocity (change ~0); hand shake flips it every few frames. Taken at
        # gap ~0.1 s this is the high-frequency (> ~2 Hz) part of the camera path.
        (vx1, vy1), (vx2, vy2) = velocities
        jitters.append(float(np.hypot(vx2 - vx1, vy2 - vy1)))

    pan = np.mean(np.array(pans), axis=0)
    # Pixels still in every analysed pair: static UI of a screen recording, a locked-off background.
    still_area = float(np.logical_and.reduce(still_masks).mean())
    return {
        "motion_mean": float(np.mean(means)),
        "motion_p90": float(np.mean(p90s)),
        "shakiness": float(np.mean(jitters)),
        "camera_pan": float(np.hypot(pan[0], pan[1])),
        "camera_pan_x": float(pan[0]),  # + : picture content moves right (camera pans left)
        "camera_pan_y": float(pan[1]),  # + : content moves down (camera tilts up)
        "camera_zoom": float(np.mean(zooms)),  # + : zoom in / move forward, per second
        "static_ratio": float(np.mean(same)),  # share of pairs where the picture did not change
        "still_area_ratio": still_area,
        "motion_pairs": len(same),
    }
