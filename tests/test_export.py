"""`quill export --format hf`: a transformers folder that loads offline and computes what Quill computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model import GPT, GPTConfig, save_checkpoint
from model.hf_export import ExportError, architecture, export_hf
from model.tokenizer import Tokenizer, train_tokenizer
from tests.conftest import POEM, STORIES

transformers = pytest.importorskip("transformers", reason="the export test needs transformers (the test extra)")

PROMPTS = ["Once upon a time", "The moon is a coin\nin the pocket of night;", "  two spaces,\n\nthen a blank line",
           "Grandmother's café served crème brûlée — 42 times!", "ünïcödé ☃ 漢字 fallback", "a\n", "x"]


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    train_tokenizer(STORIES * 3 + [POEM] * 3, path, vocab_size=400, control_tokens=["<|sep|>"])
    return path


def sharp_model(cfg: GPTConfig, seed: int = 0) -> GPT:
    """A GPT whose weights are far from init (non-trivial logits, biases, LayerNorm gains), so a wrong
    layout in the export shows up as a large difference."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p) if p.dim() > 1 else 0.1 * torch.randn_like(p))
    return model.eval()


CONFIGS = {
    "rope": dict(pos_encoding="rope"),
    "rope-bias-untied": dict(pos_encoding="rope", bias=True, tie_weights=False, mlp_ratio=2),
    "learned-bias": dict(pos_encoding="learned", bias=True),
    "sinusoidal-untied": dict(pos_encoding="sinusoidal", tie_weights=False),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_exported_model_gives_quills_logits(name, tokenizer_file, tmp_path):
    vocab = Tokenizer(tokenizer_file).vocab_size
    cfg = GPTConfig(vocab_size=vocab, block_size=48, n_layer=2, n_head=4, n_embd=32, **CONFIGS[name])
    model = sharp_model(cfg)
    ckpt = save_checkpoint(tmp_path / "ckpt", model, cfg, tokenizer_file)
    out = export_hf(ckpt, tmp_path / "hf", model_card="# card\n")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "MODEL_CARD.md"} <= {
        p.name for p in out.iterdir()}

    hf = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert type(hf).__name__ == architecture(cfg)
    tok = Tokenizer(tokenizer_file)
    for prompt in PROMPTS:
        ids = torch.tensor([tok.encode_prompt(prompt)])
        with torch.no_grad():
            ours = model(ids)[0]
            theirs = hf(ids).logits
        assert ours.abs().max() > 1.0  # logits far from uniform: the comparison can tell layouts apart
        assert torch.allclose(ours, theirs, atol=1e-4, rtol=0), (prompt, (ours - theirs).abs().max())


def test_exported_tokenizer_encodes_and_decodes_as_sentencepiece(tokenizer_file, tmp_path):
    from tests.conftest import sample_texts

    cfg = GPTConfig(vocab_size=Tokenizer(tokenizer_file).vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)
    out = export_hf(save_checkpoint(tmp_path / "ckpt", GPT(cfg), cfg, tokenizer_file), tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    tok = Tokenizer(tokenizer_file)
    texts = PROMPTS + STORIES + [POEM, "<|sep|> between <|sep|>", "tabs\tand\r\nCRLF", ""] + sample_texts()
    for text in texts:
        ids = tok.encode(text)
        assert hf_tok.encode(text, add_special_tokens=False) == ids, text[:80]
        assert hf_tok.decode(ids) == tok.decode(ids) == text
    assert hf_tok.eos_token_id == tok.eos_id


def test_qk_norm_is_refused_with_a_reason(tokenizer_file, tmp_path):
    cfg = GPTConfig(vocab_size=Tokenizer(tokenizer_file).vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16,
                    qk_norm=True)
    ckpt = save_checkpoint(tmp_path / "ckpt", GPT(cfg), cfg, tokenizer_file)
    with pytest.raises(ExportError, match="qk_norm"):
        export_hf(ckpt, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_quill_export_command_writes_the_folder_and_card(tokenizer_file, tmp_path, capsys):
    from flows.cli import main

    cfg = GPTConfig(vocab_size=Tokenizer(tokenizer_file).vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)
    ckpt = save_checkpoint(tmp_path / "ckpt", GPT(cfg), cfg, tokenizer_file)
    (ckpt / "MODEL_CARD.md").write_text("# quill version 7\n", encoding="utf-8")
    assert main(["export", "--model", str(ckpt), "--format", "hf", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "MODEL_CARD.md").read_text(encoding="utf-8") == "# quill version 7\n"
    assert "GPTNeoXForCausalLM" in capsys.readouterr().out
    bad = GPTConfig(vocab_size=cfg.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16, qk_norm=True)
    save_checkpoint(tmp_path / "qk", GPT(bad), bad, tokenizer_file)
    assert main(["export", "--model", str(tmp_path / "qk"), "--format", "hf", str(tmp_path / "out2")]) == 2
    assert "qk_norm" in capsys.readouterr().err
