"""Small Markdown renderings for the Dagster UI and CLI summaries (no Dagster imports)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

_BAR = "█"


def histogram_md(values: Iterable[float], bins: int | Sequence[float] = 8, label: str = "value",
                 fmt: str = "{:.3g}") -> str:
    """A Markdown table with one row per bin and a text bar: readable in the UI, no plotting deps."""
    vals = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if vals.size == 0:
        return f"_no {label} values_"
    if isinstance(bins, int) and vals.min() == vals.max():
        return f"| {label} | count |\n|---|---|\n| {fmt.format(vals[0])} | {vals.size} |"
    counts, edges = np.histogram(vals, bins=bins)
    top = max(int(counts.max()), 1)
    rows = [f"| {label} | count | |", "|---|---:|---|"]
    for c, lo, hi in zip(counts, edges, edges[1:]):
        rows.append(f"| {fmt.format(lo)} – {fmt.format(hi)} | {int(c)} | {_BAR * max(0, round(20 * c / top))} |")
    return "\n".join(rows)


def counts_md(counts: Mapping[str, int], key: str = "reason", value: str = "count") -> str:
    if not counts:
        return "_none_"
    rows = [f"| {key} | {value} |", "|---|---:|"]
    for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        rows.append(f"| {_cell(k)} | {v} |")
    return "\n".join(rows)


def table_md(rows: Sequence[Mapping], columns: Sequence[str], limit: int = 50) -> str:
    if not rows:
        return "_none_"
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows[:limit]:
        out.append("| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |")
    if len(rows) > limit:
        out.append(f"\n_{len(rows) - limit} more rows not shown_")
    return "\n".join(out)


def image_md(data: bytes, mime: str = "image/jpeg", alt: str = "preview") -> str:
    return f"![{alt}](data:{mime};base64,{base64.b64encode(data).decode()})"


def _cell(v) -> str:
    if isinstance(v, float):
        v = f"{v:.4g}"
    s = str(v).replace("|", "\\|").replace("\n", " ")
    return s if len(s) <= 160 else s[:157] + "..."


def line_plot_png(values: Sequence[float], title: str = "", w: int = 480, h: int = 160) -> bytes:
    """A small line plot drawn with OpenCV (no plotting dependency), e.g. a loss curve."""
    import cv2

    from .video.thumbs import png_bytes

    img = np.full((h, w, 3), 255, np.uint8)
    y = np.asarray(values, float)
    if len(y) > 1:
        lo, hi = float(y.min()), float(y.max())
        xs = np.linspace(10, w - 10, len(y))
        ys = h - 10 - (y - lo) / max(hi - lo, 1e-9) * (h - 30)
        cv2.polylines(img, [np.stack([xs, ys], 1).astype(np.int32)], False, (30, 90, 200), 2)
        label = f"{title} {y[0]:.3f} -> {y[-1]:.3f} ({len(y)} points)".strip()
        cv2.putText(img, label, (12, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    return png_bytes(img)
