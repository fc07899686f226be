"""GPT: the decoder-only Transformer language model that Quill trains and samples from.

Architecture choices (the switchable ones name their GPTConfig field):
- token embedding; the output head shares its matrix when `tie_weights`
- position information from one of (`pos_encoding`): a fixed sinusoidal table added to the
  token embeddings (Vaswani et al. 2017), learned absolute embeddings (GPT-2), or rotary
  embeddings applied to each head's queries and keys (RoPE, Su et al. 2021)
- pre-norm residual blocks, x + attn(ln(x)) then x + mlp(ln(x)), and a final LayerNorm
- multi-head causal self-attention through F.scaled_dot_product_attention, so fused
  flash / memory-efficient kernels are used where the device has them; optionally with
  queries and keys RMS-normalised per head (`qk_norm`, as in nanochat), which bounds the
  attention logits and lets small models take a higher learning rate
- an MLP (`mlp`) of GELU or ReLU^2 (as in the modded-nanogpt speedrun) with a hidden width of
  `mlp_ratio` * n_embd, or SwiGLU with 2/3 of that width in each of its three matrices (equal FLOPs)
- optional logit soft-capping (`logit_softcap`, as in Gemma 2 and the speedrun): cap * tanh(z / cap)
  bounds the output logits, so early large updates cannot make the model over-confident
- biases in Linear and LayerNorm optional (`bias`), dropout optional (`dropout`)
- GPT-2 init: N(0, 0.02) everywhere, residual output projections scaled by 1/sqrt(2 * n_layer)
  so the residual stream's variance does not grow with depth
- a KV cache whose rows may hold different lengths, so prompts of different lengths decode
  in one batch with every row at its own (correct) positions
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .optim import build_optimizer

log = logging.getLogger(__name__)

POS_ENCODINGS = ("sinusoidal", "learned", "rope")
MLPS = ("gelu", "relu2", "swiglu")


@dataclass
class GPTConfig:
    vocab_size: int = 512
    block_size: int = 128  # longest context the model accepts
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in Linear and LayerNorm layers
    pos_encoding: str = "rope"  # "sinusoidal" | "learned" | "rope"
    tie_weights: bool = True  # lm_head.weight is wte.weight
    mlp_ratio: int = 4
    qk_norm: bool = False  # RMS-normalise each head's queries and keys before attention
    mlp: str = "gelu"  # "gelu" | "relu2" | "swiglu"
    logit_softcap: float = 0.0  # 0 = off; else logits = cap * tanh(logits / cap)

    def __post_init__(self):
        if self.pos_encoding not in POS_ENCODINGS:
            raise ValueError(f"pos_encoding must be one of {POS_ENCODINGS}, got {self.pos_encoding!r}")
        if self.mlp not in MLPS:
            raise ValueError(f"mlp must be one of {MLPS}, got {self.mlp!r}")
        if self.logit_softcap < 0:
            raise ValueError(f"logit_softcap must be >= 0 (0 = off), got {self.logit_softcap}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.pos_encoding == "rope" and self.head_dim % 2:
            raise ValueError(f"rope needs an even head size, got {self.head_dim}")
        if self.pos_encoding == "sinusoidal" and self.n_embd % 2:
            raise ValueError(f"sinusoidal encoding needs an even n_embd, got {self.n_embd}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def sinusoidal_table(n_pos: int, dim: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/dim)), PE(pos, 2i+1) = cos(pos / 10000^(2i/dim))."""
    pos = torch.arange(n_pos, dtype=torch.float32)[:, None]  # (n_pos, 1)
    two_i = torch.arange(0, dim, 2, dtype=torch.float32)  # (dim/2,)
    angle = pos / 10000.0 ** (two_i / dim)  # (n_pos, dim/2)
    pe = torch.zeros(n_pos, dim)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe


def rope_tables(n_pos: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of pos * base^(-2i/head_dim), each (n_pos, head_dim/2)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (hs/2,)
    angle = torch.arange(n_pos, dtype=torch.float32)[:, None] * inv_freq  # (n_pos, hs/2)
    return angle.cos(), angle.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x[i], x[i + hs/2]) of x (B, nh, T, hs) by each position's angle.

    cos, sin: (B or 1, 1, T, hs/2). Rotating q and k by their absolute positions makes their dot
    product depend only on the distance between them.
    """
    x1, x2 = x.chunk(2, dim=-1)  # (B, nh, T, hs/2) each
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


CE_CHUNK_ROWS = 4096  # rows of low-precision logits upcast to fp32 at a time by cross_entropy


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of bf16/fp16 logits with fp32 arithmetic, one chunk of rows at a time.

    Upcasting the whole (N, vocab) tensor would hold an fp32 copy (and autograd would keep its
    log-softmax) as large as the logits; here forward keeps only each row's log-sum-exp and
    backward rebuilds softmax - onehot chunk by chunk, in the logits' own dtype.
    """

    @staticmethod
    def forward(ctx, logits, targets, ignore_index: int, chunk: int):
        n = logits.size(0)
        lse = torch.empty(n, device=logits.device, dtype=torch.float32)
        total = torch.zeros((), device=logits.device, dtype=torch.float32)
        valid = targets != ignore_index
        safe = targets.clamp(min=0)
        for i in range(0, n, chunk):
            z = logits[i:i + chunk].float()
            lse[i:i + chunk] = torch.logsumexp(z, dim=-1)
            picked = z.gather(1, safe[i:i + chunk, None])[:, 0]
            total += ((lse[i:i + chunk] - picked) * valid[i:i + chunk]).sum()
        count = valid.sum()
        ctx.save_for_backward(logits, safe, valid, lse, count)
        ctx.chunk = chunk
        return total / count  # 0/0 = nan when every target is ignored, as F.cross_entropy gives

    @staticmethod
    def backward(ctx, grad):
        logits, safe, valid, lse, count = ctx.saved_tensors
        out = torch.empty_like(logits)
        scale = grad.float() / count
        for i in range(0, logits.size(0), ctx.chunk):
            p = (logits[i:i + ctx.chunk].float() - lse[i:i + ctx.chunk, None]).exp()
            p.scatter_add_(1, safe[i:i + ctx.chunk, None], -torch.ones_like(p[:, :1]))
            out[i:i + ctx.chunk] = (p * (valid[i:i + ctx.chunk, None] * scale)).to(logits.dtype)
        return out, None, None, None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Mean cross-entropy of (N, vocab) logits against (N,) targets, computed in fp32.

    fp32 logits (the CPU) go straight to F.cross_entropy; lower-precision ones (bf16 autocast on a
    GPU) through _ChunkedCrossEntropy, which never holds a whole fp32 copy of them.
    """
    if logits.dtype == torch.float32:
        return F.cross_entropy(logits, targets, ignore_index=ignore_index)
    return _ChunkedCrossEntropy.apply(logits, targets, ignore_index, CE_CHUNK_ROWS)


class KVCache:
    """Preallocated keys and values, one (B, nh, max_len, hs) pair per layer, for incremental decoding.

    Row b holds `lengths[b]` valid positions; rows may differ (generate.py prefills a right-padded
    batch of prompts and then rewinds each row to its prompt length). New keys go at each row's
    own offset and attention hides every slot past a row's length, so stale slots never leak.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, head_dim: int, max_len: int,
                 *, device=None, dtype=None):
        shape = (batch_size, n_head, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.lengths = [0] * batch_size  # host-side ints: no device sync to read them
        self.max_len = max_len

    @property
    def batch_size(self) -> int:
        return len(self.lengths)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, nh, T, hs) after each row's length; return all keys/values (B, nh, S, hs).

        S = max(lengths) + T. Lengths move on only in advance(), once every layer has written.
        """
        T = k.size(2)
        S = max(self.lengths) + T
        if S > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, {S} needed")
        if min(self.lengths) == max(self.lengths):
            L = self.lengths[0]
            self.k[layer][:, :, L:L + T] = k
            self.v[layer][:, :, L:L + T] = v
        else:
            dev = k.device
            rows = torch.arange(self.batch_size, device=dev)[:, None]  # (B, 1)
            pos = torch.tensor(self.lengths, device=dev)[:, None] + torch.arange(T, device=dev)  # (B, T)
            # indexing dims 0 and 2 puts the broadcast (B, T) first: the slot view is (B, T, nh, hs)
            self.k[layer][rows, :, pos] = k.transpose(1, 2)
            self.v[layer][rows, :, pos] = v.transpose(1, 2)
        return self.k[layer][:, :, :S], self.v[layer][:, :, :S]

    def advance(self, n: int) -> None:
        self.lengths = [length + n for length in self.lengths]

    def reorder(self, rows: list[int]) -> None:
        """Keep (and duplicate) the given rows, in that order: beam search follows its survivors."""
        idx = torch.tensor(rows, device=self.k[0].device)
        self.k = [k.index_select(0, idx) for k in self.k]
        self.v = [v.index_select(0, idx) for v in self.v]
        self.lengths = [self.lengths[r] for r in rows]


class CausalSelfAttention(nn.Module):

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx  # which slot of a KVCache belongs to this layer
        self.n_head = config.n_head
        self.qk_norm = config.qk_norm
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, rope=None, mask=None, cache: KVCache | None = None, maps: list | None = None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if self.qk_norm:
            q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, nh, S, hs)
        if maps is None:
            # mask None: the last T of the S keys are the queries' own positions and each query sees every key
            # up to its own (GPT._positions). With S == T that is plain causal attention; otherwise T == 1 (a
            # decode step on rows of equal length) and every key is visible. Neither passes a mask, so SDPA may
            # take its flash kernel.
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and k.size(2) == T,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:
            y, att = self._explicit(q, k, v, mask)
            maps.append(att)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))

    def _explicit(self, q, k, v, mask):
        """softmax(q k^T / sqrt(hs)) v written out, so the weights can be looked at."""
        T, S = q.size(-2), k.size(-2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, T, S)
        if mask is None:
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        return self.attn_dropout(att) @ v, att  # (B, nh, T, hs), (B, nh, T, S)


class MLP(nn.Module):
    """GELU or ReLU^2: c_proj(act(c_fc(x))). SwiGLU: c_proj(silu(c_fc(x)) * c_gate(x)), hidden width
    2/3 of the others' so its three matrices cost what their two do."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.kind = config.mlp
        hidden = config.mlp_ratio * config.n_embd
        if self.kind == "swiglu":
            hidden = 2 * hidden // 3
            self.c_gate = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.c_fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.c_fc(x)
        if self.kind == "gelu":
            h = F.gelu(h)
        elif self.kind == "relu2":
            h = F.relu(h).square()
        else:
            h = F.silu(h) * self.c_gate(x)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, rope=None, mask=None, cache=None, maps=None):
        x = x + self.attn(self.ln_1(x), rope, mask, cache, maps)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(config.vocab_size, config.n_embd),
            "drop": nn.Dropout(config.dropout),
            "h": nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            "ln_f": nn.LayerNorm(config.n_embd, bias=config.bias),
        })
        # fixed tables are buffers rebuilt from the config, so they stay out of the state dict
        if config.pos_encoding == "learned":
            self.transformer["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        elif config.pos_encoding == "sinusoidal":
            self.register_buffer("pe", sinusoidal_table(config.block_size, config.n_embd), persistent=False)
        else:
            cos, sin = rope_tables(config.block_size, config.head_dim)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # the projections that write into the residual stream
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def new_cache(self, batch_size: int, max_len: int | None = None, device=None, dtype=None) -> KVCache:
        """An empty KVCache for this model; max_len defaults to block_size, device/dtype to the weights'."""
        c, w = self.config, self.transformer.wte.weight
        return KVCache(c.n_layer, batch_size, c.n_head, c.head_dim, max_len or c.block_size,
                       device=device or w.device, dtype=dtype or w.dtype)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None):
        """idx (B, T) token ids -> logits (B, T, vocab) and the mean cross-entropy against targets (or None).

        Targets equal to -1 are ignored. With a cache, idx continues each row of the cache,
        and the cache grows by T.
        """
        logits = self._logits(idx, cache)
        loss = None
        if targets is not None:
            loss = cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor, *, return_logits: bool = False):
        """Per-layer attention weights (B, nh, T, T) of idx (B, T), through a slow explicit softmax.

        Call in eval mode for dropout-free maps. With return_logits, returns (maps, logits).
        """
        maps: list[torch.Tensor] = []
        logits = self._logits(idx, maps=maps)
        return (maps, logits) if return_logits else maps

    def _logits(self, idx, cache: KVCache | None = None, maps: list | None = None):
        B, T = idx.shape
        pos, mask = self._positions(B, T, cache, idx.device)
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.config.pos_encoding == "learned":
            x = x + self.transformer.wpe(pos)  # (B or 1, T, C)
        elif self.config.pos_encoding == "sinusoidal":
            x = x + self.pe[pos]  # (B or 1, T, C)
        else:
            rope = (self.rope_cos[pos][:, None], self.rope_sin[pos][:, None])  # (B or 1, 1, T, hs/2)
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, rope, mask, cache, maps)
        if cache is not None:
            cache.advance(T)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)
        if self.config.logit_softcap:
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits / cap)
        return logits

    def _positions(self, B: int, T: int, cache: KVCache | None, device):
        """Absolute positions of the new tokens, (B or 1, T), and the attention mask (None = plain causal)."""
        past = [0] * B if cache is None else cache.lengths
        if cache is not None and cache.batch_size != B:
            raise ValueError(f"cache has {cache.batch_size} rows, input has {B}")
        if max(past) + T > self.config.block_size:
            raise ValueError(f"sequence of {max(past) + T} tokens ({max(past)} cached + {T} new) exceeds "
                             f"block_size {self.config.block_size}; crop the context to the last "
                             f"{self.config.block_size} tokens")
        steps = torch.arange(T, device=device)
        if max(past) == 0:
            return steps[None], None
        if T == 1 and min(past) == max(past):
            # a decode step on rows of one length sees every cached key: no mask (CausalSelfAttention.forward)
            return torch.tensor([[past[0]]], device=device), None
        pos = torch.tensor(past, device=device)[:, None] + steps  # (B, T)
        # row b keeps position j in cache slot j, so a query at position p may see slots 0..p
        keys = torch.arange(max(past) + T, device=device)  # (S,)
        mask = keys[None, None, :] <= pos[:, :, None]  # (B, T, S)
        return pos, mask[:, None]  # mask (B, 1, T, S): the same for every head

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count. non_embedding leaves out tables that are only looked up, never multiplied:
        position embeddings, and the token embeddings when untied (tied, they are the output head)."""
        n = sum(p.numel() for p in self.parameters())  # a tied matrix is counted once
        if non_embedding:
            if self.config.pos_encoding == "learned":
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_weights:
                n -= self.transformer.wte.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs (forward + backward) per token at context seq_len (default block_size).

        The PaLM paper's (appendix B) / nanoGPT estimate: 6N for the N non-embedding weights
        (2 for the multiply-add, times 3 for forward + the two backward matmuls) plus
        12 * n_layer * n_embd * seq_len for the attention scores and weighted sums.
        """
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * c.n_embd * (seq_len or c.block_size)

    def configure_optimizer(self, weight_decay: float, lr: float, betas: tuple[float, float], device_type: str,
                            optimizer: str = "adamw", muon_lr: float | None = None):
        """AdamW decaying only matrices (linear weights, embeddings), not biases or LayerNorm gains; with
        optimizer "muon", the blocks' matrices go to Muon instead (model/optim.py)."""
        return build_optimizer(self, optimizer, lr=lr, weight_decay=weight_decay, betas=betas,
                               device_type=device_type, muon_lr=muon_lr)
