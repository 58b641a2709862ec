"""Benchmark: autoregressive decoding tokens/s with and without Medusa heads.

1. Tokens: bikes.mp4 (real footage) -> 17-frame windows at 192x80 -> a 3x10x24 grid of codes in the
   64,000-code space of dv8x8x8. No trained DV tokenizer ships with the repo, and the random-weight one
   collapses bikes.mp4 onto 6 codes (measured), which would make the bench meaningless. So by default
   (--source naive) a naive block quantizer stands in: each causal 8x8x8 block (frame 0 alone, then
   8-frame groups, as the tokenizer does) -> mean R, G, B on 8 levels each, luma std, horizontal
   gradient and temporal change on 5 levels each = the FSQ levels [8,8,8,5,5,5]. --source tokenizer
   (with --tokenizer-checkpoint for a trained one) uses the real tokenizer. The statistics under
   "tokens" say how predictable the codes are. --save-tokens / --tokens reuse them (e.g. on a GPU box
   without PyAV).
2. Train the ar-tiny preset (with its Medusa heads, text dropped) on those windows for --steps steps, so
   the heads have signal (this memorises a small set of clips; that is the point here: the bench measures
   decoding, not generalisation).
3. Video2World decode from the first latent frame of a window: plain (KV cache, one token per forward)
   vs Medusa (k drafts verified per forward), batch 1, at temperature 0 and 1. Reports tokens/s,
   acceptance rate, tokens per forward, speedup, and whether greedy Medusa == greedy plain (exact).
Every result names its device. Prints one JSON object (and writes it with --out).
Training on a 2-core CPU takes seconds per step (the 64,000-way LM head and 3 Medusa heads dominate);
train on a GPU with --save-model and time CPU decoding with --load-model.
Reading the numbers: the model memorises a few clips. Greedy decoding stays on the memorised
continuation, so the heads' drafts are accepted; at temperature 1 an off-memory sample leads to contexts
the model never saw, where its 64,000-way distributions are flat and drafts are mostly rejected. The
acceptance rate (logged per setting) is what turns into speedup; it grows with real training data.

    python bench/medusa.py [--device cpu|cuda] [--steps 300] [--quick] [--out bench/medusa.json]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench.medusa")
sys.path.insert(0, str(ROOT))

from bench.common import device_name, emit_json
from wfm_platform.models.autoregressive import Config, build_model

SIZE = (192, 80)  # (w, h): bikes is 640x272; divisible by 8 -> a 24x10 token grid
WINDOW = 17       # frames: 1 + 8*2 -> 3 latent frames


def tokenize_bikes(checkpoint: str | None) -> torch.Tensor:
    from wfm_platform import samples
    from wfm_platform.tokenizer.model import frames_to_tensor
    from wfm_platform.tokenizer.train import load_tokenizer
    from wfm_platform.video import iter_frames

    tok = load_tokenizer(checkpoint, name="dv8x8x8", preset="tiny", seed=0)
    frames = np.stack([f for _, f in iter_frames(samples.fetch() / "bikes.mp4", size=SIZE)])
    windows = [frames[s:s + WINDOW] for s in range(0, len(frames) - WINDOW + 1, WINDOW)]
    with torch.no_grad():
        return torch.cat([tok.encode(frames_to_tensor(w)) for w in windows])  # [N, 3, 10, 24]


def naive_tokens() -> torch.Tensor:
    """Real footage -> codes in [0, 64000) with a parameter-free block quantizer (see the docstring)."""
    from wfm_platform import samples
    from wfm_platform.video import iter_frames

    frames = np.stack([f for _, f in iter_frames(samples.fetch() / "bikes.mp4", size=SIZE)]).astype(np.float32)
    windows = []
    for s in range(0, len(frames) - WINDOW + 1, WINDOW):
        clip = frames[s:s + WINDOW]
        groups = [clip[:1]] + [clip[1 + 8 * i:9 + 8 * i] for i in range((WINDOW - 1) // 8)]
        codes = []
        for g in groups:
            t, hh, ww, _ = g.shape
            blocks = g.reshape(t, hh // 8, 8, ww // 8, 8, 3)
            rgb = blocks.mean(axis=(0, 2, 4))  # [h, w, 3]
            luma = blocks.mean(-1)
            std = luma.std(axis=(0, 2, 4))
            grad = np.abs(np.diff(luma, axis=4)).mean(axis=(0, 2, 4))
            motion = np.abs(np.diff(luma, axis=0)).mean(axis=(0, 2, 4)) if t > 1 else np.zeros_like(std)
            q8 = np.clip((rgb / 256 * 8).astype(int), 0, 7)
            q5 = [np.clip(np.digitize(v, edges), 0, 4) for v, edges in
                  ((std, [6, 14, 28, 50]), (grad, [3, 8, 16, 30]), (motion, [2, 6, 14, 30]))]
            code = ((q8[..., 0] * 8 + q8[..., 1]) * 8 + q8[..., 2]) * 125 + q5[0] * 25 + q5[1] * 5 + q5[2]
            codes.append(code)
        windows.append(np.stack(codes))
    return torch.from_numpy(np.stack(windows)).long()  # [N, 3, 10, 24]


def token_stats(tokens: torch.Tensor) -> dict:
    return {"windows": int(tokens.shape[0]), "grid": list(tokens.shape[1:]),
            "unique_codes": int(tokens.unique().numel()),
            "same_as_previous_frame": round(float((tokens[:, 1:] == tokens[:, :-1]).float().mean()), 4),
            "same_as_left_neighbour": round(float((tokens[..., 1:] == tokens[..., :-1]).float().mean()), 4)}


def train(model, tokens: torch.Tensor, steps: int, batch: int, device: str, lr: float = 2e-3) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(0)
    model.train()
    t0 = time.perf_counter()
    logs = {}
    curve = []
    for step in range(steps):
        idx = torch.randint(0, tokens.shape[0], (batch,), generator=g)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            loss, logs = model.training_loss({"tokens": tokens[idx].to(device)})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            curve.append({"step": step, **{k: round(v, 4) for k, v in logs.items()}})
            log.info("step %d %s", step, logs)
    model.eval()
    return {"steps": steps, "batch": batch, "seconds": round(time.perf_counter() - t0, 1), "final": curve[-1],
            "curve": curve}


def timed_generate(model, cond, shape, device, **kw) -> tuple[torch.Tensor, float]:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(None, None, shape=shape, cond=cond, **kw)
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--preset", default="ar-tiny")
    ap.add_argument("--samples", type=int, default=2, help="decodes per setting (different windows)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--source", default="naive", choices=["naive", "tokenizer"])
    ap.add_argument("--tokenizer-checkpoint", default=None)
    ap.add_argument("--load-model", default=None, help="a state_dict saved by --save-model: skip training")
    ap.add_argument("--save-model", default=None)
    ap.add_argument("--tokens", default=None, help="load tokens saved with --save-tokens instead of encoding")
    ap.add_argument("--save-tokens", default=None)
    ap.add_argument("--quick", action="store_true", help="60 steps, 1 sample: checks the path, not the numbers")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.samples = 60, 1
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but torch sees no GPU")
    torch.manual_seed(0)

    if args.tokens:
        tokens = torch.load(args.tokens)
    elif args.source == "naive":
        tokens = naive_tokens()
    else:
        tokens = tokenize_bikes(args.tokenizer_checkpoint)
    if args.save_tokens:
        torch.save(tokens, args.save_tokens)
    spec = yaml.safe_load((ROOT / "configs" / "models" / f"{args.preset}.yaml").read_text())
    cfg = Config(**{**spec["model"], "cross_attn": False})  # unconditional: the bench has no captions
    if cfg.medusa_heads == 0:
        cfg = cfg.model_copy(update={"medusa_heads": 3})
    model = build_model(cfg).to(args.device)
    result = {"bench": "medusa", "device": device_name(args.device), "torch": torch.__version__,
              "preset": args.preset, "medusa_heads": cfg.medusa_heads,
              "tokens_from": ("naive block quantizer onto FSQ levels [8,8,8,5,5,5]" if args.source == "naive" else
                              "dv8x8x8/tiny " + ("(checkpoint)" if args.tokenizer_checkpoint else "(random weights)")),
              "source": f"bikes.mp4 {SIZE[0]}x{SIZE[1]}, {WINDOW}-frame windows", "tokens": token_stats(tokens)}
    if args.load_model:
        model.load_state_dict({k: v.float() for k, v in torch.load(args.load_model, map_location=args.device).items()})
        model.eval()
        result["train"] = {"loaded": args.load_model}
    else:
        result["train"] = train(model, tokens, args.steps, args.batch, args.device)
    if args.save_model:
        torch.save({k: v.half() for k, v in model.state_dict().items()}, args.save_model)  # half: smaller file

    t, h, w = tokens.shape[1:]
    rows: list[dict] = []
    plain_outs: list[torch.Tensor] = []
    for temperature in (0.0, 1.0):
        for mode in ("plain", "medusa"):
            secs, n_tok, outs, stats = 0.0, 0, [], []
            for i in range(args.samples):
                cond = tokens[i * 3 % tokens.shape[0]][None, :1].to(args.device)
                out, s = timed_generate(model, cond, (t, h, w), args.device, seed=i, temperature=temperature,
                                        medusa=mode == "medusa")
                secs += s
                n_tok += (t - 1) * h * w
                outs.append(out.cpu())
                stats.append(model.last_generation_stats)
            row = {"mode": mode, "temperature": temperature, "device": result["device"],
                   "tokens": n_tok, "seconds": round(secs, 3), "tokens_per_s": round(n_tok / secs, 1)}
            if mode == "medusa":
                drafted = sum(s["drafted"] for s in stats)
                row["acceptance_rate"] = round(sum(s["accepted"] for s in stats) / max(drafted, 1), 4)
                row["tokens_per_forward"] = round(n_tok / sum(s["forwards"] for s in stats), 3)
                row["speedup_vs_plain"] = round(row["tokens_per_s"] / rows[-1]["tokens_per_s"], 3)
                if temperature == 0:
                    row["identical_to_plain_greedy"] = all(torch.equal(a, b) for a, b in zip(outs, plain_outs))
            else:
                plain_outs = outs
            rows.append(row)
            log.info("%s", row)
    result["results"] = rows
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
