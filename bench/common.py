"""What the benchmark scripts share: the device line of a report and writing the report.

    from bench.common import device_name, emit_json      # after putting the repo root on sys.path
"""

from __future__ import annotations

import json
import platform
from pathlib import Path


def device_name(device: str) -> str:
    """"NVIDIA H100 ..." for a CUDA device, else "CPU <processor> xN threads" (torch imported lazily)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def emit_json(report: dict, out: str | None) -> None:
    """Print the report (indented JSON) on stdout and, with --out, write the same text to that file."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
