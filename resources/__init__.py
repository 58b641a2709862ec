"""Dagster resources: thin configurable wrappers that build library objects.

Each deployment picks values through environment variables (dg.EnvVar) or the launchpad; the
defaults run everything on this machine under ./data.
"""

from __future__ import annotations

import os

import dagster as dg

from resources.catalog import CatalogResource
from resources.storage import EncryptionKeyResource, StorageResource, data_dir
from wfm_platform.curation.config import PipelineConfig

__all__ = ["CatalogResource", "EncryptionKeyResource", "StorageResource", "data_dir"]


class PipelineConfigResource(dg.ConfigurableResource):
    """configs/pipeline.yaml (or another file) with WFM_<SECTION>__<KEY> overrides."""

    path: str = ""

    def load(self) -> PipelineConfig:
        return PipelineConfig.load(self.path or os.environ.get("WFM_PIPELINE_CONFIG") or None)


class CaptionerResource(dg.ConfigurableResource):
    """signals: offline factual captions from measured signals (default, no model).
    openai: a VLM behind an OpenAI-compatible endpoint, e.g. vLLM serving Qwen2.5-VL."""

    kind: str = "signals"
    base_url: str = ""
    model: str = ""
    api_key: str = ""
    n_frames: int = 8

    def captioner(self):
        from wfm_platform.curation.captions import make_captioner

        kind = os.environ.get("WFM_CAPTIONER", self.kind)
        if kind == "openai":
            return make_captioner(
                "openai",
                base_url=self.base_url or os.environ["WFM_VLM_BASE_URL"],
                model=self.model or os.environ["WFM_VLM_MODEL"],
                api_key=self.api_key or os.environ.get("WFM_VLM_API_KEY"),
                n_frames=self.n_frames,
            )
        return make_captioner(kind)


class EmbedderResource(dg.ConfigurableResource):
    """visual-signature: offline near-duplicate signature (default). torchscript: your own encoder."""

    kind: str = "visual-signature"
    model_path: str = ""

    def embedder(self):
        from wfm_platform.curation.embeddings import make_embedder

        kind = os.environ.get("WFM_EMBEDDER", self.kind)
        if kind == "torchscript":
            return make_embedder(kind, path=self.model_path or os.environ["WFM_EMBEDDER_PATH"])
        return make_embedder(kind)


def default_resources() -> dict:
    return {
        "storage": StorageResource(),
        "catalog": CatalogResource(),
        "pipeline_config": PipelineConfigResource(),
        "captioner": CaptionerResource(),
        "embedder": EmbedderResource(),
    }
