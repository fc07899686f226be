"""Export a Quill checkpoint as a Hugging Face transformers folder (no transformers import needed here).

    export_hf("data/runs/tiny/train/checkpoint", "out/quill-hf")
    AutoModelForCausalLM.from_pretrained("out/quill-hf"); AutoTokenizer.from_pretrained("out/quill-hf")

Which architecture each GPTConfig maps to (both compute exactly what Quill computes):
- `pos_encoding="rope"` -> GPT-NeoX (`GPTNeoXForCausalLM`) with sequential residuals
  (`use_parallel_residual=false`: x + attn(ln1(x)), then + mlp(ln2(x))), rotary over the whole head
  (`rotary_pct=1.0`, base 10000) in the rotate-half layout Quill uses (pairs i and i + hs/2), exact GELU.
  GPT-NeoX fuses q, k, v per head ([q_h, k_h, v_h] for head h) where Quill puts all queries first,
  so the fused matrix is reordered.
- `pos_encoding="learned"` -> GPT-2 (`GPT2LMHeadModel`) with exact GELU; GPT-2's Conv1D stores
  weights as (in, out), so linear weights are transposed.
- `pos_encoding="sinusoidal"` -> GPT-2 as well: a fixed table added to the token embeddings is a
  learned position table that holds those values.
- `bias=False`: both architectures always have biases, so they are written as zeros (same output).
- `tie_weights`: the output head is the embedding (`tie_word_embeddings`); untied, it is written apart.

Refused with ExportError: `qk_norm=True` (neither architecture RMS-normalises queries and keys per
head without a gain). Every other GPTConfig setting (sizes, `mlp_ratio`, `block_size`) maps exactly;
dropout is 0 in the export (inference).

The tokenizer becomes a `tokenizer.json` (Hugging Face `tokenizers` format) written from the
SentencePiece model (see `tokenizer_json`): the same pieces, ids and merge order, byte fallback, the
dummy-prefix space, newline and control_tokens (<|poem|>) as whole pieces. eos is also bos, as in
Quill's training stream: a prompt starts with it (`[eos_token_id] + encode(text)`). The
SentencePiece model is copied too (`tokenizer.model`), so the folder still loads in Quill.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import save_file

from .checkpoint import TOKENIZER, load_checkpoint
from .gpt import GPT, GPTConfig

SPACE = "\u2581"  # SentencePiece's visible space
LN_EPS = 1e-5  # nn.LayerNorm's default, which Quill uses


class ExportError(ValueError):
    """The checkpoint uses an option the target format cannot express."""


def architecture(cfg: GPTConfig) -> str:
    """The transformers class a config exports to; raises ExportError for options it cannot express."""
    if cfg.qk_norm:
        raise ExportError("model.qk_norm=True cannot be exported to a Hugging Face architecture: GPT-NeoX and GPT-2 "
                          "do not RMS-normalise queries and keys per head; train with qk_norm=false to export")
    return "GPTNeoXForCausalLM" if cfg.pos_encoding == "rope" else "GPT2LMHeadModel"


def export_hf(ckpt_dir, out_dir, *, model_card: str | None = None) -> Path:
    """Write config.json, model.safetensors, the tokenizer files (and MODEL_CARD.md/README.md if given)
    to out_dir, atomically (a temporary sibling renamed into place). Returns out_dir."""
    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    model, cfg, _ = load_checkpoint(ckpt_dir)
    arch = architecture(cfg)
    sp = spm.SentencePieceProcessor(model_file=str(ckpt_dir / TOKENIZER))
    if arch == "GPTNeoXForCausalLM":
        config, state = _neox(cfg), _neox_state(model, cfg)
    else:
        config, state = _gpt2(cfg), _gpt2_state(model, cfg)
    config.update(architectures=[arch], vocab_size=cfg.vocab_size, bos_token_id=sp.eos_id(), eos_token_id=sp.eos_id(),
                  pad_token_id=sp.pad_id(), tie_word_embeddings=cfg.tie_weights, torch_dtype="float32",
                  quill_config=asdict(cfg))
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        _json(tmp / "config.json", config)
        _json(tmp / "generation_config.json", {"bos_token_id": sp.eos_id(), "eos_token_id": sp.eos_id(),
                                               "pad_token_id": sp.pad_id()})
        _json(tmp / "tokenizer.json", tokenizer_json(sp))
        _json(tmp / "tokenizer_config.json", _tokenizer_config(sp, cfg))
        _json(tmp / "special_tokens_map.json", {"bos_token": sp.id_to_piece(sp.eos_id()),
                                                "eos_token": sp.id_to_piece(sp.eos_id()),
                                                "unk_token": sp.id_to_piece(sp.unk_id()),
                                                "pad_token": sp.id_to_piece(sp.pad_id())})
        shutil.copyfile(ckpt_dir / TOKENIZER, tmp / TOKENIZER)
        if model_card:
            (tmp / "MODEL_CARD.md").write_text(model_card, encoding="utf-8")
            (tmp / "README.md").write_text(model_card, encoding="utf-8")  # what the Hub and most viewers show
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def _json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _zeros_if_none(t: torch.Tensor | None, n: int) -> torch.Tensor:
    return torch.zeros(n) if t is None else t


def _neox(cfg: GPTConfig) -> dict:
    return {
        "model_type": "gpt_neox", "hidden_size": cfg.n_embd, "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head, "intermediate_size": cfg.mlp_ratio * cfg.n_embd, "hidden_act": "gelu",
        "max_position_embeddings": cfg.block_size, "layer_norm_eps": LN_EPS, "use_parallel_residual": False,
        "rotary_pct": 1.0, "rotary_emb_base": 10000,
        "rope_theta": 10000.0, "partial_rotary_factor": 1.0,  # the same two settings under their newer names
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
        "attention_bias": True, "attention_dropout": 0.0, "hidden_dropout": 0.0, "initializer_range": 0.02,
        "use_cache": True,
    }


def _neox_state(model: GPT, cfg: GPTConfig) -> dict[str, torch.Tensor]:
    C, nh, hs = cfg.n_embd, cfg.n_head, cfg.head_dim
    sd = model.state_dict()
    out = {"gpt_neox.embed_in.weight": sd["transformer.wte.weight"],
           "gpt_neox.final_layer_norm.weight": sd["transformer.ln_f.weight"],
           "gpt_neox.final_layer_norm.bias": _zeros_if_none(sd.get("transformer.ln_f.bias"), C),
           "embed_out.weight": sd["lm_head.weight"]}
    for i in range(cfg.n_layer):
        q, h = f"transformer.h.{i}.", f"gpt_neox.layers.{i}."
        w = sd[q + "attn.c_attn.weight"]  # (3C, C): rows [q heads | k heads | v heads]
        b = _zeros_if_none(sd.get(q + "attn.c_attn.bias"), 3 * C)
        out[h + "attention.query_key_value.weight"] = w.view(3, nh, hs, C).transpose(0, 1).reshape(3 * C, C)
        out[h + "attention.query_key_value.bias"] = b.view(3, nh, hs).transpose(0, 1).reshape(3 * C)
        pairs = {"input_layernorm": "ln_1", "post_attention_layernorm": "ln_2", "attention.dense": "attn.c_proj",
                 "mlp.dense_h_to_4h": "mlp.c_fc", "mlp.dense_4h_to_h": "mlp.c_proj"}
        for theirs, ours in pairs.items():
            weight = sd[q + ours + ".weight"]
            out[h + theirs + ".weight"] = weight
            out[h + theirs + ".bias"] = _zeros_if_none(sd.get(q + ours + ".bias"), weight.size(0))
    return out


def _gpt2(cfg: GPTConfig) -> dict:
    return {
        "model_type": "gpt2", "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
        "n_inner": cfg.mlp_ratio * cfg.n_embd, "n_positions": cfg.block_size, "n_ctx": cfg.block_size,
        "activation_function": "gelu", "layer_norm_epsilon": LN_EPS, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
        "attn_pdrop": 0.0, "scale_attn_weights": True, "initializer_range": 0.02, "use_cache": True,
    }


def _gpt2_state(model: GPT, cfg: GPTConfig) -> dict[str, torch.Tensor]:
    C = cfg.n_embd
    sd = model.state_dict()
    wpe = sd["transformer.wpe.weight"] if cfg.pos_encoding == "learned" else model.pe
    out = {"transformer.wte.weight": sd["transformer.wte.weight"], "transformer.wpe.weight": wpe,
           "transformer.ln_f.weight": sd["transformer.ln_f.weight"],
           "transformer.ln_f.bias": _zeros_if_none(sd.get("transformer.ln_f.bias"), C)}
    if not cfg.tie_weights:
        out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        for ln in ("ln_1", "ln_2"):
            out[p + ln + ".weight"] = sd[p + ln + ".weight"]
            out[p + ln + ".bias"] = _zeros_if_none(sd.get(p + ln + ".bias"), C)
        for lin in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            weight = sd[p + lin + ".weight"]  # (out, in); GPT-2's Conv1D holds (in, out)
            out[p + lin + ".weight"] = weight.t()
            out[p + lin + ".bias"] = _zeros_if_none(sd.get(p + lin + ".bias"), weight.size(0))
    return out


# --- tokenizer --------------------------------------------------------------------------------------

def _kinds(sp) -> tuple[list[int], list[int], list[int]]:
    """(BPE pieces, control/unknown pieces, user-defined pieces other than newline) by id.

    Piece types come from the model proto: the Python API tells control, unknown, byte and unused
    pieces apart but not user-defined ones from normal ones.
    """
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(sp.serialized_model_proto())
    kind = sentencepiece_model_pb2.ModelProto.SentencePiece
    normal, control, user = [], [], []
    for i, piece in enumerate(proto.pieces):
        if piece.type in (kind.CONTROL, kind.UNKNOWN):
            control.append(i)
        elif piece.type == kind.USER_DEFINED and piece.piece != "\n":
            user.append(i)
        elif piece.type != kind.UNUSED:
            normal.append(i)
    return normal, control, user


def _merges(vocab: dict[str, int], scores: dict[str, float]) -> list[list[str]]:
    """BPE merges in SentencePiece's order: a pair that makes a higher-scoring piece merges first."""
    merges = []
    for piece in sorted(vocab, key=lambda p: (-scores[p], vocab[p])):
        local = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
        merges += sorted(local, key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
    return [list(m) for m in merges]


def tokenizer_json(sp) -> dict:
    """A `tokenizers` BPE tokenizer that encodes and decodes as the SentencePiece model does.

    The dummy-prefix space (tokenizers trained before Quill 0.2) goes on once, before anything else (a
    normalizer on the whole text), and comes off the decoded text.
    Newline and the byte pieces are ordinary vocabulary that no merge contains, as in SentencePiece.
    User-defined pieces (control_tokens such as <|poem|>) are ordinary vocabulary too, cut out of the
    text by the pre-tokenizer and looked up whole (`ignore_merges`): as added tokens they would be
    cut out before the normalizer, which then puts a dummy prefix on every piece of text between
    them. Control and unknown pieces are special added tokens.
    """
    normal, control, user = _kinds(sp)
    # Tokenizers trained before Quill 0.2 add a dummy-prefix space (model/tokenizer.py); later ones do not.
    dummy_prefix = sp.encode("a", out_type=str)[0].startswith(SPACE)
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in normal if not sp.is_byte(i) and sp.id_to_piece(i) != "\n"}
    added = [{"id": i, "content": sp.id_to_piece(i), "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i in control]
    user_pieces = sorted((sp.id_to_piece(i) for i in user), key=len, reverse=True)  # longest first, as SP matches
    pre_tokenizer = None
    if user_pieces:
        pattern = "|".join(re.escape(p) for p in user_pieces)
        pre_tokenizer = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            *([{"type": "Prepend", "prepend": SPACE}] if dummy_prefix else []),
            {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
        ]},
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            *([{"type": "Strip", "content": " ", "start": 1, "stop": 0}] if dummy_prefix else []),
        ]},
        "model": {"type": "BPE", "dropout": None, "unk_token": sp.id_to_piece(sp.unk_id()),
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                  "byte_fallback": True, "ignore_merges": True, "vocab": vocab,
                  "merges": _merges({p: vocab[p] for p in scores}, scores)},
    }


def _tokenizer_config(sp, cfg: GPTConfig) -> dict:
    eos, unk, pad = sp.id_to_piece(sp.eos_id()), sp.id_to_piece(sp.unk_id()), sp.id_to_piece(sp.pad_id())
    return {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": cfg.block_size,
            "bos_token": eos, "eos_token": eos, "unk_token": unk, "pad_token": pad,
            "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False}
