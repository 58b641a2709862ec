"""SemDeDup-style deduplication of clip embeddings, within a batch and against the whole catalog.

SemDeDup (Abbas et al. 2023, "SemDeDup: Data-efficient learning at web-scale through semantic
deduplication"): cluster the embeddings with k-means, then compare only within a cluster; two items with
cosine similarity >= 1 - eps are duplicates. Clustering keeps the pairwise work ~n^2 / k instead of n^2.

Which copy survives: the highest resolution (pixel count); ties go to the lowest clip id, so reruns make
the same choice. How "semantic" this is depends on the embedder: with the offline visual signature it
finds near-duplicates (re-encodes, resizes, crops), with a CLIP-like encoder also semantic duplicates.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

from ..storage.catalog import Catalog, sql_in, sql_str

log = logging.getLogger(__name__)


@dataclass
class DedupDecision:
    clip_id: str
    keep: bool
    duplicate_of: str | None  # the kept clip this one duplicates (None when kept)
    similarity: float | None  # cosine similarity to duplicate_of

    def to_dict(self) -> dict:
        return asdict(self)


def _check_inputs(ids: Sequence[str], vectors: np.ndarray, resolutions: Sequence[int]) -> np.ndarray:
    vecs = np.asarray(vectors, dtype=np.float32)
    if vecs.ndim != 2 or vecs.shape[0] != len(ids) or len(resolutions) != len(ids):
        raise ValueError(
            f"need one vector and one resolution per id: {len(ids)} ids, vectors {vecs.shape}, "
            f"{len(resolutions)} resolutions"
        )
    if len(set(ids)) != len(ids):
        raise ValueError("clip ids must be unique")
    if not np.isfinite(vecs).all():
        raise ValueError("vectors contain NaN or infinite values")
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    if len(ids) and (norms < 1e-6).any():
        raise ValueError("zero vectors cannot be compared by cosine")
    return vecs / norms  # tolerate vectors that are only nearly normalised


def _priority(ids: Sequence[str], resolutions: Sequence[int]) -> list[int]:
    """Indices best-first: highest resolution, then lowest id."""
    return sorted(range(len(ids)), key=lambda i: (-int(resolutions[i]), ids[i]))


def default_n_clusters(n: int) -> int:
    """~sqrt(n/2) clusters, at least 1 and at most n (a few dozen items per cluster at catalog scale)."""
    return max(1, min(n, round(math.sqrt(n / 2))))


def semdedup(
    ids: Sequence[str],
    vectors: np.ndarray,
    resolutions: Sequence[int],
    *,
    eps: float = 0.05,
    n_clusters: int | None = None,
    seed: int = 0,
) -> list[DedupDecision]:
    """Decisions for every id (in input order): k-means, then cosine >= 1 - eps within a cluster = duplicate.

    Within a cluster clips are visited best-first (resolution, then id); a clip is dropped when it is that
    similar to a clip already kept, and points at the most similar one. Comparing only against kept clips
    means a chain A~B~C where A and C differ keeps C: nothing kept duplicates it.
    """
    ids = [str(i) for i in ids]
    vecs = _check_inputs(ids, vectors, resolutions)
    n = len(ids)
    if n == 0:
        return []
    k = default_n_clusters(n) if n_clusters is None else max(1, min(int(n_clusters), n))
    # Fit on vectors in id order: input order must not change the result.
    order = sorted(range(n), key=lambda i: ids[i])
    if k > 1:
        with warnings.catch_warnings():
            # Fewer distinct points than clusters (exact copies) is fine here: those land together.
            warnings.simplefilter("ignore", ConvergenceWarning)
            km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(vecs[order])
        labels = np.empty(n, dtype=np.int64)
        labels[order] = km.labels_
    else:
        labels = np.zeros(n, dtype=np.int64)

    threshold = 1.0 - eps
    decisions: dict[int, DedupDecision] = {}
    best_first = _priority(ids, resolutions)
    for cluster in np.unique(labels):
        members = [i for i in best_first if labels[i] == cluster]
        sims = vecs[members] @ vecs[members].T
        kept: list[int] = []  # positions in `members`
        for pos, i in enumerate(members):
            if kept:
                best = kept[int(np.argmax(sims[pos, kept]))]
                if sims[pos, best] >= threshold:
                    decisions[i] = DedupDecision(ids[i], False, ids[members[best]], float(sims[pos, best]))
                    continue
            kept.append(pos)
            decisions[i] = DedupDecision(ids[i], True, None, None)
    out = [decisions[i] for i in range(n)]
    log.info(
        "semdedup: %d clips, %d clusters, eps %.3f -> %d duplicates", n, k, eps, n - sum(d.keep for d in out)
    )
    return out


def dedup_against_catalog(
    catalog: Catalog,
    ids: Sequence[str],
    vectors: np.ndarray,
    resolutions: Sequence[int],
    *,
    eps: float = 0.05,
    k: int = 10,
    n_clusters: int | None = None,
    seed: int = 0,
    embedder: str | None = None,
) -> list[DedupDecision]:
    """Dedup a batch within itself (semdedup) and against every clip the catalog already kept.

    Each clip kept in the batch is looked up among the catalog's kept clips (duplicate_of IS NULL, with
    a vector, not in this batch, and made by `embedder` when given) by LanceDB cosine search (k nearest):
    - a match with resolution >= the new clip's: the new clip is dropped, duplicate_of = that clip
      (highest resolution first, then most similar);
    - only lower-resolution matches: the new clip is kept and those old clips are marked superseded by it.
    The batch's own ids are excluded from the search, so rerunning a partition whose clips are already in
    the catalog never finds them as duplicates of themselves. The decisions are written to the catalog
    (duplicate_of of the batch's clips that are there); clips that pointed at a superseded or dropped clip
    are re-pointed to the clip that replaced it.
    """
    ids = [str(i) for i in ids]
    vecs = _check_inputs(ids, vectors, resolutions)
    decisions = semdedup(ids, vecs, resolutions, eps=eps, n_clusters=n_clusters, seed=seed)
    index = {c: i for i, c in enumerate(ids)}
    threshold = 1.0 - eps

    where = f"duplicate_of IS NULL AND NOT ({sql_in('clip_id', ids)})"
    if embedder is not None:
        where += f" AND embedder = {sql_str(embedder)}"
    superseded: dict[str, str] = {}  # old catalog clip -> new clip that replaces it
    catalog_vecs: dict[str, np.ndarray] = {}  # vectors of catalog clips that won, for honest similarities
    for d in decisions:
        if not d.keep:
            continue
        i = index[d.clip_id]
        res_new = int(resolutions[i])
        hits = [h for h in catalog.search(vecs[i], k=k, where=where) if h["similarity"] >= threshold]
        hits = [h for h in hits if h["clip_id"] not in superseded]
        if not hits:
            continue
        winners = [h for h in hits if _pixels(h) >= res_new]
        if winners:
            best = max(winners, key=lambda h: (_pixels(h), h["similarity"]))
            d.keep, d.duplicate_of, d.similarity = False, best["clip_id"], float(best["similarity"])
            catalog_vecs[best["clip_id"]] = np.asarray(best["vector"], np.float32)
        else:
            for h in hits:
                superseded[h["clip_id"]] = d.clip_id

    # Within-batch duplicates of a clip that the catalog then dropped point at the catalog's clip.
    final = {d.clip_id: d for d in decisions}
    for d in decisions:
        target = d.duplicate_of
        while target in final and not final[target].keep:
            target = final[target].duplicate_of
        if target != d.duplicate_of and target in catalog_vecs:
            d.duplicate_of = target
            d.similarity = float(vecs[index[d.clip_id]] @ catalog_vecs[target])

    _record(catalog, decisions, superseded)
    n_dup = sum(not d.keep for d in decisions)
    log.info(
        "dedup against catalog: %d clips, %d duplicates (%.1f%%), %d catalog clips superseded",
        len(decisions),
        n_dup,
        100 * duplicate_rate(decisions),
        len(superseded),
    )
    return decisions


def _pixels(row: dict) -> int:
    return int(row.get("width") or 0) * int(row.get("height") or 0)


def _record(catalog: Catalog, decisions: list[DedupDecision], superseded: dict[str, str]) -> None:
    """Write the batch decisions and supersessions to the catalog; re-point chains to the survivor."""
    mapping: dict[str, str | None] = {d.clip_id: d.duplicate_of for d in decisions}
    mapping.update(superseded)
    replaced = {old: new for old, new in mapping.items() if new is not None}
    if replaced:
        # Clips elsewhere in the catalog that pointed at a clip that is now itself a duplicate.
        for row in catalog.clips(where=sql_in("duplicate_of", replaced)):
            if row["clip_id"] not in mapping:
                mapping[row["clip_id"]] = replaced[row["duplicate_of"]]
    catalog.set_duplicates(mapping)


def duplicate_rate(decisions: Sequence[DedupDecision]) -> float:
    """Share of clips dropped as duplicates (0.0 for no clips)."""
    return sum(not d.keep for d in decisions) / len(decisions) if decisions else 0.0
