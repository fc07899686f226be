"""Text generation from a GPT, on token ids (the tokenizer stays outside): greedy, sampling, beam search.

How a batch of prompts of different lengths decodes together: the prompts are right-padded and
prefilled in one causal forward (a real token never sees the pads that follow it), then each
row of the KV cache is rewound to its own prompt length, so every row decodes at its own
positions and greedy output for a prompt does not depend on the rest of the batch. Rows of one
length (a single prompt, beam search's beams, prompts of equal length) decode without an attention
mask, so SDPA may use its flash kernel on a GPU; rows of different lengths need the mask that hides
each row's slots past its own length.

Past block_size: the context is cropped to its last block_size tokens. A cache cannot be rolled
(every cached key was computed with the tokens that the crop drops in its context, and with its
old position), so once any row would overflow, the cache is dropped and every later step
recomputes the cropped contexts - exactly what use_cache=False does at every step.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from .sampling import STRATEGIES, SamplingConfig

__all__ = ["STRATEGIES", "SamplingConfig", "beam_search", "generate", "process_logits", "stream"]


def process_logits(logits: torch.Tensor, history: list[list[int]], cfg: SamplingConfig) -> torch.Tensor:
    """Next-token logits (B, V) after, in order: repetition penalty, no-repeat-ngram, temperature,
    top-k, top-p, min-p. Removed tokens get -inf. history[b] is every token row b has seen so far.

    Returns a new float tensor; the likeliest surviving token always survives the truncations.
    """
    logits = logits.detach().float().clone()
    B, V = logits.shape
    if cfg.repetition_penalty != 1.0:
        p = cfg.repetition_penalty
        for b, seen in enumerate(history):
            if seen:
                ids = torch.tensor(sorted(set(seen)), device=logits.device)
                row = logits[b, ids]
                logits[b, ids] = torch.where(row > 0, row / p, row * p)
    if cfg.no_repeat_ngram > 0:
        for b, seen in enumerate(history):
            banned = _banned_by_ngrams(seen, cfg.no_repeat_ngram)
            if banned:
                logits[b, list(banned)] = float("-inf")
    if cfg.temperature > 0:
        logits = logits / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < V:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # mass of the strictly likelier tokens
        sorted_logits = sorted_logits.masked_fill(mass_before >= cfg.top_p, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    if cfg.min_p is not None and cfg.min_p > 0:
        probs = logits.softmax(dim=-1)
        floor = cfg.min_p * probs.max(dim=-1, keepdim=True).values  # (B, 1)
        logits = logits.masked_fill(probs < floor, float("-inf"))
    return logits


def _banned_by_ngrams(seen: list[int], n: int) -> set[int]:
    """Tokens that would complete an n-gram already in `seen`."""
    if len(seen) < n - 1 or not seen:
        return set()
    prefix = tuple(seen[len(seen) - (n - 1):])  # the n-1 tokens the next one would follow
    return {seen[i + n - 1] for i in range(len(seen) - n + 1) if tuple(seen[i:i + n - 1]) == prefix}


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_prompts(prompts: list[list[int]]) -> None:
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (start with a BOS/EOS id for unconditional text)")


def _last_logits(model, contexts: list[list[int]], cache=None) -> torch.Tensor:
    """Logits (B, V) after the last token of each context; contexts are right-padded into one batch."""
    device = model.transformer.wte.weight.device
    lens = torch.tensor([len(c) for c in contexts], device=device)
    width = max(len(c) for c in contexts)
    idx = torch.tensor([c + [0] * (width - len(c)) for c in contexts], device=device)  # (B, T)
    logits, _ = model(idx, cache=cache)  # (B, T, V)
    return logits[torch.arange(len(contexts), device=device), lens - 1]


@torch.no_grad()
def _decode(model, prompts: list[list[int]], cfg: SamplingConfig, use_cache: bool) -> Iterator[list[int]]:
    """Yield one new token per row per step, max_new_tokens times; the caller decides when a row is done."""
    block = model.config.block_size
    device = model.transformer.wte.weight.device
    seqs = [list(p) for p in prompts]  # everything seen, for the penalties and for recomputation
    rng = None if cfg.seed is None else torch.Generator(device=device).manual_seed(cfg.seed)
    greedy = cfg.strategy == "greedy" or cfg.temperature == 0
    contexts = [s[-block:] for s in seqs]
    cache = None
    if use_cache:
        cache = model.new_cache(len(seqs), min(block, max(map(len, contexts)) + cfg.max_new_tokens))
        logits = _last_logits(model, contexts, cache)
        cache.lengths = [len(c) for c in contexts]  # rewind the pads of the shorter prompts
    else:
        logits = _last_logits(model, contexts)
    for step in range(cfg.max_new_tokens):
        if step > 0:
            if cache is not None and max(cache.lengths) + 1 > cache.max_len:
                cache = None  # a row reached block_size: from here on, recompute cropped contexts
            if cache is not None:
                logits = model(torch.tensor([[s[-1]] for s in seqs], device=device), cache=cache)[0][:, -1]
            else:
                logits = _last_logits(model, [s[-block:] for s in seqs])
        logits = process_logits(logits, seqs, cfg)  # (B, V)
        if greedy:
            nxt = logits.argmax(dim=-1)
        else:
            nxt = torch.multinomial(logits.softmax(dim=-1), 1, generator=rng)[:, 0]
        tokens = nxt.tolist()
        for s, t in zip(seqs, tokens):
            s.append(t)
        yield tokens


@torch.no_grad()
def generate(model, prompts: list[list[int]], cfg: SamplingConfig, *, use_cache: bool = True,
             stop: Callable[[list[int]], bool] | None = None) -> list[list[int]]:
    """New tokens for each prompt. A row ends at eos (left out), after max_new_tokens, or once
    stop(its new tokens) is True (the token that triggered it is kept). Same seed, same output."""
    _check_prompts(prompts)
    with _eval_mode(model):
        if cfg.strategy == "beam":
            outs = [beam_search(model, p, cfg) for p in prompts]
            return [_cut_at_stop(o, stop) for o in outs]
        outs: list[list[int]] = [[] for _ in prompts]
        done = [cfg.max_new_tokens == 0] * len(prompts)
        if all(done):
            return outs
        steps = _decode(model, prompts, cfg, use_cache)
        for tokens in steps:
            for b, t in enumerate(tokens):
                if done[b]:
                    continue  # finished rows ride along; their tokens are thrown away
                if t == cfg.eos_id:
                    done[b] = True
                    continue
                outs[b].append(t)
                done[b] = stop is not None and stop(outs[b])
            if all(done):
                break
        steps.close()
        return outs


def stream(model, prompt: list[int], cfg: SamplingConfig, *,
           stop: Callable[[list[int]], bool] | None = None) -> Iterator[int]:
    """Yield new token ids one at a time (KV cache), ending as generate() would.

    Beam search cannot commit to a token early: with strategy "beam" the tokens come after the search.
    The model stays in eval mode until the iterator is exhausted or closed.
    """
    _check_prompts([prompt])
    if cfg.strategy == "beam":
        yield from generate(model, [prompt], cfg, stop=stop)[0]
        return
    with _eval_mode(model):
        out: list[int] = []
        steps = _decode(model, [prompt], cfg, use_cache=True)
        try:
            for (t,) in steps:
                if t == cfg.eos_id:
                    return
                out.append(t)
                yield t
                if stop is not None and stop(out):
                    return
        finally:
            steps.close()


def _cut_at_stop(tokens: list[int], stop) -> list[int]:
    if stop is not None:
        for i in range(1, len(tokens) + 1):
            if stop(tokens[:i]):
                return tokens[:i]
    return tokens


@torch.no_grad()
def beam_search(model, prompt: list[int], cfg: SamplingConfig) -> list[int]:
    """The new tokens of the best of cfg.num_beams hypotheses, scored by mean log-prob per token.

    Each step keeps the num_beams best (beam, token) extensions by total log-prob. An extension
    ending in eos is a finished hypothesis and takes its slot out of the search, so with
    num_beams=1 this is greedy decoding. Repetition penalty and no-repeat-ngram apply; temperature
    and truncation do not. The eos token counts in the length that normalises the score.
    """
    _check_prompts([prompt])
    scoring = dataclasses.replace(cfg, temperature=0.0, top_k=None, top_p=None, min_p=None)
    block = model.config.block_size
    device = model.transformer.wte.weight.device
    with _eval_mode(model):
        beams: list[list[int]] = [[]]  # new tokens of the live hypotheses
        scores = torch.zeros(1, device=device)  # their total log-probs
        finished: list[tuple[float, list[int]]] = []
        context = prompt[-block:]
        cache = model.new_cache(1, min(block, len(context) + cfg.max_new_tokens))
        logits = _last_logits(model, [context], cache)
        for step in range(cfg.max_new_tokens):
            if step > 0:
                seqs = [prompt + b for b in beams]
                if cache is not None and max(cache.lengths) + 1 > cache.max_len:
                    cache = None  # past block_size: recompute, as in _decode
                if cache is not None:
                    logits = model(torch.tensor([[b[-1]] for b in beams], device=device), cache=cache)[0][:, -1]
                else:
                    logits = _last_logits(model, [s[-block:] for s in seqs])
            logp = F.log_softmax(process_logits(logits, [prompt + b for b in beams], scoring), dim=-1)
            V = logp.size(-1)
            total = (scores[:, None] + logp).view(-1)  # (beams * V,)
            top = torch.topk(total, min(cfg.num_beams, total.numel()))
            survivors, new_beams, new_scores = [], [], []
            for score, flat in zip(top.values.tolist(), top.indices.tolist()):
                if score == float("-inf"):
                    continue
                src, tok = divmod(flat, V)
                if tok == cfg.eos_id:
                    finished.append((score / (len(beams[src]) + 1), beams[src]))
                else:
                    survivors.append(src)
                    new_beams.append(beams[src] + [tok])
                    new_scores.append(score)
            if not new_beams:
                beams = []
                break
            beams, scores = new_beams, torch.tensor(new_scores, device=device)
            if cache is not None:
                cache.reorder(survivors)
        finished += [(s / max(1, len(b)), b) for s, b in zip(scores.tolist(), beams)]
        return max(finished, key=lambda f: f[0])[1] if finished else []
