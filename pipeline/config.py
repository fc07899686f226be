"""One typed config tree for a whole Quill run, with presets.

Every stage reads only its own section (`cfg.ingest`, `cfg.clean`, ...), so a stage's config hash
changes only when its own knobs change. Descriptions here feed `quill config --help`-style output,
the Prefect UI form and the MLflow params, so they are written once, here.

    from pipeline.config import load_config
    cfg = load_config(preset="tiny", overrides=["train.max_steps=50"])
"""

from __future__ import annotations

import json
import tomllib
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    # Unknown keys are typos in a TOML file or a --set flag: refuse them instead of ignoring them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Keys renamed in 0.2 (one name per concept): old spellings keep working for one release, with a warning.
RENAMED = {"filter.toxicity": "filter.offensive"}


def _warn_renamed(old: str, new: str) -> None:
    warnings.warn(f"config key '{old}' is now '{new}'; the old name stops working in the next release",
                  FutureWarning, stacklevel=2)


def _current_key(key: str) -> str:
    """A dotted --set key with a renamed section spelled the current way (and a warning if it was not)."""
    for old, new in RENAMED.items():
        if key == old or key.startswith(old + "."):
            _warn_renamed(old, new)
            return new + key[len(old):]
    return key


EXECUTOR_DESCRIPTION = (
    "Where the per-shard work runs: 'local' (this process), 'processes' (a process pool of num_workers), 'dask' "
    "(dask.distributed: the surrounding Dask cluster, dask_address, the current client or a local cluster). Output is "
    "byte-identical on any executor, so it is left out of the stage's config hash."
)
WORKERS_DESCRIPTION = "Worker processes, one docs shard each at a time: None = one per CPU core, at most one per shard."


class IngestConfig(Section):
    split: Literal["auto", "work", "file", "paragraph", "separator", "line"] = Field(
        "auto",
        description="How a .txt/.md file splits into documents: 'auto' uses the separator line if the file has one, "
        "else 'work'; 'work' = one document per story, chapter or poem (a file of unwrapped paragraph lines holds one "
        "story per run of lines, a single line break between stories; other files split at chapter and poem headings, "
        "long chapters into windows of whole paragraphs of at most work_max_chars, and a Project Gutenberg header and "
        "licence into documents of their own for clean to cut); 'file' = whole file; 'paragraph' = blank-line "
        "paragraphs; 'line' = one doc per line.",
    )
    work_max_chars: int = Field(
        50_000, ge=1_000, description="split=work: a chapter (or headingless text) longer than this is cut into "
        "windows of whole paragraphs of at most this many characters."
    )
    separators: list[str] = Field(
        ["<|endoftext|>", "%"], description="Lines that separate documents in text files (split=separator/auto)."
    )
    text_field: str = Field("text", description="Field holding the text in JSON/JSONL/CSV/Parquet records (dotted path "
                            "for nested).")
    encoding_errors: Literal["replace", "quarantine"] = Field(
        "replace", description="Invalid UTF-8: decode with U+FFFD and count it, or quarantine the document."
    )
    shard_docs: int = Field(10_000, gt=0, description="Documents per output Parquet shard.")
    shard_mb: float = Field(64, gt=0, description="Text megabytes (UTF-8) per output Parquet shard: a shard rolls over "
                            "at shard_docs documents or this size, whichever comes first (clean and filter keep 10,000 "
                            "/ 64 MB).")
    max_doc_mb: float = Field(
        16, gt=0, description="A document larger than this (usually a mis-split file, e.g. split=paragraph on text "
        "without blank lines) is quarantined as 'too_large' with its first max_doc_mb MB, so one document never fills "
        "memory.",
    )
    cache_dir: str = Field("data/cache", description="Where http(s) sources are downloaded (one folder per URL hash) "
                           "and archives (.tar, .tar.gz, .tgz, .zip) are unpacked (one folder per archive sha256).")
    url_sha256: dict[str, str] = Field(
        {}, description="Pinned sha256 per URL (the URL without '#...'); a source 'URL#sha256=<hex>' pins it inline. A "
        "download whose content does not match is deleted and stops the stage.",
    )
    max_download_mb: float = Field(1024, gt=0, description="Largest download accepted from a URL source (checked "
                                   "against Content-Length and while streaming).")
    download_timeout_s: float = Field(60, gt=0, description="Seconds a URL download may wait for the connection or for "
                                      "the next bytes before it fails.")
    max_extract_mb: float = Field(4096, gt=0, description="Largest total unpacked size accepted from one archive "
                                  "(guards against decompression bombs).")


class CleanConfig(Section):
    unicode_form: Literal["NFC", "NFKC", "none"] = Field("NFC", description="Unicode normalisation form.")
    fix_mojibake: bool = Field(True, description="Repair UTF-8 text that was decoded as Latin-1/CP1252 (e.g. 'cafÃ©').")
    strip_boilerplate: bool = Field(True, description="Remove web boilerplate lines (cookies, javascript, lorem ipsum, "
                                    "navigation).")
    min_chars: int = Field(20, ge=0, description="Documents shorter than this after cleaning are dropped (reason "
                           "'too_short').")
    max_chars: int = Field(200_000, gt=0, description="Documents longer than this are dropped (reason 'too_long').")
    languages: list[str] = Field(["en", "zh"], description="ISO 639-1 codes to keep; empty keeps every language.")
    min_language_score: float = Field(
        0.5, ge=0, le=1, description="Language-id confidence at or above which a document found in a language not in "
        "`languages` is dropped; below it the identifier abstains and the document is kept (a short line of dialogue "
        "is no evidence of a language).",
    )
    executor: Literal["local", "processes", "dask"] = Field("processes", description=EXECUTOR_DESCRIPTION)
    num_workers: int | None = Field(None, ge=1, description=WORKERS_DESCRIPTION)
    dask_address: str | None = Field(None, description="Scheduler of an existing Dask cluster (tcp://host:8786) for "
                                     "executor='dask'.")


class QualityConfig(Section):
    profile: Literal["prose", "poetry", "web"] = Field(
        "prose", description="Rule profile: 'poetry' tolerates short lines, 'web' adds C4/FineWeb line rules."
    )
    min_words: int = Field(10, ge=0, description="Fewer words than this: 'too_few_words' (CJK characters count as "
                           "words).")
    max_words: int = Field(100_000, gt=0, description="More words than this: 'too_many_words'.")
    min_mean_word_len: float = Field(2.0, description="Mean word length below this: 'short_words' (Gopher: 3).")
    max_mean_word_len: float = Field(12.0, description="Mean word length above this: 'long_words' (Gopher: 10).")
    max_symbol_ratio: float = Field(0.1, description="Share of '#' and '...' per word above this: 'symbols'.")
    min_alpha_word_ratio: float = Field(
        0.7, description="Share of words with a letter below this: 'non_alpha' (punctuation is not a word here)."
    )
    max_dup_line_ratio: float = Field(0.3, description="Share of duplicated lines above this: 'repeated_lines' "
                                      "(Gopher).")
    max_top_ngram_ratio: float = Field(0.2, description="Share of chars in the most frequent word 2-gram above this: "
                                       "'repeated_ngrams'.")
    max_dup_line_ratio_poetry: float = Field(
        0.5,
        description="'repeated_lines' threshold for profile 'poetry': refrains and choruses repeat lines, so poems get "
        "more room than Gopher's 0.3 (the same line 30 times still fails).",
    )
    ngram_min_words: int = Field(
        50, ge=2, description="'repeated_ngrams' is only checked from this many words on: in a short poem or dialogue "
        "one repeated phrase is a large share by chance (Gopher applied it to documents of 50+ words)."
    )
    min_stopwords: int = Field(
        2,
        ge=0,
        description="Function words (en/fr/de/es/it/pt/nl lists) needed in Latin-script text of 50+ words, else "
        "'no_stopwords' (Gopher: 2 of 8 English stop words). Shorter texts need 1; catches keyboard mash and word "
        "salad. Not applied to CJK or other scripts.",
    )
    max_no_terminal_punct_ratio: float = Field(
        0.7,
        description="Profile 'web': share of lines not ending in terminal punctuation above this: "
        "'lines_no_terminal_punct'. C4 drops every such line; FineWeb drops the doc when < 12% of lines end in "
        "punctuation (0.88 here); 0.7 (< 30 %) agrees better with people on dclm_web_noisy "
        "(benchmarks/web_agreement.py).",
    )
    max_bullet_line_ratio: float = Field(0.9, description="Profile 'web': share of lines starting with a bullet above "
                                         "this: 'bullet_lines' (Gopher: 0.9).")
    max_ellipsis_line_ratio: float = Field(0.3, description="Profile 'web': share of lines ending in '...'/'…' above "
                                           "this: 'lines_ellipsis' (Gopher: 0.3).")
    short_line_chars: int = Field(30, ge=1, description="Profile 'web': a line shorter than this many characters is "
                                  "short (FineWeb: 30).")
    max_short_line_ratio: float = Field(
        0.67, description="Profile 'web': share of short lines above this: 'short_lines' (FineWeb: 0.67). Never "
        "applied to poetry."
    )
    min_mean_line_chars: float = Field(
        110, ge=0, description="Profile 'web': mean characters per non-empty line below this: 'short_mean_line'. "
        "Pages people rate substantive are written in paragraphs; menus, listings and link lists in short lines "
        "(benchmarks/web_agreement.py). Never applied to prose or poetry, whose lines are short by nature.",
    )
    min_words_web: int = Field(
        80, ge=0, description="Profile 'web': fewer words than this: 'short_page' (checked after the other rules; "
        "people rate short pages low, benchmarks/web_agreement.py). Prose and poetry use min_words only.",
    )


# Literature lines are cut sentences the classifier reads with less context than the posts it learnt from
# (benchmarks/offensive.py measures both sides of each figure).
CLASSIFIER_THRESHOLDS = {"prose": 0.75, "poetry": 0.75, "web": 0.5}


class OffensiveConfig(Section):
    threshold: float = Field(0.5, ge=0, le=1, description="Offensive score at or above which a document (or line) is "
                             "dropped.")
    mode: Literal["document", "line"] = Field(
        "line", description="'document' drops the whole doc; 'line' drops only offending lines of long docs."
    )
    line_mode_min_lines: int = Field(8, ge=1, description="In line mode, docs with fewer lines than this are dropped "
                                     "whole.")
    classifier: Literal["none", "ngram"] = Field(
        "ngram", description="The trained classifier voting beside the lexicon on the same units (lines of long "
        "documents in line mode, else whole texts): 'ngram' is the logistic regression over word and character "
        "n-grams shipped with Quill (DATA_SOURCES.md); 'none' leaves the lexicon alone.")
    classifier_thresholds: dict[Literal["prose", "poetry", "web"], float] = Field(
        default_factory=lambda: dict(CLASSIFIER_THRESHOLDS),
        description="Per quality profile (filter.quality.profile): classifier probability at or above which it votes "
        "(the unit then scores at least that). Literature lines are cut sentences, so prose and poetry ask more.")

    @field_validator("classifier_thresholds")
    @classmethod
    def _thresholds_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: x for k, x in v.items() if not 0.5 <= x <= 1}
        if bad:
            raise ValueError(f"classifier thresholds must be in [0.5, 1]: {bad}")
        return {**CLASSIFIER_THRESHOLDS, **v}

    def classifier_threshold(self, profile: str) -> float:
        return self.classifier_thresholds[profile]


class PIIConfig(Section):
    redact: bool = Field(True, description="Replace e-mails, phones, IPs and card numbers with typed placeholders.")


class DedupConfig(Section):
    exact: bool = Field(True, description="Drop exact duplicates (hash of normalised text).")
    near: bool = Field(True, description="Drop near duplicates with MinHash LSH.")
    shingle_size: int = Field(5, ge=1, description="Word n-gram size of MinHash shingles.")
    num_perm: int = Field(128, ge=8, description="Number of MinHash permutations (bands * rows).")
    bands: int = Field(16, ge=1, description="LSH bands; rows per band = num_perm / bands.")
    threshold: float = Field(0.8, gt=0, le=1, description="Estimated Jaccard similarity at or above which docs are "
                             "near duplicates.")


class AuditConfig(Section):
    enabled: bool = Field(True, description="Count gendered, age and occupation terms in the kept corpus (the "
                          "representation audit in the filter report and the manifest's stats.audit).")
    counterfactual: bool = Field(
        False, description="Add a gender-swapped copy (id '<id>#swap') of every kept document that has gendered words, "
        "in augmented_*.parquet shards listed with the docs; counted in stats.docs_added, not in docs_kept.",
    )
    top_occupations: int = Field(12, ge=1, description="Occupations shown in the report's co-occurrence table.")


class FilterConfig(Section):
    quality: QualityConfig = Field(default_factory=QualityConfig)
    offensive: OffensiveConfig = Field(default_factory=OffensiveConfig)
    pii: PIIConfig = Field(default_factory=PIIConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    executor: Literal["local", "processes", "dask"] = Field("processes", description=EXECUTOR_DESCRIPTION)
    num_workers: int | None = Field(None, ge=1, description=WORKERS_DESCRIPTION)
    dask_address: str | None = Field(None, description="Scheduler of an existing Dask cluster (tcp://host:8786) for "
                                     "executor='dask'.")

    @model_validator(mode="before")
    @classmethod
    def _renamed_sections(cls, data: Any) -> Any:
        for old, new in RENAMED.items():
            parent, old_key = old.rsplit(".", 1)
            if parent == "filter" and isinstance(data, dict) and old_key in data:
                data = dict(data)
                moved = data.pop(old_key)
                _warn_renamed(old, new)
                new_key = new.rsplit(".", 1)[1]
                data[new_key] = _deep_update(dict(data.get(new_key) or {}), dict(moved or {}))
        return data


class TokenizeConfig(Section):
    vocab_size: int = Field(2048, ge=64, description="SentencePiece vocabulary size.")
    model_type: Literal["bpe", "unigram"] = Field("bpe", description="SentencePiece algorithm.")
    input_sentence_size: int = Field(200_000, gt=0,
                                     description="Max documents sampled (seeded) to train the tokenizer.")
    character_coverage: float = Field(0.9995, gt=0, le=1, description="Share of characters covered; rest via byte "
                                      "fallback.")
    control_tokens: list[str] = Field(["<|story|>", "<|poem|>", "<|dialogue|>"], description="Extra control tokens.")
    val_fraction: float = Field(0.05, ge=0, lt=1,
                                description="Share of documents (by id hash) held out for validation.")
    reuse_tokenizer: str | None = Field(None, description="A tokenizer.model path, a checkpoint folder, or a logged "
                                        "model URI (models:/quill@champion) to reuse instead of training.")
    seed: int = Field(1337, description="Seed for sampling and training the tokenizer.")
    num_workers: int | None = Field(
        None, ge=0,
        description="Encoding processes, one docs shard each at a time: None = one per CPU core, at most one per docs "
        "shard and per ~8 MiB of docs shards (smaller corpora encode faster in-process); 0 or 1 = in the stage's own "
        "process. SentencePiece threads share the cores within each process. Output is byte-identical for any value, "
        "so it is left out of the stage's config hash.",
    )


class ModelConfig(Section):
    """Mirror of model.GPTConfig (vocab_size comes from the tokenizer at train time)."""

    block_size: int = Field(128, ge=8, description="Context length in tokens.")
    n_layer: int = Field(4, ge=1, description="Transformer blocks.")
    n_head: int = Field(4, ge=1, description="Attention heads.")
    n_embd: int = Field(128, ge=8, description="Embedding width.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout probability.")
    bias: bool = Field(False, description="Bias in Linear and LayerNorm layers.")
    pos_encoding: Literal["sinusoidal", "learned", "rope"] = Field("rope", description="Positional encoding.")
    tie_weights: bool = Field(True, description="Share token embedding and output projection.")
    mlp_ratio: int = Field(4, ge=1, description="MLP hidden width as a multiple of n_embd.")
    qk_norm: bool = Field(False, description="RMS-normalise each head's queries and keys (bounds attention logits).")
    mlp: Literal["gelu", "relu2", "swiglu"] = Field(
        "gelu", description="MLP activation: GELU, ReLU^2 (relu(x)^2), or SwiGLU (three matrices of 2/3 the hidden "
        "width: the same FLOPs).")
    logit_softcap: float = Field(0.0, ge=0, description="Soft-cap the output logits at cap * tanh(z / cap); 0 = off.")

    @model_validator(mode="after")
    def _shape(self) -> ModelConfig:
        # The same rules as model.GPTConfig, checked here so `quill config` and the flow's up-front check
        # refuse a model that train could not build.
        if self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if self.pos_encoding == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"model.pos_encoding='rope' needs an even head size (n_embd / n_head), got "
                             f"{self.n_embd // self.n_head}")
        if self.pos_encoding == "sinusoidal" and self.n_embd % 2:
            raise ValueError(f"model.pos_encoding='sinusoidal' needs an even n_embd, got {self.n_embd}")
        return self


class TrainConfig(Section):
    max_steps: int = Field(300, ge=1, description="Optimizer steps.")
    batch_size: int = Field(16, ge=1, description="Sequences per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(3e-3, gt=0, description="Peak learning rate.")
    min_lr: float = Field(3e-4, ge=0, description="Final learning rate of the decay.")
    warmup_steps: int = Field(30, ge=0, description="Linear warm-up steps.")
    schedule: Literal["cosine", "wsd"] = Field(
        "cosine", description="After warm-up: 'cosine' decays to min_lr over the remaining steps; 'wsd' "
        "(warmup-stable-decay) holds lr, then decays linearly to min_lr over the last decay_frac of the steps.")
    decay_frac: float = Field(0.2, gt=0, le=1, description="schedule 'wsd': share of max_steps spent decaying.")
    optimizer: Literal["adamw", "muon"] = Field(
        "adamw", description="'adamw' for every weight; 'muon': Muon for the Transformer blocks' weight matrices, "
        "AdamW for embeddings, head and gains (model/optim.py).")
    muon_lr: float | None = Field(None, gt=0, description="optimizer 'muon': peak lr of the Muon matrices in "
                                  "AdamW-equivalent units (update RMS matched to AdamW's); None = lr. Follows the "
                                  "same schedule.")
    weight_decay: float = Field(0.1, ge=0, description="Decoupled weight decay of 2-D weights (AdamW and Muon).")
    beta1: float = Field(0.9, description="AdamW beta1.")
    beta2: float = Field(0.99, description="AdamW beta2.")
    grad_clip: float = Field(1.0, ge=0, description="Clip gradient norm to this (0 = off).")
    eval_every: int = Field(100, ge=1, description="Evaluate on validation every N steps.")
    eval_tokens: int = Field(50_000, ge=1, description="Max validation tokens per evaluation (fixed windows).")
    ckpt_every: int = Field(0, ge=0, description="Checkpoint every N steps (0 = only at the end).")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
                        description="'auto' (cuda > mps > cpu), 'cpu', 'cuda', 'cuda:1', 'mps'.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="Autocast dtype; 'auto' = bf16 on CUDA, "
                                                          "fp32 elsewhere.")
    compile: bool = Field(False, description="torch.compile the model.")
    seed: int = Field(1337, description="Seed for init and batch sampling.")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for torch during training (torch.set_num_threads); None = torch's default "
        "(one per core). Small models on a busy machine run several times faster on 1: idle threads spin-wait.",
    )


class EvaluateConfig(Section):
    prompts: list[str] = Field(
        ["Once upon a time", "The old lighthouse keeper", "In the winter forest"],
        description="Prompts for generated samples.",
    )
    samples_per_prompt: int = Field(1, ge=1, description="Samples generated per prompt.")
    max_new_tokens: int = Field(60, ge=1, description="Tokens generated per sample.")
    # Sampling: None keeps the default that `quill generate` and the served model use too (model/sampling.py).
    temperature: float | None = Field(None, ge=0, description="Sampling temperature (0 = greedy; None = the shared "
                                      "default, 0.8).")
    top_k: int | None = Field(None, ge=0, description="Top-k sampling (0 = off; None = the shared default, 50).")
    top_p: float | None = Field(None, ge=0, le=1, description="Nucleus sampling (0 = off; None = the shared default, "
                                "0.95).")
    min_p: float | None = Field(None, ge=0, le=1, description="Min-p sampling (0 = off; None = the shared default, "
                                "off).")
    repetition_penalty: float | None = Field(None, gt=0, description="Repetition penalty (1 = off; None = the shared "
                                             "default, 1.0).")
    no_repeat_ngram: int | None = Field(None, ge=0, description="Ban repeating n-grams of this size (0 = off; None = "
                                        "the shared default, off).")
    seed: int = Field(1234, description="Seed for sampling.")
    prompt_file: str | None = Field(
        None, description="Prompt set file used instead of `prompts`: one prompt per line ('#' lines are comments) or "
        "a JSON list; a bare name is looked up in pipeline/eval/eval_data/ (the shipped set is 'prompts.txt').",
    )
    offensive_threshold: float = Field(
        0.5, ge=0, le=1, description="Offensive score (the filter stage's lexicon and classifier) at or above which a "
        "generated "
        "sample counts in offensive_sample_rate.",
    )
    offensive_classifier_threshold: float | None = Field(
        CLASSIFIER_THRESHOLDS["prose"], ge=0.5, le=1, description="Probability at or above which the filter stage's "
        "trained classifier votes on a generated sample (as filter.offensive.classifier_thresholds.prose); None: the "
        "lexicon alone.")
    novelty_n: int = Field(8, ge=1, description="n of the token n-grams looked up verbatim in the training shards "
                           "(memorisation).")
    stereotype_pairs_file: str | None = Field(
        None, description="JSONL of stereotype sentence pairs (None = the shipped "
        "pipeline/eval/eval_data/stereotype_pairs.jsonl).",
    )
    stereotype_max_pieces: int | None = Field(
        4, ge=1, description="A differing word of a stereotype pair counts as well represented when it encodes to at "
        "most this many learned (non-byte) pieces; None = any number. Uncovered pairs are left out of the preference.",
    )
    demographic_prompts_file: str | None = Field(
        None, description="JSON of templates and groups for the sentiment gap (None = the shipped "
        "pipeline/eval/eval_data/demographic_prompts.json).",
    )
    bias_samples_per_prompt: int = Field(2, ge=1, description="Continuations sampled per demographic prompt for the "
                                         "sentiment gap.")
    bias_max_new_tokens: int = Field(20, ge=1, description="Tokens generated per demographic-prompt continuation.")
    attention_tokens: int = Field(24, ge=2, description="Tokens of the first sample shown in the attention heat-map "
                                  "(capped by block_size).")


class RegisterConfig(Section):
    model_name: str = Field("quill", description="MLflow registered model name.")
    experiment: str = Field("quill", description="MLflow experiment name.")
    margin: float = Field(0.0, ge=0, description="Bits per byte a challenger must beat the champion by to be promoted.")
    offensive_tolerance: float = Field(
        0.0, ge=0, le=1, description="How much higher than the champion's the challenger's offensive_sample_rate may "
        "be and still be promoted (0 = not worse).",
    )
    # Logged as the pyfunc's model_config: what one request to `mlflow models serve` may ask for (HTTP 400 beyond).
    serve_max_new_tokens: int = Field(512, ge=1, description="Served model: most max_new_tokens a request may ask.")
    serve_max_prompt_chars: int = Field(4000, ge=1, description="Served model: longest prompt, in characters.")
    serve_max_prompts: int = Field(64, ge=1, description="Served model: most prompts in one request.")
    serve_time_limit_s: float = Field(30.0, gt=0, description="Served model: seconds one request may generate for; "
                                      "then every row stops where it is (also when the client has gone).")

    def serve_limits(self) -> dict[str, float]:
        """The pyfunc's model_config (pipeline.pyfunc.LIMITS)."""
        return {"max_new_tokens": self.serve_max_new_tokens, "max_prompt_chars": self.serve_max_prompt_chars,
                "max_prompts": self.serve_max_prompts, "time_limit_s": self.serve_time_limit_s}
    move_aliases: bool = Field(True, description="Point `challenger` (and, if the gate says so, `champion`) at the new "
                               "version. `quill stage register` turns it off unless given --move-aliases: a local "
                               "experiment does not change what is served.")


class ScheduleConfig(Section):
    """When and under which name `quill serve` (and prefect.yaml) schedules retraining."""

    cron: str = Field("0 3 * * 1", description="Cron string for scheduled retraining (default: Mondays 03:00).")
    timezone: str = Field("UTC", description="IANA time zone the cron string is read in, e.g. 'Europe/Berlin'.")
    deployment: str = Field("scheduled-retrain", description="Deployment name of corpus_to_model under `quill serve`.")
    active: bool = Field(True, description="Start the schedule active; False deploys it paused (runs only when "
                         "triggered).")


# pydantic warns that the field name `register` shadows ABCMeta.register; the name is the stage's.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class RunConfig(Section):
    preset: str = Field("tiny", description="Preset this config started from.")
    sources: list[str] = Field(["data/sample"], description="Files, folders, globs or URLs to ingest.")
    data_root: str = Field("data/runs", description="Folder under which each run writes <run_id>/<stage>/.")
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    register: RegisterConfig = Field(default_factory=RegisterConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)


# --- presets: functions, so a variant is "call one, change fields" -----------------------------


def tiny() -> RunConfig:
    """The whole flow on the sample corpus in well under a minute of stage work on 2 CPU cores."""
    cfg = RunConfig(preset="tiny")
    cfg.tokenize.vocab_size = 1024
    cfg.model = ModelConfig(block_size=64, n_layer=2, n_head=4, n_embd=64)
    cfg.train = TrainConfig(max_steps=200, batch_size=16, lr=3e-3, warmup_steps=20, eval_every=100, eval_tokens=20_000,
                            threads=1)
    return cfg


def small() -> RunConfig:
    """CPU, minutes: the quality benchmark's size."""
    cfg = RunConfig(preset="small")
    cfg.tokenize.vocab_size = 2048
    # ReLU^2 MLP and Muon: winners of the tinyshakespeare ablation at equal FLOPs (benchmarks/train.py, README)
    cfg.model = ModelConfig(block_size=128, n_layer=4, n_head=4, n_embd=128, mlp="relu2")
    # 10 % warm-up and lr 2e-3 -> 2e-4: the tinyshakespeare ablation's settings for width 128 (benchmarks/train.py)
    cfg.train = TrainConfig(max_steps=2000, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_steps=200, eval_every=250,
                            optimizer="muon")
    return cfg


def writer() -> RunConfig:
    """`make writer`: a model that writes short stories, trained on a CPU from the shipped TinyStories sample.

    Sized for about 10-15 minutes of flow on 2 idle cores (benchmarks/writer.py measures it). The corpus
    is 2,316 whole stories (2 MiB, data/tinystories/), one document each: split at the separator lines
    between them. It is small for the compute (~0.54M training tokens), so the model is the small
    preset's with dropout and sees the data about 4.5 times (1,200 steps of 2,048 tokens); the
    validation loss is evaluated every 100 steps to show it still falls at the end. Its models are
    registered as `quill-writer`, apart from the models of other corpora.
    """
    cfg = RunConfig(preset="writer", sources=["data/tinystories/stories.txt"])
    cfg.ingest.split = "separator"
    cfg.clean.languages = ["en"]
    cfg.tokenize.vocab_size = 2048
    cfg.model = ModelConfig(block_size=128, n_layer=4, n_head=4, n_embd=128, dropout=0.1)
    cfg.train = TrainConfig(max_steps=1200, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_steps=120, eval_every=100,
                            eval_tokens=40_000, threads=1)
    cfg.evaluate.prompts = ["Once upon a time", "One day, a little girl named Lily", "Tom and his dog"]
    cfg.evaluate.max_new_tokens = 160
    cfg.register.model_name = "quill-writer"
    return cfg


def base() -> RunConfig:
    """One GPU, GPT-2-small scale (124M-class)."""
    cfg = RunConfig(preset="base")
    cfg.tokenize.vocab_size = 32_000
    cfg.model = ModelConfig(block_size=1024, n_layer=12, n_head=12, n_embd=768, mlp="relu2")
    cfg.train = TrainConfig(
        max_steps=20_000, batch_size=32, grad_accum=4, lr=6e-4, min_lr=6e-5, warmup_steps=700,
        eval_every=500, eval_tokens=2_000_000, ckpt_every=1000, compile=True, beta2=0.95, optimizer="muon",
    )
    return cfg


PRESETS = {"tiny": tiny, "small": small, "writer": writer, "base": base}


def _coerce(raw: str) -> Any:
    """`--set` values are JSON when they parse (numbers, bools, lists, null), else plain strings."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _deep_update(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        node = data
        *parents, leaf = _current_key(key.strip()).split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"override {item!r}: {part!r} is not a config section")
            node = node[part]
        node[leaf] = _coerce(raw.strip())
    return data


def load_config(preset: str | None = None, path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Preset (default: the file's `preset` key, else 'tiny') <- TOML file <- `--set` overrides."""
    file_data: dict = {}
    if path is not None:
        with open(path, "rb") as fh:
            file_data = tomllib.load(fh)
    name = preset or file_data.get("preset") or "tiny"
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    data = PRESETS[name]().model_dump()
    _deep_update(data, file_data)
    data["preset"] = name
    apply_overrides(data, list(overrides))
    return RunConfig.model_validate(data)
