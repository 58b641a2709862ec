"""GPU checks of the tokenizer (skipped without CUDA; run on a lent H100/H200 with
`python -m pytest -q -m gpu tests/test_tokenizer_gpu.py`)."""

import pytest
import torch

from wfm_platform.tokenizer import build_tokenizer, decode_tiled, encode_tiled

pytestmark = pytest.mark.gpu


def _video(frames: int, h: int, w: int, device) -> torch.Tensor:
    t = torch.linspace(-1, 1, frames, device=device)[None, None, :, None, None]
    y = torch.linspace(-1, 1, h, device=device)[None, None, None, :, None]
    x = torch.linspace(-1, 1, w, device=device)[None, None, None, None, :]
    full = (1, 1, frames, h, w)
    chans = [torch.sin(3 * x + t).expand(full), torch.cos(2 * y - t).expand(full), (x * y).expand(full)]
    return torch.cat(chans, 1).contiguous()


@pytest.mark.parametrize("name", ["cv8x8x8", "dv8x8x8"])
def test_1080p_bf16_tiled_on_one_gpu(name):
    """The default (Cosmos-sized) architecture tokenizes 1080p on one GPU with bounded memory."""
    dev = torch.device("cuda")
    tok = build_tokenizer(name).to(dev).eval()
    x = _video(17, 1080, 1920, dev)
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        z = encode_tiled(tok, x)
        y = decode_tiled(tok, z, num_frames=17, size=(1080, 1920))
    assert y.shape == x.shape and torch.isfinite(y.float()).all()
    if name.startswith("dv"):
        assert z.shape == (1, 3, 135, 240) and int(z.min()) >= 0 and int(z.max()) < 64000
    else:
        assert z.shape == (1, 16, 3, 135, 240) and torch.isfinite(z.float()).all()
    assert torch.cuda.max_memory_allocated() < 24 * 2**30  # tiles keep it far below a GPU's memory


def test_cuda_matches_cpu_fp32():
    torch.manual_seed(0)
    tok = build_tokenizer("cv4x8x8", preset="tiny").eval()
    x = _video(9, 64, 96, "cpu")
    with torch.no_grad():
        z_cpu = tok.encode(x)
        z_gpu = tok.to("cuda").encode(x.cuda()).cpu()
    assert torch.allclose(z_cpu, z_gpu, atol=1e-3, rtol=1e-3)


def test_train_step_bf16_and_nccl_single_rank(tmp_path):
    """One NCCL process group (world size 1) wrapping the model in DDP; loss goes down in bf16."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("nccl", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        tok = build_tokenizer("cv4x8x8", preset="tiny").cuda()
        model = DDP(tok, device_ids=[0])
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        x = _video(9, 64, 64, "cuda")
        losses = []
        for _ in range(30):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(x)
                loss = (out.reconstruction.float() - x).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        assert sum(losses[-5:]) < sum(losses[:5])
    finally:
        dist.destroy_process_group()
