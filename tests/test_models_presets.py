"""Model presets (configs/models), the `wfm models list` command, and the text encoders."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from wfm_platform.models import presets
from wfm_platform.models.presets import PresetError

ALL = presets.preset_names()
PUBLISHED = [n for n in ALL if (yaml.safe_load((presets.PRESET_DIR / f"{n}.yaml").read_text()) or {}).get("published_params")]


def test_required_presets_exist():
    for name in ("diffusion-tiny", "diffusion-small", "diffusion-7b", "diffusion-14b"):
        assert name in ALL
    assert {"diffusion-7b", "diffusion-14b"} <= set(PUBLISHED)


@pytest.mark.parametrize("name", PUBLISHED)
def test_named_sizes_within_10_percent_of_published(name):
    n, published, ok = presets.check_published(name)
    assert ok, f"{name}: {n:,} parameters vs published {published:,} ({(n / published - 1) * 100:+.1f}%)"


def test_wrong_dims_fail_the_size_check(tmp_path):
    # the 7B preset with 8 blocks too few or a narrower width must be caught by the 10% check
    raw = yaml.safe_load((presets.PRESET_DIR / "diffusion-7b.yaml").read_text())
    for change in ({"depth": 20}, {"dim": 3584, "heads": 28}):
        bad = {**raw, "model": {**raw["model"], **change}}
        p = tmp_path / f"bad-{next(iter(change))}.yaml"
        p.write_text(yaml.safe_dump(bad))
        n, published, ok = presets.check_published(p)
        assert not ok, (change, n, published)


def test_diffusion_preset_sizes_and_contract():
    tiny, small = presets.count_params("diffusion-tiny"), presets.count_params("diffusion-small")
    assert tiny < 5_000_000  # trains on CPU in minutes
    assert 50_000_000 <= small <= 150_000_000
    family, cfg = presets.load_preset("diffusion-tiny")
    assert family == "diffusion" and cfg.tokenizer_preset == "tiny" and cfg.text_dim == 384
    assert cfg.latent_channels == 16 and cfg.tokenizer.startswith("cv")
    with torch.device("meta"):
        big = presets.build_model("diffusion-14b")
    assert isinstance(big.blocks, torch.nn.ModuleList) and len(big.blocks) == 36 and big.config.dim == 5120
    assert big.preset == "diffusion-14b" and big.family == "diffusion"
    assert hasattr(big, "enable_activation_checkpointing")
    m = presets.build_model("diffusion-tiny", depth=2, cfg_dropout=0.2)
    assert len(m.blocks) == 2 and m.config.cfg_dropout == 0.2
    assert presets.family_module("diffusion").Config is type(cfg)


def test_list_presets_rows():
    rows = presets.list_presets()
    names = [r["name"] for r in rows]
    assert sorted(names) == ALL
    for r in rows:
        assert set(r) == {"name", "family", "params", "published_params"} and r["params"] > 0
        assert r["family"] in presets.FAMILIES


def test_bad_presets_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(PresetError, match="unknown model preset 'diffusion-3b'.*diffusion-tiny"):
        presets.load_preset("diffusion-3b")
    with pytest.raises(PresetError, match="does not exist"):
        presets.load_preset(tmp_path / "missing.yaml")
    p = tmp_path / "typo.yaml"
    p.write_text(yaml.safe_dump({"name": "typo", "family": "diffusion", "model": {"dimm": 64}}))
    with pytest.raises(PresetError, match="dimm"):
        presets.load_preset(p)
    p.write_text(yaml.safe_dump({"name": "typo", "family": "video", "model": {}}))
    with pytest.raises(PresetError, match="family"):
        presets.load_preset(p)
    with pytest.raises(PresetError, match="unknown model family"):
        presets.family_module("gan")
    # a deployment's own preset folder: the name must match the file
    monkeypatch.setenv("WFM_MODELS_DIR", str(tmp_path))
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"name": "other", "family": "diffusion", "model": {}}))
    with pytest.raises(PresetError, match="must match the file name"):
        presets.load_preset("mine")


def test_cli_models_list_json_and_table():
    from typer.testing import CliRunner

    from wfm_platform.models.cli import models_app

    r = CliRunner().invoke(models_app, ["list", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert all(set(row) == {"name", "family", "params"} for row in rows)
    by_name = {row["name"]: row for row in rows}
    assert by_name["diffusion-7b"] == {"name": "diffusion-7b", "family": "diffusion",
                                       "params": presets.count_params("diffusion-7b")}
    t = CliRunner().invoke(models_app, ["list"])
    assert t.exit_code == 0 and "diffusion-14b" in t.stdout and "published" in t.stdout


def test_cli_models_list_broken_preset_exits_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from wfm_platform.models.cli import models_app

    monkeypatch.setenv("WFM_MODELS_DIR", str(tmp_path))
    (tmp_path / "x.yaml").write_text("name: x\nfamily: diffusion\nmodel: {dim: 100, heads: 3}\n")
    r = CliRunner().invoke(models_app, ["list", "--json"])
    assert r.exit_code == 2 and "not divisible by heads" in r.output


# ---------------------------------------------------------------------------------------------------------
# text encoders
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    from wfm_platform.models.text import load_text_encoder

    return load_text_encoder("minilm")


def test_minilm_per_token_embeddings(minilm):
    prompts = ["a red car drives down a busy city street at night", "a zoo"]
    emb, mask = minilm.encode(prompts)
    assert minilm.dim == 384 and emb.dtype == torch.float32 and mask.dtype == torch.bool
    assert emb.shape[0] == 2 and emb.shape[2] == 384 and mask.shape == emb.shape[:2]
    n0, n1 = mask.sum(1).tolist()
    assert n0 == emb.shape[1] and 3 <= n1 < n0  # [CLS] a zoo [SEP]
    assert (emb[1, n1:] == 0).all() and emb[1, :n1].abs().sum() > 0
    alone, _ = minilm.encode(["a zoo"])  # padding does not change a prompt's embedding
    assert torch.allclose(alone[0], emb[1, :n1], atol=1e-4)
    long, lm = minilm.encode([" ".join(["street"] * 300)])
    assert long.shape[1] == 77 and lm.all()


def test_minilm_embeddings_carry_meaning(minilm):
    def vec(p):
        e, m = minilm.encode([p])
        v = e[0, m[0]].mean(0)
        return v / v.norm()

    car, road, elephant = vec("a car driving on a city street"), vec("a vehicle on an urban road"), vec(
        "an elephant eating hay at the zoo")
    assert float(car @ road) > float(car @ elephant) + 0.1


def test_text_encoder_errors(tmp_path):
    from wfm_platform.models.text import TextEncoderError, load_text_encoder

    with pytest.raises(TextEncoderError, match="t5:/path"):
        load_text_encoder("t5")
    with pytest.raises(TextEncoderError, match="no T5 model at"):
        load_text_encoder(f"t5:{tmp_path}")
    with pytest.raises(TextEncoderError, match="unknown text encoder"):
        load_text_encoder("clip")


def test_minilm_rejects_a_bare_string(minilm):
    from wfm_platform.models.text import TextEncoderError

    with pytest.raises(TextEncoderError, match="list of prompts"):
        minilm.encode("a zoo")


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    """A random 2-layer T5 encoder and a word-level fast tokenizer, saved like a user's local T5 folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    d = tmp_path_factory.mktemp("t5")
    words = ["<pad>", "</s>", "<unk>", "a", "car", "on", "the", "street", "zoo", "elephant"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(d)
    torch.manual_seed(0)
    T5EncoderModel(T5Config(vocab_size=len(words), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                            num_heads=4)).save_pretrained(d)
    return d


def test_t5_adapter(tiny_t5):
    from transformers import T5EncoderModel

    from wfm_platform.models.text import load_text_encoder

    enc = load_text_encoder(f"t5:{tiny_t5}")
    assert enc.dim == 32 and enc.spec == f"t5:{tiny_t5}"
    emb, mask = enc.encode(["a car on the street", "the zoo"])
    assert emb.shape == (2, 6, 32) and mask.sum(1).tolist() == [6, 3]  # words + </s>
    assert (emb[1, 3:] == 0).all()
    # the same numbers as running the saved encoder by hand
    ref = T5EncoderModel.from_pretrained(tiny_t5).eval()
    with torch.no_grad():
        out = ref(input_ids=torch.tensor([[3, 4, 5, 6, 7, 1]])).last_hidden_state
    assert torch.allclose(emb[0], out[0], atol=1e-5)
    # and a diffusion model built for that width accepts it
    from wfm_platform.models.diffusion import Config, build_model

    m = build_model(Config(dim=32, depth=1, heads=2, text_dim=enc.dim, adaln_lora_dim=None))
    assert m.generate(emb, mask, shape=(1, 2, 2), steps=1).shape == (2, 16, 1, 2, 2)
