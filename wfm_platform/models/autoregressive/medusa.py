"""Decoding for the autoregressive world model: plain sampling with a KV cache, and Medusa speculative
decoding that keeps the output distribution of plain sampling.

Plain: prefill [BOS, prompt] once, then feed one token per step (KV cache).

Medusa (a single chain of k candidates per step, verified in one forward pass):
  state: the cache holds everything before the 'pending' token x (already sampled from the exact
  distribution), plus h, the hidden state that predicted x. Medusa head i on h proposes token x+1+i.
  1. draft d_1..d_k, d_i ~ q_i (head i, same temperature / top-p / top-k as plain sampling)
  2. feed [x, d_1..d_k] in one forward -> the model's exact distributions p_1..p_{k+1}
  3. for i = 1..k: accept d_i with probability min(1, p_i(d_i) / q_i(d_i)); on the first rejection
     sample the replacement from normalize(max(0, p_i - q_i)) and stop (speculative sampling, Leviathan
     et al. 2023 / Chen et al. 2023: each emitted token is distributed exactly as p_i)
  4. if all k were accepted, the next pending token is sampled from p_{k+1}
  5. roll the KV cache back to x and the accepted drafts; the new pending token is not fed yet.
q_i depends only on tokens fixed before the draft is drawn, so it is a valid proposal. At temperature 0
p and q are one-hot: a draft is accepted iff it equals the argmax, and the replacement is the argmax,
so the tokens equal plain greedy decoding exactly. Every step emits between 1 and k+1 tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


def filter_probs(logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0,
                 top_k: int = 0) -> torch.Tensor:
    """The sampling distribution over the last axis: temperature, then top-k, then nucleus (top-p).
    temperature 0 gives the one-hot argmax. The most likely token always survives top-p."""
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass of the tokens ranked above each one
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(probs: torch.Tensor, gen: torch.Generator, greedy: bool) -> torch.Tensor:
    """One token per row of probs [..., V] -> long [...]."""
    if greedy:
        return probs.argmax(-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=gen).reshape(probs.shape[:-1])


def speculative_accept(p: torch.Tensor, q: torch.Tensor, draft: int, gen: torch.Generator,
                       greedy: bool) -> tuple[bool, int | None]:
    """Accept `draft` (drawn from q) against the target p with probability min(1, p/q); on rejection
    return a replacement drawn from normalize(max(0, p - q)). p, q: [V] probabilities."""
    ratio = float(p[draft] / q[draft]) if q[draft] > 0 else 0.0
    if ratio >= 1.0:
        return True, None
    if ratio > 0.0 and float(torch.rand((), generator=gen, device=p.device)) < ratio:
        return True, None
    residual = (p - q).clamp_min(0)
    if float(residual.sum()) <= 0:  # p == q up to rounding: rejection had probability ~0
        residual = p
    return False, int(sample(residual / residual.sum(), gen, greedy))


def _prefill(model, prompt: torch.Tensor, hw, text, cache) -> torch.Tensor:
    bos = torch.full((prompt.shape[0], 1), model.config.bos_id, dtype=torch.long, device=prompt.device)
    hidden = model(torch.cat([bos, prompt], dim=1), hw=hw, start=0, text=text, cache=cache)
    return hidden[:, -1]


def decode_plain(model, prompt: torch.Tensor, total: int, hw: tuple[int, int], text, gen: torch.Generator, *,
                 temperature: float, top_p: float, top_k: int,
                 progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, dict]:
    """prompt [B, P] -> [B, total] (the prompt kept as given), one forward per new token."""
    b, n_prompt = prompt.shape
    n_new = total - n_prompt
    greedy = temperature == 0
    if n_new <= 0:
        return prompt[:, :total].clone(), {"tokens": 0, "forwards": 0, "tokens_per_forward": 0.0}
    cache = model.new_cache(b, total + 1)
    h = _prefill(model, prompt, hw, text, cache)
    out = [prompt]
    for i in range(n_new):
        x = sample(filter_probs(model.lm_head(h), temperature, top_p, top_k), gen, greedy)
        out.append(x[:, None])
        if progress is not None:
            progress(i + 1, n_new)
        if i < n_new - 1:
            h = model(x[:, None], hw=hw, start=cache.length, text=text, cache=cache)[:, -1]
    # one forward per position for the whole batch
    return torch.cat(out, dim=1), {"tokens": n_new * b, "forwards": n_new, "tokens_per_forward": 1.0}


def decode_medusa(model, prompt: torch.Tensor, total: int, hw: tuple[int, int], text, gen: torch.Generator, *,
                  temperature: float, top_p: float, top_k: int,
                  progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, dict]:
    """Speculative decoding with the Medusa heads (see the module docstring). Acceptance varies per
    sample, so a batch is decoded one sample at a time, each with its own KV cache."""
    b, n_prompt = prompt.shape
    n_new = max(total - n_prompt, 0)
    if n_new == 0:
        return prompt[:, :total].clone(), {"tokens": 0, "forwards": 0, "drafted": 0, "accepted": 0,
                                           "acceptance_rate": 0.0, "tokens_per_forward": 0.0}
    k = len(model.medusa)
    greedy = temperature == 0
    rows, forwards, drafted, accepted = [], 0, 0, 0
    done_all = 0

    def report(n: int) -> None:
        nonlocal done_all
        done_all += n
        if progress is not None:
            progress(done_all, n_new * b)

    for row in range(b):
        row_text = None if text is None else (text[0][row:row + 1], text[1][row:row + 1])
        cache = model.new_cache(1, total + k + 2)
        h = _prefill(model, prompt[row:row + 1], hw, row_text, cache)  # [1, D]
        forwards += 1
        out = prompt[row].tolist()
        pending = int(sample(filter_probs(model.lm_head(h)[0], temperature, top_p, top_k), gen, greedy))
        out.append(pending)
        report(1)
        while len(out) < total:
            kk = min(k, total - len(out) - 1)  # a step emits up to kk drafts + 1 new pending token
            base = cache.length
            if greedy:  # fast path, same rule: accept while the draft equals the model's argmax
                drafts = model.medusa_logits(h)[:kk, 0].argmax(-1).tolist() if kk else []
                slots = torch.tensor([[pending] + drafts], dtype=torch.long, device=prompt.device)
                hidden = model(slots, hw=hw, start=base, text=row_text, cache=cache)[0]
                best = model.lm_head(hidden).argmax(-1).tolist()  # best[j]: the greedy token after slot j
                m = 0
                while m < kk and drafts[m] == best[m]:
                    m += 1
                nxt = best[m]
            else:
                q = filter_probs(model.medusa_logits(h)[:kk, 0], temperature, top_p, top_k)  # [kk, V]
                drafts = sample(q, gen, greedy).tolist() if kk else []
                slots = torch.tensor([[pending] + drafts], dtype=torch.long, device=prompt.device)
                hidden = model(slots, hw=hw, start=base, text=row_text, cache=cache)[0]  # [1+kk, D]
                p = filter_probs(model.lm_head(hidden), temperature, top_p, top_k)  # p[j]: token after slot j
                m, nxt = 0, None
                for i in range(kk):
                    ok, repl = speculative_accept(p[i], q[i], drafts[i], gen, greedy)
                    if not ok:
                        nxt = repl
                        break
                    m += 1
                if nxt is None:  # every draft accepted: the bonus token comes from the last position
                    nxt = int(sample(p[m], gen, greedy))
            forwards += 1
            drafted += kk
            accepted += m
            cache.rollback(base + 1 + m)  # keep the pending token and the accepted drafts
            h = hidden[m:m + 1]
            out.extend(drafts[:m])
            out.append(nxt)
            pending = nxt
            report(m + 1)
        rows.append(torch.tensor(out[:total], dtype=torch.long, device=prompt.device))
    stats = {"tokens": n_new * b, "forwards": forwards, "drafted": drafted, "accepted": accepted,
             "acceptance_rate": accepted / drafted if drafted else 0.0,
             "tokens_per_forward": n_new * b / forwards}
    return torch.stack(rows), stats
