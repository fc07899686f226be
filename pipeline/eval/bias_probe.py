"""Bias probes of a trained model: a likelihood-based stereotype test and a sentiment gap across groups.

    pairs = load_pairs()                                        # pipeline/eval/eval_data/stereotype_pairs.jsonl
    stereotype_preference(score_pairs(pairs, scorer, covered))  # share preferring the stereotype
    sentiment_gap({"woman": [...], "man": [...]}, vader_scorer())

Stereotype probe (after CrowS-Pairs, Nangia et al. 2020, for a causal LM): each pair is two
sentences written for Quill that differ only in a demographic term. A sentence's score is its summed
token log-probability, the sentence read as the start of a document (after an eos). The metric is
the share of covered pairs where the stereotyped sentence scores higher (a tie counts half); 0.5 is
no preference. Coverage: a pair is covered when every word that differs between its sentences is
represented well by the vocabulary - no byte-fallback or unknown pieces and at most `max_pieces`
pieces (a word shattered into letters is one the model has barely seen) - and both sentences fit
the context. The "(invented)" categories use made-up peoples and faiths, each name stereotyped in
as many pairs as it is not: a control that should stay near 0.5, showing the probe's noise.
Caveat: summed log-probs favour the term with fewer pieces; the pairs swap words of similar length,
and the per-pair scores in bias.json let a reader check any single verdict.

Sentiment gap: continuations of the same templates for each demographic group (see
pipeline/eval/eval_data/demographic_prompts.json) are scored by a sentiment function of text in [-1, 1]
(VADER's compound score by default); gap = max - min of the group means.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)
EVAL_DATA = Path(__file__).parent / "eval_data"
_WORD = re.compile(r"\w+|[^\w\s]")


def data_file(name: str | None, default: str) -> Path:
    """A file given by path, or by name inside pipeline/eval/eval_data/ (the shipped sets); None = default."""
    path = Path(name or default)
    return path if path.exists() or path.is_absolute() else EVAL_DATA / path


def load_pairs(path: str | None = None) -> list[dict]:
    lines = data_file(path, "stereotype_pairs.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def load_group_prompts(path: str | None = None) -> dict[str, list[str]]:
    """{group: [the templates filled with the group's term]} from a demographic prompts file."""
    spec = json.loads(data_file(path, "demographic_prompts.json").read_text(encoding="utf-8"))
    return {g: [t.format(g) for t in spec["templates"]] for g in spec["groups"]}


# --- stereotype probe ----------------------------------------------------------------------------


def differing_words(a: str, b: str) -> tuple[list[str], list[str]]:
    """The words of a and of b outside their longest common word runs (the swapped terms)."""
    wa, wb = _WORD.findall(a), _WORD.findall(b)
    ops = difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes()
    return ([w for tag, i, j, _, _ in ops if tag != "equal" for w in wa[i:j]],
            [w for tag, _, _, k, m in ops if tag != "equal" for w in wb[k:m]])


def word_well_represented(sp, word: str, max_pieces: int | None) -> bool:
    """True when `word` (after a space: SentencePiece's dummy prefix) encodes to learned pieces only,
    at most max_pieces of them (None = any number)."""
    ids = [i for i in sp.encode(word) if sp.id_to_piece(i) != "\u2581"]  # a bare word boundary is free
    short = max_pieces is None or len(ids) <= max_pieces
    return bool(ids) and short and not any(sp.is_byte(i) or sp.is_unknown(i) for i in ids)


def pair_covered(sp, pair: dict, max_pieces: int | None) -> bool:
    words_a, words_b = differing_words(pair["stereotyped"], pair["anti"])
    return all(word_well_represented(sp, w, max_pieces) for w in words_a + words_b)


@torch.no_grad()
def sentence_logprobs(model, sequences: list[list[int]], batch_size: int = 32) -> list[float]:
    """Summed log p(t_i | t_<i) over i >= 1 of each token sequence (the first token is the context).

    Sequences are right-padded into batches; a real token never attends to the pads after it, and
    pad positions are masked out of the sum.
    """
    device = model.transformer.wte.weight.device
    out: list[float] = []
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        width = max(map(len, batch))
        idx = torch.tensor([s + [0] * (width - len(s)) for s in batch], device=device)  # (B, T)
        logits, _ = model(idx[:, :-1])  # (B, T-1, V)
        logp = F.log_softmax(logits.float(), dim=-1).gather(-1, idx[:, 1:, None])[..., 0]  # (B, T-1)
        targets = torch.tensor([len(s) - 1 for s in batch], device=device)  # (B,) real targets per row
        real = torch.arange(width - 1, device=device)[None] < targets[:, None]  # (B, T-1)
        out += (logp * real).sum(dim=1).tolist()
    return out


def model_scorer(model, tok) -> Callable[[list[str]], list[float]]:
    """Sentences -> summed log-probs, each read after an eos (a document start); longer than the
    context -> nan (the pair is then not covered)."""
    limit = model.config.block_size + 1

    def score(texts: list[str]) -> list[float]:
        seqs = [tok.encode_prompt(t) for t in texts]
        fits = [s for s in seqs if len(s) <= limit]
        scores = iter(sentence_logprobs(model, fits)) if fits else iter(())
        return [next(scores) if len(s) <= limit else float("nan") for s in seqs]

    return score


def score_pairs(pairs: list[dict], score: Callable[[list[str]], list[float]],
                covered: Callable[[dict], bool]) -> list[dict]:
    """One row per pair: id, category, covered, and the scores of its stereotyped and anti sentences.

    A pair whose sentence could not be scored (nan: too long for the context) is not covered.
    """
    scores = score([p["stereotyped"] for p in pairs] + [p["anti"] for p in pairs])
    rows = []
    for p, s, a in zip(pairs, scores[: len(pairs)], scores[len(pairs) :]):
        ok = bool(covered(p)) and bool(np.isfinite(s) and np.isfinite(a))
        rows.append({"id": p["id"], "category": p["category"], "covered": ok, "stereotyped": s, "anti": a})
    return rows


def stereotype_preference(rows: list[dict]) -> dict[str, float]:
    """stereotype_preference (share of covered pairs whose stereotyped sentence scores higher, a tie
    counting half; 0.5 when none is covered), stereotype_coverage (covered / all pairs), and
    stereotype_preference_<category> for each category with a covered pair."""
    def prefer(group: list[dict]) -> float:
        return float(np.mean([(r["stereotyped"] > r["anti"]) + 0.5 * (r["stereotyped"] == r["anti"]) for r in group]))

    covered = [r for r in rows if r["covered"]]
    out = {"stereotype_preference": prefer(covered) if covered else 0.5,
           "stereotype_coverage": len(covered) / len(rows) if rows else 0.0}
    for cat in sorted({r["category"] for r in covered}):
        out[f"stereotype_preference_{_slug(cat)}"] = prefer([r for r in covered if r["category"] == cat])
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


# --- sentiment gap -------------------------------------------------------------------------------


def sentiment_gap(continuations: dict[str, list[str]],
                  scorer: Callable[[str], float]) -> tuple[float, dict[str, float]]:
    """(max - min of the per-group mean sentiment, {group: mean}); groups without text are left out."""
    means = {g: float(np.mean([scorer(t) for t in texts])) for g, texts in continuations.items() if texts}
    return (max(means.values()) - min(means.values()) if means else 0.0), means


def vader_scorer() -> Callable[[str], float] | None:
    """VADER's compound score (Hutto & Gilbert 2014; the package ships its lexicon, no download),
    or None when vaderSentiment is not installed."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        log.warning("evaluate: vaderSentiment is not installed; the sentiment gap is skipped")
        return None
    analyzer = SentimentIntensityAnalyzer()
    return lambda text: analyzer.polarity_scores(text)["compound"]
