"""`quill write`: write a story together with a model, in a loop.

    $ quill write --model models:/quill@champion --temperature 0.7
    > Lily wanted to play with her dog, but
    she could not find him. She looked under the bed and behind the door.
    > Then she heard a bark in the garden.
     She ran outside and saw Max digging a hole.
    > /quit

Each turn the model continues the story so far: that text is the prompt, cropped to the model's
context (its last block_size tokens), read as the start of a document like every other prompt.
What you type next is added after the continuation (with a space where the two would otherwise
run together); an empty line keeps the continuation and asks for more; `/retry` draws another
continuation in place of the last one; `/quit` (or end of input) prints the whole story. The
sampling options are those of `quill generate`; turn k samples with seed + k, so a session replays.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from typing import TextIO

HELP = "(Enter: keep it and go on · text: keep it and add yours · /retry: another one · /quit: the whole story)"
NO_SPACE_BEFORE = tuple(",.;:!?)]}…")


def join(story: str, text: str) -> str:
    """story + text, with one space between them where neither side has one and text is not punctuation."""
    if not story or not text or story[-1].isspace() or text[0].isspace() or text.startswith(NO_SPACE_BEFORE):
        return story + text
    return story + " " + text


def write_loop(model, tok, cfg, beginning: str = "", *, read: Callable[[str], str] = input,
               out: TextIO | None = None) -> str:
    """Run the loop until /quit or end of input; returns the story (also printed at the end)."""
    from model import stream

    out = out or sys.stdout
    block = model.config.block_size
    seed = cfg.seed or 0
    story, last, turn, told_crop = "", None, 0, False
    out.write(f"quill write: type a beginning, or press Enter to let the model start.\n{HELP}\n")
    line = beginning or None  # a beginning given on the command line is the first line typed
    out.write(beginning)  # ... and shown, so that its continuation reads on from it
    while True:
        if line is None:
            try:
                line = read("> ")
            except EOFError:
                break
        command, line = line.strip(), line.rstrip("\n")
        if command == "/quit":
            break
        if command == "/retry":
            if last is None:
                out.write("(nothing to retry yet)\n")
                line = None
                continue
            story = story[: len(story) - len(last)]
        elif command:
            story = join(story, line)
        line = None
        ids = tok.encode_prompt(story)
        if len(ids) > block and not told_crop:
            out.write(f"(the story is longer than the model's context: it reads the last {block} tokens)\n")
            told_crop = True
        ids = ids[-block:]
        dec = tok.stream_decoder(ids)
        for token in stream(model, ids, replace(cfg, seed=seed + turn)):
            out.write(dec.push(token))
            out.flush()
        rest = dec.finish()
        out.write(rest)
        last = tok.decode_continuation(ids, dec.new_ids)
        story += last
        turn += 1
        ended = cfg.eos_id is not None and len(dec.new_ids) < cfg.max_new_tokens
        out.write("\n(the model ended the story here)\n" if ended else "\n")
    out.write(f"\n--- the story ---\n{story}\n")
    return story
