"""Continuations keep their spaces, generation stops at end-of-text, and `quill write` writes in a loop.

The tokenizer is a real SentencePiece model trained on the fixture stories: its pieces carry "▁" (a
word's leading space), and characters outside its vocabulary fall back to byte pieces.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import GPT, GPTConfig, save_checkpoint
from model.tokenizer import Tokenizer, train_tokenizer

from .conftest import POEM, STORIES

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "Lily wanted to play with her dog, but"
WRITTEN = " she ran to 🐶 home"  # "▁she" first; the dog emoji is four byte pieces


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    """A tokenizer as Quill trained them before 0.2 (registered models still carry one): every encoded text gets
    a dummy-prefix "▁", which decoding new tokens on their own drops, hence the lost space."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    return train_tokenizer(STORIES * 3 + [POEM], path, vocab_size=400, dummy_prefix=True)


def test_a_current_tokenizer_reads_as_written_too(tmp_path):
    current = train_tokenizer(STORIES * 3 + [POEM], tmp_path / "tokenizer.model", vocab_size=400)
    assert not current.dummy_prefix
    ids = current.encode_prompt(PROMPT)
    new = current.encode(PROMPT + WRITTEN)[len(ids) - 1:]  # what a model writes after the prompt
    assert current.decode(current.encode(PROMPT + WRITTEN)) == PROMPT + WRITTEN
    assert PROMPT + current.decode_continuation(ids, new) == PROMPT + WRITTEN


def test_pieces_carry_the_space_and_bytes(tok):
    pieces = tok.sp.id_to_piece(tok.encode(WRITTEN.lstrip()))
    assert pieces[0] == "\u2581she"
    assert sum(tok.sp.is_byte(i) for i in tok.encode(WRITTEN)) == 4
    assert tok.decode(tok.encode(WRITTEN.lstrip())) == WRITTEN.lstrip()  # decoded alone, the space is gone


def test_continuation_reads_as_written(tok):
    ids = tok.encode_prompt(PROMPT)
    new = tok.encode(WRITTEN.lstrip())
    assert PROMPT + tok.decode_continuation(ids, new) == PROMPT + WRITTEN
    assert tok.decode_continuation(tok.encode_prompt(""), new) == WRITTEN.lstrip()  # a story's first word: no space
    assert tok.decode_continuation(ids, []) == ""


def test_continuation_across_a_character_split_at_the_boundary(tok):
    """A prompt (e.g. a cropped context) that ends inside a character's bytes: the character is the continuation's."""
    ids = tok.encode("dog 🐶")
    cut = len(ids) - 2  # two of the emoji's four byte pieces on each side
    assert all(tok.sp.is_byte(i) for i in ids[cut - 2:])
    assert tok.decode_continuation(ids[:cut], ids[cut:]) == "🐶"


def test_stream_decoder_prints_settled_text_only(tok):
    ids = tok.encode_prompt(PROMPT)
    new = tok.encode(WRITTEN.lstrip() + " é!")
    dec = tok.stream_decoder(ids)
    parts = [dec.push(t) for t in new]
    assert "".join(parts) + dec.finish() == WRITTEN + " é!"
    assert not any("\ufffd" in p for p in parts)  # half a character is held back, never printed as U+FFFD
    assert parts[0] == " she"


def test_stream_decoder_finish_flushes_an_unfinished_character(tok):
    dec = tok.stream_decoder(tok.encode_prompt(PROMPT))
    first_byte = tok.encode("🐶")[-4]
    assert tok.sp.is_byte(first_byte)
    assert dec.push(first_byte) == ""
    assert dec.finish() == "\ufffd"  # what decode_continuation says of it too


# --- the CLI and the writer on a model that writes WRITTEN, then ends the story ----------------


class Chain(GPT):
    """Greedy decoding walks a fixed chain of tokens, then writes end-of-text; any other token ends at once."""

    def __init__(self, vocab: int, chain: list[int], eos: int, block_size: int = 64):
        super().__init__(GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=1, n_head=1, n_embd=8))
        self.table = torch.full((vocab, vocab), -20.0)
        self.table[:, eos] = 0.0
        for a, b in zip(chain, chain[1:]):
            self.table[a] = -20.0
            self.table[a, b] = 0.0

    def forward(self, idx, targets=None, cache=None):
        super().forward(idx, cache=cache)  # keeps the KV-cache bookkeeping
        return self.table[idx], None


@pytest.fixture
def chain_ckpt(tok, tmp_path, monkeypatch) -> Path:
    """A checkpoint folder whose model, after PROMPT, writes WRITTEN and ends the story."""
    import model as model_pkg

    prompt, new = tok.encode_prompt(PROMPT), tok.encode(WRITTEN.lstrip())
    chain = [prompt[-1], *new]
    assert len(set(chain)) == len(chain), "the chain needs distinct tokens"
    m = Chain(tok.vocab_size, chain, tok.eos_id)
    monkeypatch.setattr(model_pkg, "load_checkpoint", lambda path, device="cpu": (m, m.config, {}))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"")  # what the CLI checks for; loading is the chain's
    (ckpt / "tokenizer.model").write_bytes(tok.path.read_bytes())
    return ckpt


@pytest.fixture
def cli(monkeypatch):
    from flows.cli import main

    for key in ("DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED", "MLFLOW_DISABLE_TELEMETRY",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "PREFECT_LOGGING_EXTRA_LOGGERS"):
        monkeypatch.setenv(key, os.environ.get(key, ""))  # main() sets defaults; restore them afterwards
    return main


@pytest.mark.parametrize("stream", [False, True])
def test_generate_keeps_the_space_and_reports_the_end(cli, chain_ckpt, capsys, stream):
    args = ["generate", PROMPT, "--model", str(chain_ckpt), "--strategy", "greedy", "--max-new-tokens", "30"]
    assert cli(args + ["--stream"] * stream) == 0
    out = capsys.readouterr()
    assert out.out == PROMPT + WRITTEN + "\n"
    assert "1 of 1 samples stopped on their own (end-of-text)" in out.err


def test_generate_json_and_samples_cut_by_max_new_tokens(cli, chain_ckpt, capsys):
    args = ["generate", PROMPT, "--model", str(chain_ckpt), "--strategy", "greedy", "--json", "--n", "2"]
    assert cli(args + ["--max-new-tokens", "2"]) == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert doc["samples"] == [PROMPT + " she r"] * 2 and doc["stopped_on_eos"] == [False, False]  # "▁r" "an"
    assert "0 of 2 samples stopped on their own" in out.err and "reached --max-new-tokens 2" in out.err


def test_write_loop_through_stdin(cli, chain_ckpt, capsys, monkeypatch):
    """Beginning on the command line; Enter keeps going; typed text is added; /retry redraws; /quit ends."""
    import model as model_pkg
    from flows.writer import HELP

    seen = []
    real = model_pkg.stream
    monkeypatch.setattr(model_pkg, "stream", lambda m, ids, cfg, **kw: seen.append(ids) or real(m, ids, cfg, **kw))
    monkeypatch.setattr(sys, "stdin", io.StringIO("\nThe dog barked.\n/retry\n/quit\n"))
    assert cli(["write", PROMPT, "--model", str(chain_ckpt), "--strategy", "greedy"]) == 0
    out = capsys.readouterr().out
    story = PROMPT + WRITTEN + " The dog barked."  # the model ends at once after a word it has no chain for
    assert out.endswith(f"--- the story ---\n{story}\n")
    assert f"{HELP}\n{PROMPT}{WRITTEN}\n(the model ended the story here)" in out  # the beginning, then its continuation
    assert out.count("(the model ended the story here)") == 4  # beginning, Enter, typed text, retry
    tok = Tokenizer(chain_ckpt / "tokenizer.model")
    assert seen == [tok.encode_prompt(PROMPT), tok.encode_prompt(PROMPT + WRITTEN), tok.encode_prompt(story),
                    tok.encode_prompt(story)]


def test_write_crops_the_story_to_the_context(tok, capsys):
    from flows.writer import write_loop
    from model import SamplingConfig

    m = Chain(tok.vocab_size, [], tok.eos_id, block_size=8)
    lines = iter(["A girl found a key in the sand and kept it in her pocket."])
    seen = []

    def read(prompt):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    import model as model_pkg

    real = model_pkg.stream
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_pkg, "stream", lambda mm, ids, cfg, **kw: seen.append(len(ids)) or real(mm, ids, cfg, **kw))
        story = write_loop(m, tok, SamplingConfig(strategy="greedy", eos_id=tok.eos_id), read=read)
    assert story == "A girl found a key in the sand and kept it in her pocket."
    assert seen == [8] and "it reads the last 8 tokens" in capsys.readouterr().out


def test_join_adds_a_space_only_where_needed():
    from flows.writer import join

    assert join("She ran.", "Then") == "She ran. Then"
    assert join("She ran. ", "Then") == "She ran. Then"
    assert join("She ran", ", fast.") == "She ran, fast."
    assert join("", "Once") == "Once"


def test_quill_write_in_a_subprocess(tok, tmp_path):
    """The real entry point, a real (untrained) checkpoint, input piped to stdin."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16)
    ckpt = save_checkpoint(tmp_path / "ckpt", GPT(cfg), cfg, tok.path)
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "write", "--model", str(ckpt), "--max-new-tokens", "4"],
                          input="Once upon a time\nThe fox ran.\n", capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    story = proc.stdout.split("--- the story ---\n")[1]
    assert story.startswith("Once upon a time") and "The fox ran." in story


def test_served_model_and_evaluate_samples_keep_the_space(tok):
    """The pyfunc's predict and the evaluate stage's samples read prompt + continuation as written too."""
    from model import SamplingConfig
    from pipeline.evaluate import sample_rows
    from pipeline.pyfunc import QuillTextGenerator

    prompt = tok.encode_prompt(PROMPT)
    m = Chain(tok.vocab_size, [prompt[-1], *tok.encode(WRITTEN.lstrip())], tok.eos_id)
    served = QuillTextGenerator()
    served.model, served.tokenizer = m, tok
    assert served.predict(None, [PROMPT], params={"strategy": "greedy", "max_new_tokens": 30}) == [PROMPT + WRITTEN]
    rows = sample_rows(m, tok, [PROMPT], SamplingConfig(strategy="greedy", max_new_tokens=30, eos_id=tok.eos_id), n=1)
    assert rows[0]["text"] == PROMPT + WRITTEN and rows[0]["stopped_on_eos"]


# --- `make writer`: the preset and the shipped corpus --------------------------------------------

CORPUS = Path(__file__).resolve().parent.parent / "data" / "tinystories"


def test_writer_preset_reads_the_shipped_corpus_one_story_per_document(tmp_path):
    from pipeline.config import load_config
    from pipeline.ingest import ingest
    from pipeline.io.docshards import iter_docs

    cfg = load_config("writer")
    assert cfg.sources == ["data/tinystories/stories.txt"] and cfg.register.model_name == "quill-writer"
    assert (CORPUS / "LICENSE").read_text().startswith("Community Data License Agreement – Sharing – Version 1.0")
    assert "Eldan" in (CORPUS / "README.md").read_text()  # the attribution the licence asks for
    m = ingest([str(CORPUS / "stories.txt")], tmp_path / "ingest", cfg.ingest)
    docs = [d["text"] for d in iter_docs(m.output_list("docs"))]
    assert m.stats["docs_kept"] == len(docs) == 2317  # 2,316 stories and the cut-off start of one more
    assert docs[0].startswith("One day, a little girl named Lily found a needle in her room.")
    assert docs[0].count("\n") == 2  # its three paragraphs stay together
    assert not any("<|endoftext|>" in d for d in docs)
