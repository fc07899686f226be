"""The GPT module: shapes, loss, positional encodings, KV cache, attention maps, bookkeeping."""

import math

import pytest
import torch

from model import GPT, GPTConfig
from model.gpt import sinusoidal_table

ENCODINGS = ["sinusoidal", "learned", "rope"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(pos_encoding="rope", **kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32, pos_encoding=pos_encoding, **kw)
    return GPT(cfg).eval()


def test_shapes_and_initial_loss():
    model = tiny()
    idx = torch.randint(0, 64, (3, 20))
    logits, loss = model(idx)
    assert logits.shape == (3, 20, 64) and loss is None
    # random targets: with tied weights, predicting the input token itself is favoured at init
    logits, loss = model(idx, targets=torch.randint(0, 64, (3, 20)))
    assert abs(loss.item() - math.log(64)) < 0.3  # near-uniform predictions at init


def test_ignore_index():
    model = tiny()
    idx = torch.randint(0, 64, (2, 10))
    targets = idx.clone()
    targets[:, 5:] = -1
    _, loss = model(idx, targets)
    _, loss_half = model(idx[:, :5], targets[:, :5])
    assert torch.allclose(loss, loss_half, atol=1e-6)


@pytest.mark.parametrize("pe", ENCODINGS)
def test_overfits_one_batch(pe):
    model = tiny(pe).train()
    idx = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(1))
    x, y = idx[:, :-1], idx[:, 1:]
    opt = model.configure_optimizer(0.0, 1e-2, (0.9, 0.99), "cpu")
    first = None
    for _ in range(30):
        _, loss = model(x, y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_sinusoidal_formula_by_hand():
    pe = sinusoidal_table(8, 6)
    assert pe[0].tolist() == pytest.approx([0, 1, 0, 1, 0, 1])
    assert pe[1, 0].item() == pytest.approx(math.sin(1.0))  # pos 1, i 0
    assert pe[1, 1].item() == pytest.approx(math.cos(1.0))
    assert pe[3, 2].item() == pytest.approx(math.sin(3 / 10000 ** (2 / 6)))  # pos 3, i 1
    assert pe[3, 5].item() == pytest.approx(math.cos(3 / 10000 ** (4 / 6)))  # pos 3, i 2
    # each position has its own code, and the model actually adds it
    assert not torch.allclose(pe[1], pe[2])
    model = tiny("sinusoidal")
    same = torch.full((1, 6), 7)
    logits, _ = model(same)
    assert not torch.allclose(logits[0, 1], logits[0, 2])


@pytest.mark.parametrize("pe", ENCODINGS)
def test_kv_cache_matches_full_forward(pe):
    model = tiny(pe)
    idx = torch.randint(0, 64, (2, 24))
    full, _ = model(idx)
    cache = model.new_cache(2)
    parts = [model(idx[:, :10], cache=cache)[0], model(idx[:, 10:13], cache=cache)[0]]  # prefill, then a chunk
    parts += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(13, 24)]  # token by token
    assert cache.lengths == [24, 24]
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("pe", ENCODINGS)
def test_ragged_cache_rows_decode_at_their_own_positions(pe):
    # Two prompts of different lengths share a cache (right-padded prefill, then rewound rows);
    # each row must match the same sequence run alone.
    model = tiny(pe)
    a, b = torch.randint(0, 64, (1, 12)), torch.randint(0, 64, (1, 12))
    cache = model.new_cache(2)
    pad_b = torch.cat([b[:, :7], torch.zeros(1, 5, dtype=torch.long)], dim=1)
    model(torch.cat([a[:, :9], pad_b[:, :9]]), cache=cache)
    cache.lengths = [9, 7]
    out = [model(torch.stack([a[:, 9 + s], b[:, 7 + s]]), cache=cache)[0] for s in range(3)]
    alone_a, _ = model(a)
    alone_b, _ = model(b[:, :10])
    for s in range(3):
        assert torch.allclose(out[s][0, 0], alone_a[0, 9 + s], atol=1e-5)
        assert torch.allclose(out[s][1, 0], alone_b[0, 7 + s], atol=1e-5)


@pytest.mark.parametrize("pe", ENCODINGS)
def test_attention_maps(pe):
    model = tiny(pe)
    idx = torch.randint(0, 64, (2, 16))
    maps, slow = model.attention_maps(idx, return_logits=True)
    assert len(maps) == 2 and maps[0].shape == (2, 2, 16, 16)
    for att in maps:
        assert torch.allclose(att.sum(-1), torch.ones(2, 2, 16), atol=1e-5)
        assert (att.triu(diagonal=1) == 0).all()  # nothing attends to the future
    fast, _ = model(idx)
    assert torch.allclose(slow, fast, atol=1e-5)


def test_block_size_overflow_raises():
    model = tiny()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 33, dtype=torch.long))
    cache = model.new_cache(1)
    model(torch.zeros(1, 30, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)


def test_weight_tying():
    model = tiny()
    assert model.lm_head.weight is model.transformer.wte.weight
    untied = tiny(tie_weights=False)
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    # untied, the lookup table is an embedding parameter; tied, it is the output head
    assert untied.num_params() == model.num_params()
    assert untied.num_params(non_embedding=False) == model.num_params() + 64 * 32


def test_bias_flag_and_param_counts():
    model = tiny("learned", bias=True)
    assert model.transformer.h[0].ln_1.bias is not None and model.transformer.h[0].attn.c_attn.bias is not None
    assert model.num_params(non_embedding=False) - model.num_params() == 32 * 32  # the wpe table
    n = model.num_params()
    assert model.flops_per_token(16) == 6 * n + 12 * 2 * 32 * 16


def test_configure_optimizer_groups():
    model = tiny(bias=True)
    opt = model.configure_optimizer(0.1, 3e-4, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == model.num_params(non_embedding=False)  # every parameter once, the tied matrix too
    assert opt.defaults["lr"] == 3e-4 and opt.defaults["betas"] == (0.9, 0.95)


def test_residual_projection_init_is_scaled():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=8, n_head=4, n_embd=128))
    std = model.transformer.h[0].mlp.c_proj.weight.std().item()
    assert std == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert model.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_bad_config_rejected():
    with pytest.raises(ValueError, match="pos_encoding"):
        GPTConfig(pos_encoding="alibi")
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)


def test_qk_norm_is_consistent_across_attention_paths():
    model = tiny("rope", qk_norm=True)
    assert model.transformer.h[0].attn.qk_norm
    idx = torch.randint(0, 64, (2, 20))
    full, _ = model(idx)
    cache = model.new_cache(2)
    steps = [model(idx[:, :12], cache=cache)[0]] + [model(idx[:, t:t + 1], cache=cache)[0] for t in range(12, 20)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    _, slow = model.attention_maps(idx, return_logits=True)
    assert torch.allclose(slow, full, atol=1e-5)
    assert not torch.allclose(full, tiny("rope")(idx)[0])  # the switch changes the model


@pytest.mark.parametrize("mlp", ["gelu", "relu2", "swiglu"])
def test_mlp_kinds_train_and_keep_the_cache_exact(mlp):
    model = tiny(mlp=mlp)
    idx = torch.randint(0, 64, (2, 16))
    full, loss = model(idx, targets=idx)
    assert torch.isfinite(loss)
    cache = model.new_cache(2)
    steps = [model(idx[:, :8], cache=cache)[0]] + [model(idx[:, t:t + 1], cache=cache)[0] for t in range(8, 16)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    assert hasattr(model.transformer.h[0].mlp, "c_gate") == (mlp == "swiglu")


def test_mlp_switch_changes_the_function_and_swiglu_keeps_the_flops():
    gelu, relu2, swiglu = tiny(), tiny(mlp="relu2"), tiny(mlp="swiglu")
    idx = torch.randint(0, 64, (2, 16))
    assert torch.equal(gelu(idx)[0], tiny(mlp="gelu")(idx)[0])  # "gelu" is the default model
    assert not torch.allclose(gelu(idx)[0], relu2(idx)[0])
    # three matrices of 2/3 the hidden width: the same parameter count, so the same FLOPs per token
    assert swiglu.flops_per_token() == pytest.approx(gelu.flops_per_token(), rel=0.01)
    assert relu2.flops_per_token() == gelu.flops_per_token()
    with pytest.raises(ValueError, match="mlp"):
        GPTConfig(mlp="tanh")


def test_logit_softcap_bounds_logits_and_off_is_the_default():
    idx = torch.randint(0, 64, (2, 16))
    plain = tiny()
    with torch.no_grad():
        plain.lm_head.weight.mul_(20)  # logits far beyond the cap
        capped = tiny(logit_softcap=5.0)
        capped.load_state_dict(plain.state_dict())
    z, zc = plain(idx)[0], capped(idx)[0]
    assert z.abs().max() > 10 and zc.abs().max() <= 5
    assert torch.allclose(zc, 5.0 * torch.tanh(z / 5.0), atol=1e-5)
    assert torch.equal(tiny(logit_softcap=0.0)(idx)[0], tiny()(idx)[0])
    with pytest.raises(ValueError, match="logit_softcap"):
        GPTConfig(logit_softcap=-1.0)


def _record_masks(monkeypatch) -> list:
    import model.gpt as gpt_mod

    seen, real = [], gpt_mod.F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False, **kw):
        seen.append((attn_mask is not None, is_causal, q.size(2), k.size(2)))
        return real(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kw)

    monkeypatch.setattr(gpt_mod.F, "scaled_dot_product_attention", spy)
    return seen


def test_decode_step_on_equal_rows_passes_no_mask(monkeypatch):
    """A filled cache with rows of one length: a one-token step needs no mask, so SDPA may use flash."""
    model = tiny()
    idx = torch.randint(0, 64, (2, 12))
    full, _ = model(idx)
    seen = _record_masks(monkeypatch)
    cache = model.new_cache(2)
    out = [model(idx[:, :8], cache=cache)[0]] + [model(idx[:, t:t + 1], cache=cache)[0] for t in range(8, 12)]
    assert torch.allclose(torch.cat(out, dim=1), full, atol=1e-5)
    prefill, decode = seen[:2], seen[2:]  # two layers per call
    assert all(not masked and causal for masked, causal, _, _ in prefill)
    assert decode and all(not masked and not causal and t == 1 and s > 1 for masked, causal, t, s in decode)


def test_ragged_rows_and_chunks_after_a_prefill_still_pass_a_mask(monkeypatch):
    model = tiny()
    seen = _record_masks(monkeypatch)
    cache = model.new_cache(2)
    model(torch.randint(0, 64, (2, 6)), cache=cache)
    model(torch.randint(0, 64, (2, 3)), cache=cache)  # a chunk of 3 after 6 cached: bottom-right causal
    cache.lengths = [9, 7]
    model(torch.randint(0, 64, (2, 1)), cache=cache)  # rows of different lengths
    assert [masked for masked, *_ in seen] == [False, False, True, True, True, True]


def test_cross_entropy_of_bf16_logits_matches_fp32_in_chunks(monkeypatch):
    import model.gpt as gpt_mod

    monkeypatch.setattr(gpt_mod, "CE_CHUNK_ROWS", 7)  # several chunks and a ragged last one
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(30, 50, generator=g) * 3).bfloat16().requires_grad_()
    targets = torch.randint(0, 50, (30,), generator=g)
    targets[[3, 17]] = -1  # ignored
    loss = gpt_mod.cross_entropy(logits, targets)
    loss.backward()
    ref_logits = logits.detach().float().requires_grad_()
    ref = torch.nn.functional.cross_entropy(ref_logits, targets, ignore_index=-1)
    ref.backward()
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert logits.grad.dtype == torch.bfloat16
    assert torch.allclose(logits.grad.float(), ref_logits.grad, atol=1e-3)
    assert logits.grad[3].abs().max() == 0  # an ignored row gets no gradient
    # fp32 logits (the CPU) take F.cross_entropy itself: results there are what they were
    x = torch.randn(30, 50, generator=g)
    plain = torch.nn.functional.cross_entropy(x, targets, ignore_index=-1)
    assert torch.equal(gpt_mod.cross_entropy(x, targets), plain)
