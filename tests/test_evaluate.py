"""Evaluation: each metric against a hand-computed example, the probes with stub scorers, and the
stage end to end on a tiny trained model (outputs, determinism, KV cache == recompute)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.eval import bias_probe
from pipeline.eval import metrics as em
from tests.conftest import passed_through

pytestmark = pytest.mark.usefixtures("one_thread")


# --- sample metrics, by hand -------------------------------------------------------------------


def test_distinct_n():
    samples = [[1, 2, 3, 1, 2], [1, 2, 4]]
    assert em.distinct_n(samples, 1) == 4 / 8  # {1, 2, 3, 4} of 8 tokens
    assert em.distinct_n(samples, 2) == 4 / 6  # (1,2) three times, (2,3), (3,1), (2,4)
    assert em.distinct_n(samples, 3) == 1.0
    assert em.distinct_n([[1]], 2) == 0.0


def test_seq_rep_4():
    # 1234 2341 3412 4123 1234: 4 unique of 5 -> 0.2; [5..8] has one 4-gram -> 0; [1, 2] has none: left out
    assert em.seq_rep_n([[1, 2, 3, 4, 1, 2, 3, 4], [5, 6, 7, 8], [1, 2]], 4) == pytest.approx(0.1)
    assert em.seq_rep_n([[1, 2]], 4) == 0.0


def test_bleu_by_hand():
    # p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0 -> 0.1 (smoothing); equal lengths: no brevity penalty
    assert em.bleu([1, 2, 3, 4], [[1, 2, 3, 5]]) == pytest.approx((0.75 * 2 / 3 * 0.5 * 0.1) ** 0.25)
    # clipping: 7 occurs twice in the reference, so 2 of the 4 unigrams match; (7,7) once of 3
    assert em.bleu([7, 7, 7, 7], [[7, 7, 8]]) == pytest.approx((0.5 * (1 / 3) * (0.1 / 2) * 0.1) ** 0.25)
    # brevity: c = 2, the closest reference length is 3 -> BP = exp(1 - 3/2); no 3- or 4-grams -> 0.1 each
    assert em.bleu([1, 2], [[1, 2, 3, 4], [1, 2, 3]]) == pytest.approx(math.exp(-0.5) * (0.1 * 0.1) ** 0.25)
    assert em.bleu([], [[1]]) == 0.0 and em.bleu([1], []) == 0.0


def test_self_bleu():
    assert em.self_bleu([[1, 2, 3, 4], [1, 2, 3, 4]]) == pytest.approx(1.0)
    assert em.self_bleu([[1, 2, 3, 4], [1, 2, 3, 5]]) == pytest.approx((0.75 * 2 / 3 * 0.5 * 0.1) ** 0.25)
    assert em.self_bleu([[1, 2, 3]]) == 0.0  # nothing to compare with


def test_eos_share_and_mean_length():
    assert em.share([True, False, False, True]) == 0.5 and em.share([]) == 0.0
    assert em.mean_length([[1, 2], [1, 2, 3, 4]]) == 3.0


def test_ngram_hashes_match_equal_ngrams_only():
    h = em.ngram_hashes(np.array([1, 2, 3, 1, 2, 3, 0]), 3)
    assert len(h) == 5 and h[0] == h[3] and len(set(h.tolist())) == 4
    assert em.ngram_hashes(np.array([1, 2]), 3).size == 0


@pytest.mark.parametrize("chunk", [2, 3, 1 << 22])  # chunks smaller than n must carry the overlap
def test_memorised_share(chunk):
    train = [np.array([1, 2, 3, 4, 5]), np.array([6, 7, 8])]  # one stream: (4, 5, 6) crosses the shards
    # (3,4,5) and (4,5,6) are in the training stream, (9,9,9) is not
    assert em.memorised_share([[3, 4, 5, 6], [9, 9, 9]], train, n=3, chunk=chunk) == pytest.approx(2 / 3)
    # repeats count: 345 twice (found), 453 and 534 once each (not found)
    assert em.memorised_share([[3, 4, 5, 3, 4, 5]], train, n=3, chunk=chunk) == 0.5
    assert em.memorised_share([[1, 2]], train, n=3) == 0.0


# --- bias probes with stub scorers ---------------------------------------------------------------


def test_stereotype_preference_with_stub_scorer():
    pairs = [{"id": str(i), "category": cat, "stereotyped": f"S{i}", "anti": f"A{i}"}
             for i, cat in enumerate(["x", "x", "y", "y", "y", "x"])]
    scores = {"S0": -1, "A0": -2,   # prefers the stereotype
              "S1": -3, "A1": -1,   # prefers the anti-stereotype
              "S2": -1, "A2": -1,   # tie: half
              "S3": -1, "A3": -4,   # prefers the stereotype
              "S4": 0, "A4": -9,    # not covered (stub says so)
              "S5": float("nan"), "A5": -1}  # could not be scored: not covered
    rows = bias_probe.score_pairs(pairs, lambda texts: [scores[t] for t in texts], lambda p: p["id"] != "4")
    assert [r["covered"] for r in rows] == [True, True, True, True, False, False]
    out = bias_probe.stereotype_preference(rows)
    assert out["stereotype_preference"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert out["stereotype_coverage"] == pytest.approx(4 / 6)
    assert out["stereotype_preference_x"] == 0.5 and out["stereotype_preference_y"] == 0.75


def test_sentiment_gap_with_stub_scorer():
    def scorer(text: str) -> float:
        return text.count("good") - text.count("bad")

    gap, means = bias_probe.sentiment_gap({"a": ["good", "good bad"], "b": ["bad"], "c": []}, scorer)
    assert means == {"a": 0.5, "b": -1.0} and gap == 1.5


def test_differing_words():
    a, b = bias_probe.differing_words("The old man was sad.", "The young man was sad.")
    assert (a, b) == (["old"], ["young"])


def test_shipped_eval_data():
    pairs = bias_probe.load_pairs()
    assert len(pairs) >= 40 and len({p["id"] for p in pairs}) == len(pairs)
    for p in pairs:
        words = bias_probe.differing_words(p["stereotyped"], p["anti"])
        assert words[0] and words[1], p["id"]
    groups = bias_probe.load_group_prompts()
    assert len(groups) >= 4 and len({len(v) for v in groups.values()}) == 1


def test_prompt_file(tmp_path):
    from pipeline.config import EvaluateConfig
    from pipeline.evaluate import load_prompts

    assert load_prompts(EvaluateConfig(prompts=["A"])) == ["A"]
    assert len(load_prompts(EvaluateConfig(prompt_file="prompts.txt"))) >= 5  # the shipped set, by name
    (tmp_path / "p.json").write_text('["One", "Two"]')
    assert load_prompts(EvaluateConfig(prompt_file=str(tmp_path / "p.json"))) == ["One", "Two"]


def test_eos_stop_flag_from_generation(monkeypatch):
    """A row shorter than max_new_tokens ended on eos (generate leaves the eos out)."""
    import pipeline.evaluate as ev
    from model import SamplingConfig

    class Tok:
        eos_id = 2

        def encode_prompt(self, text):
            return [self.eos_id] + [5] * len(text)

        def decode_continuation(self, prompt_ids, ids):
            return "x" * len(ids)

    monkeypatch.setattr(ev, "generate", lambda model, ids, cfg, use_cache: [[7, 7], [7, 7, 7, 7]][: len(ids)])
    rows = ev.sample_rows(None, Tok(), ["ab"], SamplingConfig(max_new_tokens=4, seed=0), n=2)
    assert [r["stopped_on_eos"] for r in rows] == [True, False]
    assert [r["text"] for r in rows] == ["abxx", "abxxxx"]


# --- the stage on a tiny trained model ----------------------------------------------------------

EVAL = dict(max_new_tokens=12, samples_per_prompt=2, bias_max_new_tokens=6, bias_samples_per_prompt=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus_dir_module):
    """ingest -> clean, filter (keeping all) -> tokenize -> train (a few steps) on the small corpus."""
    from pipeline.config import IngestConfig, ModelConfig, TokenizeConfig, TrainConfig
    from pipeline.ingest import ingest
    from pipeline.tokenize import tokenize
    from pipeline.train import train

    run = tmp_path_factory.mktemp("eval") / "run"
    m = passed_through(ingest([str(corpus_dir_module)], run / "ingest", IngestConfig()), run)
    m = tokenize(m.path, run / "tokenize", TokenizeConfig(vocab_size=400, val_fraction=0.2))
    return train(m.path, run / "train", TrainConfig(max_steps=4, batch_size=4, eval_every=4, warmup_steps=1),
                 ModelConfig(block_size=32, n_layer=2, n_head=2, n_embd=32))


@pytest.fixture(scope="module")
def evaluated(trained):
    from pipeline.config import EvaluateConfig
    from pipeline.evaluate import evaluate

    return evaluate(trained.path, trained.run_dir / "evaluate", EvaluateConfig(**EVAL))


def test_stage_writes_outputs(evaluated):
    m = evaluated
    for name in ("metrics", "samples", "bias", "attention_map", "report", "report_html"):
        assert m.output(name).is_file(), name
    metrics = json.loads(m.output("metrics").read_text())
    for key in ("val_loss", "val_perplexity", "val_bpb", "val_bpc", "distinct_1", "distinct_2", "distinct_3",
                "self_bleu", "seq_rep_4", "mean_length", "eos_stop_rate", "memorised_ngram_rate", "novelty",
                "offensive_sample_rate", "stereotype_preference", "stereotype_coverage"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
        assert m.stats[key] == metrics[key]
    samples = [json.loads(line) for line in m.output("samples").read_text().splitlines()]
    assert len(samples) == 3 * EVAL["samples_per_prompt"]  # the default prompts
    assert metrics["eos_stop_rate"] == em.share(s["stopped_on_eos"] for s in samples)
    assert m.output("attention_map").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = m.output("report_html").read_text()
    assert page.count("data:image/png;base64,") == 2  # loss curve and attention map, inlined
    assert "val_bpb" in m.output("report").read_text()
    json.loads(m.output("bias").read_text())  # strict JSON: no NaN


def test_seeded_stage_is_reproducible(evaluated, trained):
    from pipeline.config import EvaluateConfig
    from pipeline.evaluate import evaluate

    again = evaluate(trained.path, trained.run_dir / "evaluate_again", EvaluateConfig(**EVAL))
    assert again.output("samples").read_text() == evaluated.output("samples").read_text()
    assert again.output("metrics").read_text() == evaluated.output("metrics").read_text()


def test_greedy_is_deterministic_and_cache_equals_recompute(trained):
    from model import load_checkpoint
    from model.tokenizer import Tokenizer
    from pipeline.config import EvaluateConfig
    from pipeline.evaluate import sample_rows, sampling_config

    ckpt = trained.output("checkpoint")
    model, _, _ = load_checkpoint(ckpt)
    tok = Tokenizer(ckpt / "tokenizer.model")
    # 40 new tokens after a prompt pass block_size 32: the crop-and-recompute path is covered too
    greedy = sampling_config(EvaluateConfig(temperature=0), tok.eos_id, 40, seed=1)
    prompts = ["Once upon a time", "The moon"]
    first = sample_rows(model, tok, prompts, greedy, n=2)
    assert first == sample_rows(model, tok, prompts, greedy, n=2)
    assert first[0]["new_tokens"] == first[1]["new_tokens"]  # greedy: the two samples of a prompt agree
    assert first == sample_rows(model, tok, prompts, greedy, n=2, use_cache=False)


def test_word_coverage_uses_the_vocabulary(trained):
    from model.tokenizer import Tokenizer

    sp = Tokenizer(trained.output("checkpoint") / "tokenizer.model").sp
    assert bias_probe.word_well_represented(sp, "the", None)
    assert not bias_probe.word_well_represented(sp, "\u0436\u0443\u043a", None)  # Cyrillic: byte fallback only


def test_bleu_and_self_bleu_equal_nltks_on_words():
    """Checked against the standard implementation: NLTK's sentence_bleu with smoothing method 1 (Texygen's
    Self-BLEU), on word lists drawn from the sample corpus."""
    import random

    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score", reason="nltk is in the test extra")
    from tests.conftest import sample_texts

    smooth = nltk_bleu.SmoothingFunction().method1
    rng = random.Random(0)
    texts = [em.words(t) for t in sample_texts() if len(em.words(t)) > 3]
    for _ in range(200):
        hyp = rng.choice(texts)[: rng.randint(1, 30)]
        refs = [t[: rng.randint(1, 40)] for t in rng.sample(texts, rng.randint(1, 4))]
        ours = em.bleu(hyp, refs)
        assert ours == pytest.approx(nltk_bleu.sentence_bleu(refs, hyp, smoothing_function=smooth), abs=1e-12)
    pool = [t[:25] for t in texts[:12]]
    theirs = [nltk_bleu.sentence_bleu(pool[:i] + pool[i + 1:], s, smoothing_function=smooth)
              for i, s in enumerate(pool)]
    assert em.self_bleu(pool) == pytest.approx(sum(theirs) / len(theirs), abs=1e-12)


def test_diversity_is_measured_on_words():
    assert em.words("Don't stop; the fox's den!") == ["don't", "stop", ";", "the", "fox's", "den", "!"]
    said = [em.words("the fox ran"), em.words("The fox sat")]
    assert em.distinct_n(said, 1) == 4 / 6 and em.distinct_n(said, 2) == 3 / 4
