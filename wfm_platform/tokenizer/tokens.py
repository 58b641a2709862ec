"""Token files: what `wfm tokenize encode` and the video_tokens asset write (.npz or .pt)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def save_tokens(path: Path, tokens: torch.Tensor, meta: dict) -> None:
    """Write latents (CV, float16) or indices (DV, int32) + the metadata needed to decode, atomically."""
    import numpy as np
    import torch

    from ..storage.atomic import atomic_path

    key = "indices" if meta["kind"] == "dv" else "latent"
    # CV latents as float16 halves the file; they are decoded in float32 again
    arr = tokens.cpu().to(torch.int32 if key == "indices" else torch.float16)
    with atomic_path(path) as tmp:
        if path.suffix == ".pt":
            torch.save({key: arr, "meta": meta}, tmp)
        else:
            with open(tmp, "wb") as f:  # np.savez appends .npz to bare names; a file object keeps tmp's name
                np.savez(f, **{key: arr.numpy(), "meta": np.array(json.dumps(meta))})


def load_tokens(path: Path) -> tuple[torch.Tensor, dict]:
    """(latent or indices, metadata) from a token file written by `wfm tokenize encode`."""
    import numpy as np
    import torch
    if not path.exists():
        raise FileNotFoundError(f"token file {path} does not exist")
    try:
        if path.suffix == ".pt":
            d = torch.load(path, map_location="cpu", weights_only=True)
            meta = d["meta"]
            arr = d.get("indices", d.get("latent"))
        else:
            with np.load(path, allow_pickle=False) as d:
                meta = json.loads(str(d["meta"]))
                arr = torch.from_numpy(d["indices"] if "indices" in d else d["latent"])
    except (KeyError, ValueError, OSError, RuntimeError) as e:
        raise ValueError(f"{path} is not a token file written by `wfm tokenize encode` ({e})") from e
    if arr is None:
        raise ValueError(f"{path} holds neither 'latent' nor 'indices'")
    tokens = arr.long() if meta["kind"] == "dv" else arr.float()
    return tokens, meta
