"""Inference: Text2World and Video2World behind the guardrails.

One request goes through fixed stages, each timed:

    pre-guard (prompt) -> text encoder -> [video2world: read + encode the conditioning frames]
    -> world model .generate (latents / tokens) -> tokenizer decode (tiled) -> post-guard -> H.264 mp4

The prompt is checked FIRST (nothing is loaded for a refused prompt) and the output is written only
when the post-guard allows it (faces blurred, unsafe video rejected, nothing written). Turning the
guards off is explicit (`guards.enabled: false` / --no-guards), logged as a WARNING and recorded in
the result.

Offloading: with `offload.text_encoder/tokenizer/model` a component lives on the CPU and is moved to
the device only for its stage; without it every component stays resident on the device. Peak memory
is measured per request: CUDA `max_memory_allocated` on GPU; on CPU the process peak RSS (VmHWM,
reset at the start of the request through /proc/self/clear_refs) - see `MemoryMeter`.

    req = make_request("text2world", model="diffusion-tiny", prompt="a tram crossing a city street",
                       out="out.mp4", frames=17, width=256, height=128)
    result = generate_video(req)            # PromptRefused / OutputRejected / GenerationError
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, Field, model_validator

from ..config_io import REPO_ROOT, repo_path

log = logging.getLogger(__name__)

DEFAULT_CONFIG = REPO_ROOT / "configs" / "inference.yaml"
Progress = Callable[[str, int, int], None]  # (stage, done, total)


# ----------------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------------
class GenerationError(ValueError):
    """Bad input or a component that cannot be loaded; the message says what to do."""


class PromptRefused(GenerationError):
    """The pre-guard blocked the prompt; `verdict.reasons` says why. Nothing was generated."""

    def __init__(self, verdict):
        self.verdict = verdict
        super().__init__("prompt refused by the pre-guard: " + "; ".join(verdict.reasons or ["(no reason given)"]))


class OutputRejected(GenerationError):
    """The post-guard rejected the generated video; it was NOT written."""

    def __init__(self, verdict, result: GenerationResult | None = None):
        self.verdict = verdict
        self.result = result
        super().__init__("output rejected by the post-guard (not written): "
                         + "; ".join(verdict.reasons or ["(no reason given)"]))


# ----------------------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------------------
class VideoDefaults(BaseModel):
    frames: int = Field(57, ge=1)
    width: int = Field(1280, ge=8)
    height: int = Field(720, ge=8)
    fps: float = Field(24, gt=0)
    cond_frames: int = Field(9, ge=1)
    crf: int = Field(18, ge=0, le=51)


class DiffusionDefaults(BaseModel):
    steps: int | None = Field(None, ge=1)  # None: the model's own default
    guidance: float | None = Field(None, ge=0)


class ARDefaults(BaseModel):
    temperature: float | None = Field(None, ge=0)  # 0 = greedy
    top_p: float | None = Field(None, gt=0, le=1)
    medusa: bool | None = None


class OffloadConfig(BaseModel):
    text_encoder: bool = False
    tokenizer: bool = False
    model: bool = False


class GuardsConfig(BaseModel):
    enabled: bool = True
    config: str = "configs/guardrails.yaml"
    violation_log: str | None = None

    def config_path(self) -> Path:
        return repo_path(self.config)


class InferenceConfig(BaseModel):
    """configs/inference.yaml."""

    model_config = {"extra": "forbid"}

    video: VideoDefaults = Field(default_factory=VideoDefaults)
    diffusion: DiffusionDefaults = Field(default_factory=DiffusionDefaults)
    autoregressive: ARDefaults = Field(default_factory=ARDefaults)
    text_encoder: str | None = None
    offload: OffloadConfig = Field(default_factory=OffloadConfig)
    guards: GuardsConfig = Field(default_factory=GuardsConfig)
    device: str = "auto"
    bf16: bool = True


def load_inference_config(path: str | os.PathLike | None = None) -> InferenceConfig:
    p = Path(path) if path else DEFAULT_CONFIG
    if not p.exists():
        raise GenerationError(f"inference config {p} not found; pass an existing YAML (see configs/inference.yaml)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise GenerationError(f"{p}: not valid YAML ({e})") from e
    return InferenceConfig.model_validate(data)


class GenerationRequest(BaseModel):
    """Everything one generation needs. Sampling knobs left None take the family default from the config."""

    model_config = {"extra": "forbid"}

    mode: Literal["text2world", "video2world"]
    model: str = Field(..., description="a checkpoint folder, or a preset name (untrained weights)")
    prompt: str
    out: str = Field(..., description="the mp4 to write")
    video: str | None = Field(None, description="video2world: the conditioning video")
    cond_frames: int = Field(9, ge=1, description="video2world: frames taken from the start of `video`")
    seed: int = 0
    frames: int = Field(57, ge=1)
    width: int = Field(1280, ge=8)
    height: int = Field(720, ge=8)
    fps: float = Field(24, gt=0)
    crf: int = Field(18, ge=0, le=51)
    # diffusion
    steps: int | None = Field(None, ge=1)
    guidance: float | None = Field(None, ge=0)
    # autoregressive
    top_p: float | None = Field(None, gt=0, le=1)
    temperature: float | None = Field(None, ge=0)  # 0 = greedy
    medusa: bool | None = None
    offload: OffloadConfig = Field(default_factory=OffloadConfig)
    guards: GuardsConfig = Field(default_factory=GuardsConfig)
    text_encoder: str | None = Field(None, description="override: 'minilm' | 't5:/path'")
    tokenizer: str | None = Field(None, description="override: a tokenizer checkpoint (ours or encoder/decoder.jit)")
    device: str = "auto"
    bf16: bool = True

    @model_validator(mode="after")
    def _check(self) -> GenerationRequest:
        if not self.prompt or not self.prompt.strip():
            raise ValueError("prompt is empty")
        if self.mode == "video2world" and not self.video:
            raise ValueError("video2world needs a conditioning video (--video IN)")
        if not self.out.lower().endswith(".mp4"):
            raise ValueError(f"out must be an .mp4 path, got {self.out!r}")
        return self


def make_request(mode: str, *, model: str, prompt: str, out: str | os.PathLike,
                 config: InferenceConfig | str | os.PathLike | None = None, **overrides: Any) -> GenerationRequest:
    """A request with the defaults of configs/inference.yaml; keyword overrides that are None are ignored."""
    cfg = config if isinstance(config, InferenceConfig) else load_inference_config(config)
    v = cfg.video
    fields: dict[str, Any] = {
        "frames": v.frames, "width": v.width, "height": v.height, "fps": v.fps, "cond_frames": v.cond_frames,
        "crf": v.crf, "offload": cfg.offload.model_copy(), "guards": cfg.guards.model_copy(),
        "text_encoder": cfg.text_encoder, "device": cfg.device, "bf16": cfg.bf16,
        "steps": cfg.diffusion.steps, "guidance": cfg.diffusion.guidance,
        "top_p": cfg.autoregressive.top_p, "temperature": cfg.autoregressive.temperature,
        "medusa": cfg.autoregressive.medusa,
    }
    for k, val in overrides.items():
        if val is None:
            continue
        if k in ("offload", "guards") and isinstance(val, dict):
            val = fields[k].model_copy(update=val)
        fields[k] = val
    return GenerationRequest(mode=mode, model=model, prompt=prompt, out=str(out), **fields)


# ----------------------------------------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------------------------------------
class GenerationResult(BaseModel):
    out: str | None
    allowed: bool
    reasons: list[str] = []
    faces_blurred: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = {}
    peak_memory_mb: float = 0.0
    memory_method: str = ""
    device: str = ""
    mode: str = ""
    model: str = ""
    family: str = ""
    untrained: bool = False
    tokenizer: dict = {}
    text_encoder: str = ""
    guards_enabled: bool = True
    offload: dict = {}
    frames: int = 0
    width: int = 0
    height: int = 0
    fps: float = 0.0
    seed: int = 0
    latent_shape: list[int] = []
    cond_latent_frames: int = 0
    sampling: dict = {}
    model_stats: dict = {}
    pre_verdict: dict | None = None
    post_verdict: dict | None = None


# ----------------------------------------------------------------------------------------------------------
# memory
# ----------------------------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemoryMeter:
    """Peak memory of one request.

    cuda: torch.cuda.max_memory_allocated (tensors only), reset at start.
    cpu: peak resident set size of the whole process (VmHWM). Linux lets a process reset its own
    high-water mark (`echo 5 > /proc/self/clear_refs`); where that is not possible the value is the
    process-lifetime peak and `method` says so.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.method = ""

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda max_memory_allocated"
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "cpu peak RSS (VmHWM, reset per request)"
        except OSError:
            self.method = "cpu peak RSS (VmHWM, process lifetime: clear_refs not writable)"

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return _status_kb("VmHWM") / 1024


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(spec)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise GenerationError(f"device {spec!r} asked for but CUDA is not available; use --device cpu")
    return d


def device_name(d: torch.device) -> str:
    if d.type == "cuda":
        return torch.cuda.get_device_name(d)
    import platform

    return f"cpu {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def _move(obj: Any, device: torch.device) -> Any:
    """Move a component (nn.Module, or a wrapper exposing .to / .model) to a device; returns it."""
    if obj is None:
        return obj
    if isinstance(obj, torch.nn.Module):
        return obj.to(device)
    to = getattr(obj, "to", None)
    if callable(to):
        r = to(device)
        return obj if r is None else r
    inner = getattr(obj, "model", None)
    if isinstance(inner, torch.nn.Module):
        inner.to(device)
    return obj


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def read_conditioning(path: str | os.PathLike, n: int, width: int, height: int) -> np.ndarray:
    """The first n frames of a video, scaled to cover (width, height) and centre-cropped: [n, H, W, 3] uint8."""
    import cv2

    from ..video import VideoError, iter_frames, probe

    p = Path(path)
    if not p.is_file():
        raise GenerationError(f"conditioning video {p} not found")
    try:
        info = probe(p)
        frames = [f for _, f in iter_frames(p, end=n - 1, on_error="raise")]
    except VideoError as e:
        raise GenerationError(f"conditioning video {p} is not readable: {e}") from e
    if len(frames) < n:
        raise GenerationError(f"conditioning video {p} has {len(frames)} frame(s); video2world needs at least "
                              f"{n} (--cond-frames); give a longer video or fewer conditioning frames")
    h0, w0 = frames[0].shape[:2]
    scale = max(width / w0, height / h0)
    sw, sh = max(width, round(w0 * scale)), max(height, round(h0 * scale))
    x0, y0 = (sw - width) // 2, (sh - height) // 2
    out = []
    for f in frames:
        r = cv2.resize(f, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        out.append(r[y0:y0 + height, x0:x0 + width])
    log.debug("conditioning: %d frames of %s (%dx%d, %.3g fps) -> %dx%d", n, p, w0, h0, info.fps, width, height)
    return np.stack(out)


def _load_world_model(spec: str, device: torch.device):
    """(model, meta) through the checkpoint contract; clear errors for unknown names."""
    try:
        from .checkpoint import load_world_model
    except ImportError as e:  # pragma: no cover - the module is part of the package
        raise GenerationError(f"wfm_platform.models.checkpoint is not available ({e})") from e
    try:
        model, meta = load_world_model(spec, device=str(device))
    except FileNotFoundError as e:
        raise GenerationError(f"model {spec!r}: {e}. Give a checkpoint folder (with model.pt) or a preset "
                              "name (wfm models list)") from e
    except (KeyError, ValueError) as e:
        raise GenerationError(f"model {spec!r} is neither a checkpoint folder nor a known preset "
                              f"({e}); see `wfm models list`") from e
    return model, dict(meta or {})


def _is_untrained(meta: dict) -> bool:
    return bool(meta.get("untrained"))  # load_world_model sets it for a preset name (random weights)


def _tokenizer_spec(model, meta: dict, override: str | None) -> dict:
    info = dict(meta.get("tokenizer") or {})
    cfg = getattr(model, "config", None)
    info.setdefault("name", getattr(cfg, "tokenizer", None))
    info.setdefault("preset", getattr(cfg, "tokenizer_preset", "default"))
    info.setdefault("checkpoint", None)
    if override:
        info["checkpoint"] = override
    if not info.get("name") and not info.get("checkpoint"):
        raise GenerationError("the model names no tokenizer (config.tokenizer) and no --tokenizer was given")
    return info


def _load_tokenizer(info: dict):
    from ..tokenizer.train import CheckpointError, load_tokenizer

    try:
        return load_tokenizer(info.get("checkpoint"), name=info.get("name"), preset=info.get("preset") or "default")
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        raise GenerationError(f"cannot load the tokenizer {info}: {e}") from e


def _sampling(family: str, req: GenerationRequest) -> dict:
    if family == "diffusion":
        knobs = {"steps": req.steps, "guidance": req.guidance}
    else:
        knobs = {"temperature": req.temperature, "top_p": req.top_p, "medusa": req.medusa}
    return {k: v for k, v in knobs.items() if v is not None}


_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str, n: int = 40) -> str:
    return _SLUG.sub("-", text.lower()).strip("-")[:n].strip("-") or "video"


# ----------------------------------------------------------------------------------------------------------
# guards
# ----------------------------------------------------------------------------------------------------------
class Guards:
    """Pre- and post-guard built once from configs/guardrails.yaml (models load lazily, on first use)."""

    def __init__(self, cfg: GuardsConfig):
        self.cfg = cfg
        self._pre = None
        self._post = None
        self._log = None

    def violation_log(self):
        if self._log is None:
            from ..guardrails.preguard import PreGuardConfig
            from ..guardrails.violations import ViolationLog

            pcfg = PreGuardConfig.from_yaml(self.cfg.config_path())
            uri = self.cfg.violation_log or pcfg.violation_log.uri
            if uri:
                self._log = ViolationLog(uri, prefix=pcfg.violation_log.prefix,
                                         store_raw_prompt=pcfg.violation_log.store_raw_prompt)
        return self._log

    def pre(self):
        if self._pre is None:
            from ..guardrails.preguard import PreGuard, PreGuardConfig

            try:
                pcfg = PreGuardConfig.from_yaml(self.cfg.config_path())
            except FileNotFoundError as e:
                raise GenerationError(str(e)) from e
            # the pre-guard records its own blocks in the violation log we hand it
            self._pre = PreGuard(pcfg, violation_log=self.violation_log())
        return self._pre

    def post(self):
        if self._post is None:
            from ..guardrails.postguard import PostGuard, PostGuardConfig

            p = self.cfg.config_path()
            self._post = PostGuard(PostGuardConfig.from_yaml(p) if p.exists() else PostGuardConfig())
        return self._post


# ----------------------------------------------------------------------------------------------------------
# the pipeline
# ----------------------------------------------------------------------------------------------------------
class Generator:
    """Runs requests; keeps loaded components (guards, text encoder, model, tokenizer) between requests
    with the same model, so a prompt set does not reload them per prompt."""

    def __init__(self):
        self._guards: dict[str, Guards] = {}
        self._text: dict[str, Any] = {}
        self._models: dict[str, tuple[Any, dict]] = {}
        self._tokenizers: dict[str, Any] = {}

    # -- component caches (all loaded on the CPU; moved to the device per stage) -----------------------------
    def guards(self, cfg: GuardsConfig) -> Guards:
        key = cfg.model_dump_json()
        if key not in self._guards:
            self._guards[key] = Guards(cfg)
        return self._guards[key]

    def text_encoder(self, spec: str):
        if spec not in self._text:
            from .text import load_text_encoder

            try:
                self._text[spec] = load_text_encoder(spec)
            except (OSError, ValueError, RuntimeError) as e:  # TextEncoderError is a RuntimeError
                raise GenerationError(f"cannot load the text encoder {spec!r}: {e}") from e
        return self._text[spec]

    def model(self, spec: str):
        if spec not in self._models:
            model, meta = _load_world_model(spec, torch.device("cpu"))
            self._models[spec] = (model.eval(), meta)
        return self._models[spec]

    def tokenizer(self, info: dict):
        key = repr(sorted(info.items()))
        if key not in self._tokenizers:
            self._tokenizers[key] = _load_tokenizer(info)
        return self._tokenizers[key]

    # -- one request ----------------------------------------------------------------------------------------
    def run(self, req: GenerationRequest, *, progress: Progress | None = None) -> GenerationResult:
        from ..tokenizer.model import frames_to_tensor, tensor_to_frames
        from ..tokenizer.tiling import decode_tiled, encode_tiled
        from ..video import write_mp4

        def tick(stage: str, done: int = 1, total: int = 1) -> None:
            if progress is not None:
                progress(stage, done, total)

        device = resolve_device(req.device)
        meter = MemoryMeter(device)
        meter.start()
        t_all = time.perf_counter()
        timings: dict[str, float] = {}
        res = GenerationResult(out=None, allowed=False, mode=req.mode, model=req.model, seed=req.seed,
                               frames=req.frames, width=req.width, height=req.height, fps=req.fps,
                               device=device_name(device), guards_enabled=req.guards.enabled,
                               offload=req.offload.model_dump())

        def timed(name: str, t0: float) -> None:
            timings[name] = round(time.perf_counter() - t0, 4)

        # 1. pre-guard FIRST: nothing is loaded or generated for a refused prompt
        guards = self.guards(req.guards) if req.guards.enabled else None
        if guards is None:
            log.warning("GUARDS DISABLED for this generation (guards.enabled=false / --no-guards): the prompt "
                        "is not checked and the output is neither anonymised nor checked for unsafe content")
        else:
            t0 = time.perf_counter()
            verdict = guards.pre().check(req.prompt)
            timed("pre_guard", t0)
            res.pre_verdict = verdict.to_dict()
            tick("pre-guard")
            if not verdict.allowed:
                log.warning("prompt refused: %s", "; ".join(verdict.reasons))
                raise PromptRefused(verdict)

        # validate the rest of the input before anything heavy
        if req.mode == "video2world" and not Path(req.video).is_file():
            raise GenerationError(f"conditioning video {req.video} not found")
        model, meta = self.model(req.model)
        family = getattr(model, "family", meta.get("family", ""))
        res.family = family
        res.untrained = _is_untrained(meta)
        if res.untrained:
            log.warning("model %r has UNTRAINED (random) weights: the video is noise; train one with "
                        "`wfm train %s` and pass its checkpoint folder", req.model, family or "...")
        tok_info = _tokenizer_spec(model, meta, req.tokenizer)
        res.tokenizer = {k: (str(v) if v is not None else None) for k, v in tok_info.items()}
        text_spec = req.text_encoder or meta.get("text_encoder") or "minilm"
        res.text_encoder = text_spec

        # 2. text encoder (an offloaded component starts on the CPU even if an earlier request left it on
        # the device: the peak is then that of this request's settings)
        t0 = time.perf_counter()
        enc = self.text_encoder(text_spec)
        cpu = torch.device("cpu")
        if req.offload.model:
            model.to(cpu)
        if req.offload.tokenizer and tok_info:
            self.tokenizer(tok_info).to(cpu)
        enc = _move(enc, device)
        emb, mask = enc.encode([req.prompt])
        emb, mask = emb.to(device), mask.to(device)
        want = getattr(getattr(model, "config", None), "text_dim", emb.shape[-1])
        if emb.shape[-1] != want:
            raise GenerationError(f"text encoder {text_spec!r} gives {emb.shape[-1]}-d embeddings, the model was "
                                  f"built for text_dim={want}: use the encoder it was trained with")
        if req.offload.text_encoder:
            _move(enc, cpu)
            _free(device)
        timed("text_encoder", t0)
        tick("text encoder")

        # 3. tokenizer: the latent grid, and video2world's conditioning latents
        tok = self.tokenizer(tok_info)
        t_comp = tok.temporal_compression
        shape = tok.latent_shape(req.frames, req.height, req.width)
        res.latent_shape = list(shape)
        cond = None
        if req.mode == "video2world":
            t0 = time.perf_counter()
            n_cond = req.cond_frames
            if t_comp > 1 and (n_cond - 1) % t_comp:
                raise GenerationError(f"--cond-frames {n_cond}: with a {t_comp}x temporal tokenizer use 1 + "
                                      f"{t_comp}*k frames (1, {1 + t_comp}, {1 + 2 * t_comp}, ...)")
            if n_cond >= req.frames:
                raise GenerationError(f"--frames {req.frames} must exceed the {n_cond} conditioning frames")
            frames_in = read_conditioning(req.video, n_cond, req.width, req.height)
            tok.to(device)
            cond = encode_tiled(tok, frames_to_tensor(frames_in).to(device))
            if req.offload.tokenizer:
                tok.to("cpu")
                _free(device)
            res.cond_latent_frames = int(cond.shape[1] if cond.dim() == 4 else cond.shape[2])
            timed("encode_conditioning", t0)
            tick("encode conditioning")
        if not req.offload.tokenizer:
            tok.to(device)  # resident for the whole request

        # 4. the world model
        sampling = _sampling(family, req)
        res.sampling = sampling
        t0 = time.perf_counter()
        model.to(device)
        use_bf16 = req.bf16 and device.type == "cuda"
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            try:
                z = model.generate(emb, mask, shape=shape, cond=cond, seed=req.seed,
                                   progress=(lambda d, n: tick("generate", d, n)), **sampling)
            except (TypeError, ValueError) as e:
                raise GenerationError(f"the {family} model rejected the request (shape {shape}, "
                                      f"sampling {sampling}): {e}") from e
        stats = getattr(model, "last_generation_stats", None)  # AR: Medusa acceptance, tokens/s
        if isinstance(stats, dict):
            res.model_stats = {k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))}
        if req.offload.model:
            model.to("cpu")
            _free(device)
        timed("generate", t0)

        # 5. decode (tiled: bounded memory at any resolution)
        t0 = time.perf_counter()
        tok.to(device)
        z = z.to(device)
        video = decode_tiled(tok, z if tok.kind == "dv" else z.float(), num_frames=req.frames,
                             size=(req.height, req.width))
        frames_out = tensor_to_frames(video)[0]  # [T, H, W, 3] uint8
        del video
        if req.offload.tokenizer:
            tok.to("cpu")
            _free(device)
        timed("decode", t0)
        tick("decode")
        if frames_out.shape[0] != req.frames:
            raise GenerationError(f"decoded {frames_out.shape[0]} frames, asked for {req.frames} "
                                  f"(latent shape {tuple(z.shape)})")

        # 6. post-guard: faces blurred, unsafe -> rejected and NOT written
        if guards is not None:
            t0 = time.perf_counter()
            post = guards.post()
            guarded, verdict = post.apply_frames(list(frames_out), fps=req.fps)
            timed("post_guard", t0)
            res.post_verdict = verdict.to_dict()
            res.faces_blurred = int(verdict.scores.get("faces", 0))
            tick("post-guard")
            vlog = guards.violation_log()
            if vlog is not None and (not verdict.allowed or res.faces_blurred):
                vlog.record(req.out, verdict, source="post")
            if not verdict.allowed:
                res.reasons = list(verdict.reasons)
                res.seconds = round(time.perf_counter() - t_all, 3)
                res.peak_memory_mb, res.memory_method = round(meter.peak_mb(), 1), meter.method
                res.timings = timings
                log.warning("output rejected by the post-guard, not written: %s", "; ".join(verdict.reasons))
                raise OutputRejected(verdict, res)
            frames_out = guarded

        # 7. H.264, atomically
        t0 = time.perf_counter()
        out = Path(req.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_mp4(iter(frames_out), out, fps=req.fps, crf=req.crf)
        timed("write", t0)
        tick("write")
        res.out, res.allowed = str(out), True
        res.timings = timings
        res.seconds = round(time.perf_counter() - t_all, 3)
        res.peak_memory_mb, res.memory_method = round(meter.peak_mb(), 1), meter.method
        log.info("generated %s (%d frames %dx%d) in %.1fs, peak %.0f MB", out, req.frames, req.width, req.height,
                 res.seconds, res.peak_memory_mb)
        return res


def generate_video(req: GenerationRequest, *, progress: Progress | None = None,
                   generator: Generator | None = None) -> GenerationResult:
    """Run one request (see the module docstring). Raises PromptRefused, OutputRejected, GenerationError."""
    return (generator or Generator()).run(req, progress=progress)


# ----------------------------------------------------------------------------------------------------------
# prompt sets (configs/prompts/*.yaml)
# ----------------------------------------------------------------------------------------------------------
PROMPTS_DIR = REPO_ROOT / "configs" / "prompts"


class PromptSet(BaseModel):
    model_config = {"extra": "forbid"}

    name: str
    description: str = ""
    prompts: list[str] = Field(..., min_length=1)


def prompt_set_names(folder: str | os.PathLike | None = None) -> list[str]:
    return sorted(p.stem for p in Path(folder or PROMPTS_DIR).glob("*.yaml"))


def load_prompt_set(name: str, folder: str | os.PathLike | None = None) -> PromptSet:
    d = Path(folder or PROMPTS_DIR)
    p = d / f"{name}.yaml"
    if not p.exists():
        raise GenerationError(f"unknown prompt set {name!r}; known: {', '.join(prompt_set_names(d)) or 'none'} ({d})")
    ps = PromptSet.model_validate(yaml.safe_load(p.read_text()) or {})
    if ps.name != name:
        raise GenerationError(f"{p}: name {ps.name!r} does not match the file name")
    return ps


# ----------------------------------------------------------------------------------------------------------
# the synthetic-data loop: a prompt set -> a new upload batch for curation
# ----------------------------------------------------------------------------------------------------------
class PromptSetRun(BaseModel):
    batch: str
    uploads_uri: str
    written: list[dict] = []   # {"key", "sidecar", "prompt", "seed", "faces_blurred", "seconds"}
    refused: list[dict] = []   # {"prompt", "reasons"} (pre-guard)
    rejected: list[dict] = []  # {"prompt", "reasons"} (post-guard)
    results: list[dict] = []   # GenerationResult dumps of the written videos
    seconds: float = 0.0


def generate_prompt_set(ps: PromptSet, uploads, batch: str, *, model: str, max_prompts: int = 0,
                        seed: int = 0, config: InferenceConfig | str | os.PathLike | None = None,
                        generator: Generator | None = None, progress: Callable[[int, int], None] | None = None,
                        model_name: str | None = None, checkpoint: str | None = None,
                        **overrides: Any) -> PromptSetRun:
    """Generate one video per prompt into `{uploads}/{batch}/NNN-<slug>.mp4`, then write `_READY` LAST
    (the upload rule of curation/uploads.py), so the upload sensor curates them as a new batch.

    Each video gets a sidecar `NNN-<slug>.json` {"prompt", "model", "checkpoint", "seed", "generated": true}
    written before the video: curation captions the video with its prompt and marks it generated.
    model_name / checkpoint: what the sidecars record (default: the model's preset, and `model` itself
    when it is a checkpoint folder, "" for an untrained preset); pass the store URI of a checkpoint that
    was copied locally so the record points at the real one.

    Refused prompts and rejected outputs are skipped and reported. If nothing was written, no `_READY`
    is written either and GenerationError is raised (an empty batch must not reach curation).
    """
    import json
    import tempfile

    from ..curation.pipeline import READY_MARKER
    from ..curation.uploads import UploadSidecar, sidecar_key, valid_batch_name

    if not valid_batch_name(batch):
        raise GenerationError(f"batch name {batch!r}: use letters, digits, '.', '_' or '-' (max 128)")
    if uploads.exists(f"{batch}/{READY_MARKER}"):
        raise GenerationError(f"batch {batch} already exists and is marked ready under {uploads.uri()}")
    cfg = config if isinstance(config, InferenceConfig) else load_inference_config(config)
    gen = generator or Generator()
    prompts = ps.prompts[:max_prompts] if max_prompts > 0 else list(ps.prompts)
    run = PromptSetRun(batch=batch, uploads_uri=uploads.uri(batch))
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wfm-gen-") as tmp:
        for i, prompt in enumerate(prompts):
            name = f"{i:03d}-{slug(prompt)}.mp4"
            req = make_request("text2world", model=model, prompt=prompt, out=Path(tmp) / name, config=cfg,
                               seed=seed + i, **overrides)
            try:
                res = gen.run(req)
            except PromptRefused as e:
                run.refused.append({"prompt": prompt, "reasons": e.verdict.reasons})
                continue
            except OutputRejected as e:
                run.rejected.append({"prompt": prompt, "reasons": e.verdict.reasons})
                continue
            key = f"{batch}/{name}"
            _, meta = gen.model(model)  # cached: what was just loaded
            side = UploadSidecar(prompt=prompt, model=model_name or meta.get("preset") or model,
                                 checkpoint=checkpoint if checkpoint is not None
                                 else ("" if res.untrained else str(meta.get("source") or model)),
                                 seed=req.seed, generated=True)
            # the sidecar first: a video is never visible in the batch without its prompt
            uploads.write_bytes(sidecar_key(key), json.dumps(side.model_dump(), indent=1).encode())
            uploads.put_file(res.out, key)
            run.written.append({"key": key, "sidecar": sidecar_key(key), "prompt": prompt, "seed": req.seed,
                                "faces_blurred": res.faces_blurred, "seconds": res.seconds})
            run.results.append(res.model_dump(exclude={"pre_verdict"}))
            if progress is not None:
                progress(i + 1, len(prompts))
    if not run.written:
        raise GenerationError(f"prompt set {ps.name}: no video passed the guards ({len(run.refused)} refused, "
                              f"{len(run.rejected)} rejected); batch {batch} not marked ready")
    uploads.write_bytes(f"{batch}/{READY_MARKER}", b"")  # LAST: the batch is complete
    run.seconds = round(time.perf_counter() - t_all, 3)
    log.info("prompt set %s -> %s: %d written, %d refused, %d rejected", ps.name, run.uploads_uri,
             len(run.written), len(run.refused), len(run.rejected))
    return run
