"""Labelled data for the offensive-content classifier, read from fetched public repositories (see DATA_SOURCES.md).

    sets = load_all(repos)   {name: [(label, text), ...]} for training, held-out and evaluation sets

Each repository is a git directory (a clone, or a snapshot brought by the search library's `fetch`, which has
no work tree): files are read at its HEAD with `git show`, and the commit is recorded with the figures.
Nothing here is committed to Quill; `benchmarks.offensive_train` rebuilds the weights from these paths.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import re
import subprocess
import textwrap
from pathlib import Path

MIRRORS = Path("/work/.mirror")
REPOS = {  # name -> default git directory (the search library's fetch puts snapshots here)
    "olid": MIRRORS / "wenliangdai+multi-task-offensive-language-detection" / "repo",
    "toxigen": MIRRORS / "microsoft+TOXIGEN" / "repo",
    "hatecheck": MIRRORS / "paul-rottger+hatecheck-data" / "repo",
    "conan": MIRRORS / "marcoguerini+CONAN" / "repo",
    "convabuse": MIRRORS / "amandacurry+convabuse" / "repo",
}
CORPORA = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpora"
_TWITTER_NOISE = re.compile(r"@USER|\bURL\b|#")

# HateCheck functionalities (Röttger et al. 2021) grouped for this filter: profanity is offensive here
# even when it is not hateful, so profanity_nh counts as offensive; "slur-free hate" is hate without slurs,
# profanity or spelling tricks, against the non-hateful cases that name the same groups.
HATECHECK_SLUR_FREE_HATE = ("derog_neg_emote_h", "derog_neg_attrib_h", "derog_dehum_h", "derog_impl_h",
                            "threat_dir_h", "threat_norm_h", "ref_subs_clause_h", "ref_subs_sent_h",
                            "negate_pos_h", "phrase_question_h", "phrase_opinion_h")
HATECHECK_GROUP_NOT_HATE = ("ident_neutral_nh", "ident_pos_nh", "negate_neg_nh", "counter_quote_nh",
                            "counter_ref_nh", "target_obj_nh")


def git_show(repo: Path, path: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{path}"], check=True, capture_output=True,
                          text=True, encoding="utf-8").stdout


def git_head(repo: Path) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def held_out(text: str, share: float = 0.15) -> bool:
    """A stable split by the text itself (the same sentence is never on both sides)."""
    return int(hashlib.sha1(b"held-out:" + text.encode()).hexdigest()[:8], 16) / 2**32 < share


def _tweet(text: str) -> str:
    return " ".join(_TWITTER_NOISE.sub(" ", text).split())


def olid(repo: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(train, official test) of OLID v1.0 level A: OFF -> 1, NOT -> 0; @USER, URL and '#' removed."""
    train = [(int(r["subtask_a"] == "OFF"), _tweet(r["tweet"]))
             for r in csv.DictReader(io.StringIO(git_show(repo, "OLIDv1.0/olid-training-v1.0.tsv")), delimiter="\t",
                                     quoting=csv.QUOTE_NONE)]
    gold = dict(csv.reader(io.StringIO(git_show(repo, "OLIDv1.0/labels-levela.csv"))))
    test = [(int(gold[r["id"]] == "OFF"), _tweet(r["tweet"]))
            for r in csv.DictReader(io.StringIO(git_show(repo, "OLIDv1.0/testset-levela.tsv")), delimiter="\t",
                                    quoting=csv.QUOTE_NONE)]
    return [r for r in train if r[1]], [r for r in test if r[1]]


def toxigen(repo: Path) -> list[tuple[int, str]]:
    """The distinct human-written seed sentences of ToxiGen's prompts: prompts/hate_* -> 1, neutral_* -> 0."""
    files = subprocess.run(["git", "-C", str(repo), "ls-tree", "--name-only", "HEAD", "prompts/"], check=True,
                           capture_output=True, text=True).stdout.split()
    seen: dict[str, int] = {}
    for name in sorted(files):
        label = 1 if Path(name).name.startswith("hate_") else 0 if Path(name).name.startswith("neutral_") else None
        if label is None:
            continue
        for line in git_show(repo, name).splitlines():
            for part in line.split("\\n"):
                sentence = part.strip().lstrip("-").strip()
                if len(sentence.split()) >= 3:
                    seen.setdefault(sentence, label)
    return [(label, text) for text, label in seen.items()]


def conan(repo: Path) -> list[tuple[int, str]]:
    """Multitarget-CONAN: each hate speech message -> 1, each counter-narrative (which answers it and often
    names the same group) -> 0; distinct texts, one line each."""
    seen: dict[str, int] = {}
    for r in csv.DictReader(io.StringIO(git_show(repo, "Multitarget-CONAN/Multitarget-CONAN.csv"))):
        for text, label in ((r["HATE_SPEECH"], 1), (r["COUNTER_NARRATIVE"], 0)):
            text = " ".join(text.split())
            if text:
                seen.setdefault(text, label)
    return [(label, text) for text, label in seen.items()]


def convabuse(repo: Path, split: str) -> list[tuple[int, str]]:
    """ConvAbuse (user turns to two chatbots): 1 where more annotators chose an abusive level (-1, -2 or -3)
    than "not abusive", 0 where fewer; ties and "ambiguous" majorities are left out."""
    out = []
    for r in csv.DictReader(io.StringIO(git_show(repo, f"2_splits/ConvAbuseEMNLP{split}.csv"))):
        votes = [k.rsplit(".", 1)[1] for k, v in r.items() if "_is_abuse." in k and v in ("1", "1.0")]
        abusive, fine = sum(v in ("-1", "-2", "-3") for v in votes), votes.count("1")
        text = " ".join(r["user"].split())
        if text and abusive != fine:
            out.append((int(abusive > fine), text))
    return out


def hatecheck(repo: Path) -> list[tuple[str, int, str]]:
    """(functionality, 1 if hateful, text) of every HateCheck test case."""
    return [(r["functionality"], int(r["label_gold"] == "hateful"), r["test_case"].strip())
            for r in csv.DictReader(io.StringIO(git_show(repo, "test_suite_cases.csv")))]


def clean_negatives(limit: int = 6000) -> list[tuple[int, str]]:
    """Everyday text as negatives (label 0): TinyStories sentences and C4 lines from ../shared/corpora (the
    clean side: C4 was filtered for bad words). Empty when the corpora are absent."""
    texts: list[str] = []
    stories = CORPORA / "tinystories_sample" / "tinystories_train_head1000.txt"
    if stories.exists():
        for para in stories.read_text(encoding="utf-8").splitlines():
            texts += [s.strip() for s in re.split(r"(?<=[.!?])\s+", para) if len(s.split()) >= 4]
    import gzip

    for path in sorted((CORPORA / "c4_sample").glob("*.json*.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                texts += [t for t in json.loads(line)["text"].split("\n") if len(t.split()) >= 4]
    texts = sorted(set(texts), key=lambda t: hashlib.sha1(t.encode()).hexdigest())[:limit]
    return [(0, t) for t in texts]


def wrapped_negatives(limit: int = 12000) -> list[tuple[int, str]]:
    """Lines of hard-wrapped everyday prose and of plays as negatives (label 0): TinyStories (validation head)
    paragraphs wrapped at 70 columns as Project Gutenberg wraps books, and the lines of tinyshakespeare, so that
    a fragment of a sentence ("ridicule.", "stupid, and") is not taken for a post. None of the seven
    gutenberg_creative books (the literature check) is among them."""
    texts: list[str] = []
    val = CORPORA / "tinystories_sample" / "tinystories_validation_head.txt"
    if val.exists():
        for para in val.read_text(encoding="utf-8").split("\n\n"):
            texts += textwrap.wrap(" ".join(para.split()), 70)
    shakespeare = CORPORA / "tinyshakespeare" / "input.txt"
    if shakespeare.exists():
        texts += [t for t in shakespeare.read_text(encoding="utf-8").splitlines() if t.strip()]
    texts = sorted(set(texts), key=lambda t: hashlib.sha1(t.encode()).hexdigest())[:limit]
    return [(0, t) for t in texts]


def fragments(rows: list[tuple[int, str]], per_row: int = 2, seed: int = 0) -> list[tuple[int, str]]:
    """Short windows (1-6 words) of clean texts as negatives: a few words cut from a sentence are not a post."""
    rng = random.Random(seed)
    out = []
    for _, text in rows:
        words = text.split()
        for _ in range(per_row):
            k = rng.randint(1, 6)
            i = rng.randint(0, max(0, len(words) - k))
            out.append((0, " ".join(words[i : i + k])))
    return out


def load_all(repos: dict[str, Path] | None = None) -> dict[str, list]:
    repos = {**REPOS, **(repos or {})}
    missing = [f"{k}: {p}" for k, p in repos.items() if not Path(p).exists()]
    if missing:
        raise FileNotFoundError("fetched repositories not found (fetch them with the search library, or pass "
                                "--repo name=path): " + ", ".join(missing))
    olid_train, olid_test = olid(repos["olid"])
    tox = toxigen(repos["toxigen"])
    cn = conan(repos["conan"])
    negatives = clean_negatives()
    wrapped = wrapped_negatives()
    return {
        "olid_train": olid_train, "olid_test": olid_test,
        "toxigen_train": [r for r in tox if not held_out(r[1])], "toxigen_test": [r for r in tox if held_out(r[1])],
        "conan_train": [r for r in cn if not held_out(r[1])], "conan_test": [r for r in cn if held_out(r[1])],
        "convabuse_train": convabuse(repos["convabuse"], "train") + convabuse(repos["convabuse"], "valid"),
        "convabuse_test": convabuse(repos["convabuse"], "test"),
        "clean_train": [r for r in negatives if not held_out(r[1])],
        "fragment_train": fragments([r for r in negatives if not held_out(r[1])]),
        "clean_test": [r for r in negatives if held_out(r[1])],
        "wrapped_train": [r for r in wrapped if not held_out(r[1])],
        "wrapped_test": [r for r in wrapped if held_out(r[1])],
        "hatecheck": hatecheck(repos["hatecheck"]),
        "commits": {k: git_head(Path(p)) for k, p in repos.items()},
    }
