"""Benchmark: seconds and peak memory to generate 57 frames at 720p (requirement: <= 600 s on one GPU),
with and without offloading, plus autoregressive tokens/s with and without Medusa. JSON out; every row
names its device.

Each row runs in its own subprocess (a clean peak): one warm-up request at a tiny size loads every
component, then the measured request. `seconds` covers the whole request (pre-guard, text encoder,
generate, tiled decode, post-guard, mp4), `timings` splits it per stage. Peak memory: CUDA
max_memory_allocated on GPU; on CPU the process peak RSS (VmHWM reset per request; on a CPU the offload
flags cannot lower it: there is nowhere to offload to). Weights are the presets' untrained ones: speed and
memory do not depend on the values.

Autoregressive decoding is one forward per token: 57 frames at 720p are 8x90x160 = 115,200 tokens, hours
on a CPU. AR rows are therefore measured at --ar-size/--ar-frames and their tokens/s extrapolated to the
full grid; the JSON says so ("extrapolated": true). With a KV cache the per-token cost grows with the
context, so the extrapolation is a lower bound on the real time.

    python bench/generation.py [--device cpu|cuda] [--presets diffusion-tiny,diffusion-small,ar-tiny]
                               [--frames 57 --width 1280 --height 720] [--core] [--out bench.json]

--core: measure model.generate + tiled decode only (no text encoder, guards or mp4), for a bare GPU box
without sentence-transformers / PyAV / NudeNet; the text embedding is random, of the model's text_dim.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import device_name, emit_json

PROMPT = "A tram crossing a busy city street at dusk while cyclists wait at the light"


def _full(preset: str, device: str, frames: int, width: int, height: int, offload: bool, medusa: bool | None,
          steps: int | None, out_dir: Path) -> dict:
    from wfm_platform.models.generate import Generator, make_request

    g = Generator()
    off = {"text_encoder": offload, "tokenizer": offload, "model": offload}
    warm = make_request("text2world", model=preset, prompt=PROMPT, out=out_dir / "warm.mp4", frames=9, width=64,
                        height=32, steps=1, device=device, offload=off, medusa=medusa)
    g.run(warm)
    req = make_request("text2world", model=preset, prompt=PROMPT, out=out_dir / f"{preset}.mp4", frames=frames,
                       width=width, height=height, steps=steps, device=device, offload=off, medusa=medusa)
    r = g.run(req)
    return {"seconds": r.seconds, "peak_memory_mb": r.peak_memory_mb, "memory_method": r.memory_method,
            "timings": r.timings, "latent_shape": r.latent_shape, "sampling": r.sampling,
            "model_stats": r.model_stats, "family": r.family, "untrained": r.untrained, "pipeline": "full"}


def _core(preset: str, device: str, frames: int, width: int, height: int, offload: bool, medusa: bool | None,
          steps: int | None) -> dict:
    import torch

    from wfm_platform.models.checkpoint import load_world_model
    from wfm_platform.models.generate import MemoryMeter, _load_tokenizer
    from wfm_platform.tokenizer.tiling import decode_tiled

    dev = torch.device(device)
    model, meta = load_world_model(preset, device="cpu")
    tok = _load_tokenizer(meta["tokenizer"])
    family = meta["family"]
    shape = tok.latent_shape(frames, height, width)
    sampling = {"steps": steps} if family == "diffusion" and steps else {}
    if family != "diffusion" and medusa is not None:
        sampling["medusa"] = medusa
    emb = torch.randn(1, 8, model.config.text_dim)
    mask = torch.ones(1, 8, dtype=torch.bool)

    def once(shp, smp):
        t = {}
        t0 = time.perf_counter()
        model.to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            z = model.generate(emb.to(dev), mask.to(dev), shape=shp, seed=0, **smp)
        if offload:
            model.to("cpu")
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t["generate"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        tok.to(dev)
        v = decode_tiled(tok, z.to(dev) if tok.kind == "dv" else z.to(dev).float(), num_frames=1 + (shp[0] - 1) * 8)
        if offload:
            tok.to("cpu")
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t["decode"] = round(time.perf_counter() - t0, 3)
        return v, t

    if not offload:
        tok.to(dev)
        model.to(dev)
    once((2, 4, 8), {**sampling, **({"steps": 1} if family == "diffusion" else {})})  # warm-up
    meter = MemoryMeter(dev)
    meter.start()
    t0 = time.perf_counter()
    _, timings = once(shape, sampling)
    return {"seconds": round(time.perf_counter() - t0, 3), "peak_memory_mb": round(meter.peak_mb(), 1),
            "memory_method": meter.method, "timings": timings, "latent_shape": list(shape), "sampling": sampling,
            "model_stats": {k: v for k, v in (getattr(model, "last_generation_stats", None) or {}).items()
                            if isinstance(v, (int, float, str, bool))},
            "family": family, "untrained": True,
            "pipeline": "core (model.generate + tiled decode; random text embedding, no guards, no mp4)"}


def one(spec: dict) -> dict:
    import tempfile

    import torch

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if spec["core"]:
            row = _core(spec["preset"], spec["device"], spec["frames"], spec["width"], spec["height"],
                        spec["offload"], spec["medusa"], spec["steps"])
        else:
            row = _full(spec["preset"], spec["device"], spec["frames"], spec["width"], spec["height"],
                        spec["offload"], spec["medusa"], spec["steps"], Path(tmp))
    row.update(preset=spec["preset"], device=device_name(spec["device"]), frames=spec["frames"],
               resolution=f"{spec['width']}x{spec['height']}", offload=spec["offload"],
               dtype="bf16 autocast" if spec["device"].startswith("cuda") else "fp32", torch=torch.__version__)
    if row["family"] == "autoregressive":
        t, h, w = row["latent_shape"]
        gen_s = row["timings"]["generate"]
        st = row.get("model_stats") or {}
        n = int(st.get("tokens") or t * h * w)  # tokens actually sampled (excludes a prompt)
        row["medusa"] = bool(spec["medusa"])
        row["tokens"] = n
        row["tokens_per_s"] = round(n / gen_s, 2) if gen_s > 0 else None
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--presets", default="diffusion-tiny,diffusion-small,ar-tiny")
    ap.add_argument("--frames", type=int, default=57)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--steps", type=int, default=None, help="diffusion steps (default: the preset's)")
    ap.add_argument("--ar-frames", type=int, default=9, help="AR rows: measured at this size, then extrapolated")
    ap.add_argument("--ar-width", type=int, default=128)
    ap.add_argument("--ar-height", type=int, default=64)
    ap.add_argument("--no-offload-rows", action="store_true", help="skip the offload=True rows")
    ap.add_argument("--core", action="store_true", help="model + decode only (bare GPU box)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per row before it is given up")
    ap.add_argument("--out", default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device visible")

    rows, specs = [], []
    for preset in [p for p in args.presets.split(",") if p]:
        ar = preset.startswith("ar-")
        size = (args.ar_frames, args.ar_width, args.ar_height) if ar else (args.frames, args.width, args.height)
        base = {"preset": preset, "device": args.device, "frames": size[0], "width": size[1], "height": size[2],
                "steps": args.steps, "core": args.core, "medusa": None}
        for offload in ([False] if args.no_offload_rows else [False, True]):
            specs.append({**base, "offload": offload})
        if ar:
            specs.append({**base, "offload": False, "medusa": True})
    for spec in specs:
        t0 = time.perf_counter()
        try:
            p = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True,
                               timeout=args.timeout, cwd=ROOT, check=False)
        except subprocess.TimeoutExpired:
            rows.append({**spec, "error": f"timed out after {args.timeout} s"})
            print(f"{spec['preset']} offload={spec['offload']}: timed out", file=sys.stderr)
            continue
        if p.returncode != 0:
            rows.append({**spec, "error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"rc {p.returncode}"})
            print(p.stderr[-2000:], file=sys.stderr)
            continue
        row = json.loads(p.stdout.strip().splitlines()[-1])
        if row["family"] == "autoregressive" and row.get("tokens_per_s"):
            full = (1 + -(-(args.frames - 1) // 8)) * -(-args.height // 8) * -(-args.width // 8)
            row["extrapolated"] = True
            row["full_size_tokens"] = full
            row["full_size_seconds_lower_bound"] = round(full / row["tokens_per_s"], 1)
        rows.append(row)
        print(f"{row['preset']:16s} offload={row['offload']!s:5s} {row['resolution']} x{row['frames']}: "
              f"{row['seconds']:.1f} s, peak {row['peak_memory_mb']:.0f} MB ({time.perf_counter() - t0:.0f} s wall)",
              file=sys.stderr)
    out = {
        "benchmark": "generation",
        "requirement": "57 frames at 720p in <= 600 s on one GPU",
        "device": device_name(args.device),
        "target": {"frames": args.frames, "width": args.width, "height": args.height},
        "notes": [
            "untrained preset weights: speed and memory only, the videos are noise",
            "AR rows: measured at the --ar-* size and extrapolated to the target grid (lower bound)",
            "CPU peak = process peak RSS (VmHWM reset per request); CUDA peak = max_memory_allocated",
        ],
        "rows": rows,
    }
    emit_json(out, args.out)


if __name__ == "__main__":
    main()
