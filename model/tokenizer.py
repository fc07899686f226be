"""SentencePiece tokenizer: training from an iterator of documents, encode/decode, token byte lengths.

Settings chosen so that every string round-trips (`decode(encode(s)) == s`): identity
normalisation, no whitespace folding, byte fallback for characters outside the vocabulary, and
newline as its own piece so poems keep their line breaks. Training reads a bounded, seeded sample:
SentencePiece keeps a reservoir of `input_sentence_size` documents (seeded, then shuffled) while
the iterator streams the corpus once, and documents longer than SentencePiece's sentence limit are
cut at line breaks into pieces instead of being silently skipped.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import sentencepiece as spm

UNK, BOS, EOS, PAD = 0, 1, 2, 3
# SentencePiece skips training "sentences" longer than max_sentence_length bytes. Pieces of at most
# this many characters stay under it even at 4 UTF-8 bytes per character.
MAX_SENTENCE_BYTES = 1 << 16
TRAIN_PIECE_CHARS = MAX_SENTENCE_BYTES // 4


def training_pieces(texts: Iterable[str], max_chars: int = TRAIN_PIECE_CHARS) -> Iterator[str]:
    """Documents as they are, except long ones cut at line breaks (hard cuts only for huge lines)."""
    for text in texts:
        if len(text) <= max_chars:
            yield text
            continue
        start = 0
        while start < len(text):
            end = min(len(text), start + max_chars)
            if end < len(text):
                cut = text.rfind("\n", start, end)
                end = cut + 1 if cut > start else end
            yield text[start:end]
            start = end


def train_tokenizer(
    texts: Iterable[str],
    out_path: Path,
    vocab_size: int,
    model_type: str = "bpe",
    character_coverage: float = 0.9995,
    control_tokens: list[str] = (),
    input_sentence_size: int = 0,
    seed: int = 1337,
    dummy_prefix: bool = False,
) -> Tokenizer:
    """Train SentencePiece on `texts` and write the model file atomically to `out_path`.

    `dummy_prefix=True` makes a tokenizer as Quill trained them before 0.2 (a "▁" before every encoded text),
    which registered models still carry."""
    buf = io.BytesIO()
    spm.set_random_generator_seed(seed)  # sentence sampling and shuffling
    try:
        _train(texts, buf, vocab_size, model_type, character_coverage, control_tokens, input_sentence_size,
               dummy_prefix)
    except RuntimeError as exc:
        if "Vocabulary size is smaller than required_chars" in str(exc):
            need = str(exc).split("required_chars. ")[1].split(".")[0].split(" vs ")[-1]
            raise ValueError(
                f"tokenize.vocab_size={vocab_size} is too small for this corpus (it needs at least {need}); byte "
                "fallback reserves 256 pieces plus one per covered character: raise vocab_size or lower "
                "character_coverage"
            ) from exc
        raise
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out_path)
    return Tokenizer(out_path)


def _train(texts, buf, vocab_size, model_type, character_coverage, control_tokens, input_sentence_size,
           dummy_prefix) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=training_pieces(texts),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        byte_fallback=True,
        normalization_rule_name="identity",
        # No "▁" before each document: the text's own bytes are all the tokens hold, so bits per byte
        # (token_bytes) counts exactly the document's UTF-8 bytes.
        add_dummy_prefix=dummy_prefix,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        user_defined_symbols=["\n", *control_tokens],
        unk_id=UNK, bos_id=BOS, eos_id=EOS, pad_id=PAD,
        input_sentence_size=input_sentence_size,
        shuffle_input_sentence=True,
        max_sentence_length=MAX_SENTENCE_BYTES,  # documents, not sentences: allow long ones
        # A small corpus may not fill the vocabulary; a slightly smaller one beats a crash.
        hard_vocab_limit=False,
        num_threads=1,  # deterministic output for the same input and seed
        minloglevel=2,
    )


class Tokenizer:
    """Thin wrapper over a SentencePiece model file."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        self.vocab_size = self.sp.get_piece_size()
        self.eos_id, self.bos_id, self.pad_id = self.sp.eos_id(), self.sp.bos_id(), self.sp.pad_id()
        # Tokenizers trained before add_dummy_prefix=False put a "▁" (one byte in token_bytes) before every
        # encoded text that the text does not hold.
        self.dummy_prefix = self.sp.encode("a", out_type=str)[0].startswith("\u2581")

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt is the start of a document: eos first, as documents follow one in the training stream."""
        return [self.eos_id] + self.sp.encode(text)

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        return self.sp.encode(texts, num_threads=num_threads)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if i != self.eos_id])

    def decode_continuation(self, prompt_ids: list[int], new_ids: list[int]) -> str:
        """The text `new_ids` add after `prompt_ids`, spelled as in the whole (prompt + continuation).

        Decoded on its own, a continuation loses the space of its first piece ("▁she" -> "she":
        SentencePiece drops the space it puts before a text), and a character whose bytes straddle the
        boundary decodes as U+FFFD on both sides. Decoding the whole and cutting off the decoded prompt
        keeps both; where the prompt's decoding is not a prefix of the whole (a prompt that ends inside
        a character), the cut is at their common prefix.
        """
        head = self.decode(prompt_ids)
        full = self.decode([*prompt_ids, *new_ids])
        if full.startswith(head):
            return full[len(head):]
        return full[len(os.path.commonprefix([head, full])):]

    def stream_decoder(self, prompt_ids: list[int]) -> StreamDecoder:
        return StreamDecoder(self, prompt_ids)

    def token_bytes(self) -> list[int]:
        """UTF-8 byte length of each piece ('▁' is a space); 0 for control and unknown pieces."""
        pieces = self.sp.id_to_piece(list(range(self.vocab_size)))
        return [self._piece_bytes(i, piece) for i, piece in enumerate(pieces)]

    def _piece_bytes(self, i: int, piece: str) -> int:
        # Control, unknown and byte pieces are all spelled <...>: only those need the (slower) type checks.
        if piece.startswith("<"):
            if self.sp.is_control(i) or self.sp.is_unknown(i) or (piece.startswith("<|") and piece.endswith("|>")):
                return 0
            if self.sp.is_byte(i):
                return 1
        return len(piece.replace("\u2581", " ").encode("utf-8"))


class StreamDecoder:
    """Text of a continuation as its tokens arrive, for printing as it is written.

        dec = tok.stream_decoder(prompt_ids)
        for t in stream(model, prompt_ids, cfg):
            print(dec.push(t), end="", flush=True)
        print(dec.finish())

    Each push returns only settled text: what it returns, joined, is always a prefix of
    `decode_continuation(prompt_ids, new_ids)`, and with finish() all of it. The bytes of a character
    that byte-fallback pieces have only begun are held back until the character is complete (or
    until a non-byte piece or finish() shows it never will be), instead of printing U+FFFD.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int]):
        self.tokenizer = tokenizer
        self.prompt_ids = list(prompt_ids)
        self.new_ids: list[int] = []
        self.shown = ""

    def push(self, token: int) -> str:
        self.new_ids.append(token)
        text = self.tokenizer.decode_continuation(self.prompt_ids, self.new_ids)
        if self.tokenizer.sp.is_byte(token):
            text = text.rstrip("\ufffd")  # maybe a character still being spelled byte by byte
        return self._advance(text)

    def finish(self) -> str:
        """The held-back rest (an unfinished character decodes as U+FFFD, as in decode_continuation)."""
        return self._advance(self.tokenizer.decode_continuation(self.prompt_ids, self.new_ids))

    def _advance(self, text: str) -> str:
        if len(text) <= len(self.shown):
            return ""
        out, self.shown = text[len(self.shown):], text
        return out
