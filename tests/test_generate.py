"""Generation: logits processing by hand, greedy/sampling/beam, KV cache vs recompute, batching, stopping."""

import math

import pytest
import torch
import torch.nn.functional as F

from model import GPT, GPTConfig, SamplingConfig, generate, stream
from model.generate import beam_search, process_logits

NEG = float("-inf")
OFF = dict(temperature=1.0, top_k=None, top_p=None, min_p=None)  # a processor that changes nothing


pytestmark = pytest.mark.usefixtures("one_thread")


def lively(pos_encoding: str) -> GPT:
    """A tiny random GPT whose greedy output depends on the context.

    Fresh from init, a tied model just repeats the last token (its embedding matches itself best),
    which would let position and cache bugs through; untied weights scaled up make it opinionated.
    """
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32,
                    pos_encoding=pos_encoding, tie_weights=False)
    m = GPT(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(15)
    return m


@pytest.fixture(scope="module")
def model() -> GPT:
    return lively("rope")


@pytest.fixture(scope="module", params=["sinusoidal", "learned"])
def abs_model(request) -> GPT:
    return lively(request.param)


def cfg(**kw) -> SamplingConfig:
    return SamplingConfig(**{**OFF, **kw})


def row(*values) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float32)


# --- process_logits, by hand ---------------------------------------------------------------

def test_temperature():
    out = process_logits(row(1.0, 2.0, -4.0), [[]], cfg(temperature=0.5))
    assert out.tolist() == [[2.0, 4.0, -8.0]]


def test_top_k():
    out = process_logits(row(1.0, 4.0, 3.0, 2.0), [[]], cfg(top_k=2))
    assert out.tolist() == [[NEG, 4.0, 3.0, NEG]]


def test_top_p():
    probs = row(0.5, 0.05, 0.3, 0.15)
    # 0.5 alone < 0.7, so 0.3 joins; with 0.8 already reached, 0.15 and 0.05 go
    out = process_logits(probs.log(), [[]], cfg(top_p=0.7))
    assert torch.isinf(out).tolist() == [[False, True, False, True]]
    out = process_logits(probs.log(), [[]], cfg(top_p=0.4))  # the likeliest token always stays
    assert torch.isinf(out).tolist() == [[False, True, True, True]]


def test_min_p():
    probs = row(0.5, 0.05, 0.3, 0.15)
    out = process_logits(probs.log(), [[]], cfg(min_p=0.25))  # floor 0.125
    assert torch.isinf(out).tolist() == [[False, True, False, False]]


def test_repetition_penalty():
    out = process_logits(row(2.0, -2.0, 1.0, 3.0), [[0, 1, 1]], cfg(repetition_penalty=2.0))
    assert out.tolist() == [[1.0, -4.0, 1.0, 3.0]]  # seen: positive halved, negative doubled


def test_no_repeat_ngram():
    logits = torch.zeros(2, 6)
    # row 0 ends in (1, 2) and "1 2 3" occurred: 3 is banned; row 1 ends in (4, 5), never seen before
    out = process_logits(logits, [[1, 2, 3, 1, 2], [4, 5]], cfg(no_repeat_ngram=3))
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [3]
    assert not torch.isinf(out[1]).any()
    out = process_logits(torch.zeros(1, 6), [[0, 4, 4]], cfg(no_repeat_ngram=1))  # n=1: nothing seen twice
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [0, 4]


def test_process_logits_is_pure():
    logits = row(1.0, 2.0, 3.0)
    process_logits(logits, [[0]], cfg(temperature=0.5, top_k=1, repetition_penalty=3.0))
    assert logits.tolist() == [[1.0, 2.0, 3.0]]


# --- decoding --------------------------------------------------------------------------------

PROMPTS = [[5, 9, 2], [7] * 11, [1, 2, 3, 4, 5, 6, 7, 8], [60]]


def test_greedy_is_deterministic(model):
    c = SamplingConfig(strategy="greedy", max_new_tokens=12)
    assert generate(model, PROMPTS, c) == generate(model, PROMPTS, c)
    assert all(len(out) == 12 for out in generate(model, PROMPTS, c))


def test_seeded_sampling(model):
    c = SamplingConfig(max_new_tokens=20, temperature=1.0, seed=123)
    assert generate(model, PROMPTS, c) == generate(model, PROMPTS, c)
    other = SamplingConfig(max_new_tokens=20, temperature=1.0, seed=124)
    assert generate(model, PROMPTS, c) != generate(model, PROMPTS, other)


@pytest.mark.parametrize("kw", [dict(strategy="greedy"), dict(seed=7, temperature=1.0, top_k=20),
                                dict(strategy="greedy", repetition_penalty=1.3, no_repeat_ngram=2)])
def test_cache_equals_recompute(model, kw):
    # 30 new tokens after prompts of up to 11 run past block_size 32: the crop/fallback path runs too
    c = SamplingConfig(max_new_tokens=30, **kw)
    assert generate(model, PROMPTS, c, use_cache=True) == generate(model, PROMPTS, c, use_cache=False)


def test_cache_equals_recompute_absolute_positions(abs_model):
    c = SamplingConfig(strategy="greedy", max_new_tokens=30)
    assert generate(abs_model, PROMPTS, c) == generate(abs_model, PROMPTS, c, use_cache=False)


def test_long_prompt_is_cropped(model):
    long = list(range(40))  # longer than block_size
    c = SamplingConfig(strategy="greedy", max_new_tokens=4)
    assert generate(model, [long], c) == generate(model, [long[-32:]], c)


@pytest.mark.parametrize("use_cache", [True, False])
def test_batch_equals_one_by_one(model, abs_model, use_cache):
    c = SamplingConfig(strategy="greedy", max_new_tokens=25)
    for m in (model, abs_model):
        batched = generate(m, PROMPTS, c, use_cache=use_cache)
        assert batched == [generate(m, [p], c, use_cache=use_cache)[0] for p in PROMPTS]


def test_eos_stops(model):
    c = SamplingConfig(strategy="greedy", max_new_tokens=12)
    full = generate(model, PROMPTS[:1], c)[0]
    eos = full[5]
    out = generate(model, PROMPTS, SamplingConfig(strategy="greedy", max_new_tokens=12, eos_id=eos))
    assert out[0] == full[:full.index(eos)]  # eos itself is left out
    assert all(eos not in o for o in out)


def test_stop_callback(model):
    c = SamplingConfig(strategy="greedy", max_new_tokens=12)
    out = generate(model, PROMPTS, c, stop=lambda new: len(new) >= 4)
    assert [len(o) for o in out] == [4] * len(PROMPTS)
    assert out == [o[:4] for o in generate(model, PROMPTS, c)]


@pytest.mark.parametrize("kw", [dict(strategy="greedy"), dict(seed=3, temperature=0.9)])
def test_stream_matches_generate(model, kw):
    c = SamplingConfig(max_new_tokens=30, **kw)
    for p in PROMPTS[:2]:
        assert list(stream(model, p, c)) == generate(model, [p], c)[0]
    first3 = generate(model, PROMPTS[:1], c)[0][:3]
    assert list(stream(model, PROMPTS[0], c, stop=lambda new: len(new) == 3)) == first3


def test_training_mode_restored(model):
    model.train()
    try:
        generate(model, PROMPTS, SamplingConfig(strategy="greedy", max_new_tokens=2))
        assert model.training
    finally:
        model.eval()


def test_empty_prompt_rejected(model):
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[]], SamplingConfig())


# --- beam search -----------------------------------------------------------------------------

def logprob(m: GPT, prompt: list[int], new: list[int]) -> float:
    idx = torch.tensor([prompt + new])
    logp = F.log_softmax(m(idx)[0][0, len(prompt) - 1:-1], dim=-1)
    return logp.gather(1, torch.tensor(new)[:, None]).sum().item()


def test_beam_of_one_is_greedy(model):
    greedy = generate(model, PROMPTS, SamplingConfig(strategy="greedy", max_new_tokens=30))
    beam = generate(model, PROMPTS, SamplingConfig(strategy="beam", num_beams=1, max_new_tokens=30))
    assert beam == greedy


def test_beam_at_least_as_likely_as_greedy(model):
    for p in PROMPTS:
        greedy = generate(model, [p], SamplingConfig(strategy="greedy", max_new_tokens=6))[0]
        beam = beam_search(model, p, SamplingConfig(strategy="beam", num_beams=4, max_new_tokens=6))
        assert len(beam) == 6
        assert logprob(model, p, beam) >= logprob(model, p, greedy) - 1e-5


class Bigram(GPT):
    """A GPT whose next-token logits come from a fixed table of the current token."""

    def __init__(self, table: torch.Tensor):
        super().__init__(GPTConfig(vocab_size=table.size(0), block_size=16, n_layer=1, n_head=1, n_embd=8))
        self.table = table

    def forward(self, idx, targets=None, cache=None):
        super().forward(idx, cache=cache)  # keeps the KV-cache bookkeeping
        return self.table[idx], None


def test_beam_finds_what_greedy_misses():
    table = torch.zeros(64, 64)  # from most tokens: uniform, log-prob ln(1/64) for any next one
    table[5] = -20.0
    table[5, 10], table[5, 20] = math.log(0.55), math.log(0.45)  # greedy takes 10 ...
    table[20] = -20.0
    table[20, 30] = 0.0  # ... but 20 is followed by 30 almost surely
    m = Bigram(table).eval()
    c = dict(max_new_tokens=2, eos_id=None)
    assert generate(m, [[5]], SamplingConfig(strategy="greedy", **c))[0][0] == 10
    assert beam_search(m, [5], SamplingConfig(strategy="beam", num_beams=2, **c)) == [20, 30]


def test_beam_eos_ends_a_beam():
    table = torch.zeros(64, 64)
    table[5] = -20.0
    table[5, 2], table[5, 20] = math.log(0.6), math.log(0.4)  # eos (2) right away is likeliest
    m = Bigram(table).eval()
    out = beam_search(m, [5], SamplingConfig(strategy="beam", num_beams=2, max_new_tokens=3, eos_id=2))
    assert out == []  # mean log-prob ln 0.6 beats any continuation through 20 then uniform tokens


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_cache_and_batching():
    m = lively("rope").to("cuda", torch.bfloat16)
    c = SamplingConfig(strategy="greedy", max_new_tokens=30)
    batched = generate(m, PROMPTS, c)
    assert all(len(o) == 30 for o in batched)
    assert batched[0] == generate(m, PROMPTS[:1], c)[0]
    opt = m.float().configure_optimizer(0.1, 1e-3, (0.9, 0.95), "cuda")  # fused AdamW
    _, loss = m(torch.randint(0, 64, (2, 16), device="cuda"), torch.randint(0, 64, (2, 16), device="cuda"))
    loss.backward()
    opt.step()


def test_cached_decoding_of_one_prompt_and_of_beams_passes_no_mask(model, monkeypatch):
    """Rows of one length need no attention mask, so SDPA is free to pick its flash kernel on a GPU."""
    import model.gpt as gpt_mod

    masks, real = [], gpt_mod.F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        masks.append(attn_mask is not None)
        return real(q, k, v, attn_mask=attn_mask, **kw)

    expected = generate(model, [[1, 2, 3]], cfg(strategy="greedy", max_new_tokens=6), use_cache=False)
    monkeypatch.setattr(gpt_mod.F, "scaled_dot_product_attention", spy)
    assert generate(model, [[1, 2, 3]], cfg(strategy="greedy", max_new_tokens=6)) == expected
    beam_search(model, [1, 2, 3], cfg(strategy="beam", num_beams=3, max_new_tokens=5))
    assert masks and not any(masks)
    masks.clear()
    generate(model, [[1, 2, 3], [4, 5]], cfg(strategy="greedy", max_new_tokens=3))  # ragged rows: masked steps
    assert any(masks)
