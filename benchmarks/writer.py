"""`make writer`, measured: wall time, what the model learned, and the stories it prints.

    .venv/bin/python benchmarks/writer.py            # runs `make writer` from a fresh run folder (data/runs/writer)

Runs the README command itself (`make writer`: the Prefect flow ingest -> register on the shipped
TinyStories sample with the `writer` preset, then `quill generate` from models:/quill-writer@champion)
and writes benchmarks/results/writer.json and writer.md:
- wall time of the whole command, and of each stage (the gaps between the stage manifests' times;
  the first gap includes the start of the temporary Prefect server);
- the load average before and after (the machine may be shared: then the wall time is not the
  preset's time on idle cores) and the training throughput the train stage logged;
- validation loss every eval_every steps, its lowest point and the last one (did it turn up?),
  val bits per byte, and the share of evaluate samples that ended on end-of-text;
- the stories printed at the end.
The run folder is removed first (reused stages would make the time meaningless); the MLflow store
in mlruns/ is kept, so the new model registers as the next version of quill-writer.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]  # benchmarks/tokenize.py shadows tokenize
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402

from pipeline import STAGES  # noqa: E402

RUN = Path(ROOT) / "data" / "runs" / "writer"
RESULTS = Path(HERE) / "results"


def stage_seconds(run: Path, started: float) -> dict[str, float]:
    """Seconds per stage: each manifest's created_at minus the previous one's (the first from the start)."""
    out, prev = {}, started
    for stage in STAGES:
        m = json.loads((run / stage / "manifest.json").read_text())
        t = datetime.fromisoformat(m["created_at"]).timestamp()
        out[stage] = round(t - prev, 1)
        prev = t
    return out


def val_curve(run: Path) -> list[tuple[int, float]]:
    history = json.loads((run / "train" / "history.json").read_text())
    return [(h["step"], round(h["val_loss"], 4)) for h in history if "val_loss" in h]


def main() -> int:
    shutil.rmtree(RUN, ignore_errors=True)
    load_before = os.getloadavg()
    started = time.time()
    proc = subprocess.run(["make", "writer"], cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - started
    load_after = os.getloadavg()
    (RUN.parent / "writer-make.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    out = proc.stdout
    stories = out[out.rindex("Run folder:"):].split("\n", 1)[1].strip()  # after the flow's summary
    ended = [line for line in proc.stderr.splitlines() if "stopped on their own" in line]
    metrics = json.loads((RUN / "evaluate" / "metrics.json").read_text())
    train = json.loads((RUN / "train" / "manifest.json").read_text())["stats"]
    curve = val_curve(RUN)
    best = min(curve, key=lambda c: c[1])
    result = {
        "command": "make writer", "wall_seconds": round(wall, 1), "stage_seconds": stage_seconds(RUN, started),
        "cpu_count": os.cpu_count(), "load_avg_before": [round(x, 1) for x in load_before],
        "load_avg_after": [round(x, 1) for x in load_after],
        "train_seconds": train["train_seconds"],
        "train_tokens_per_sec": round(train["tokens_seen"] / train["train_seconds"]),
        "steps": train["steps"], "tokens_seen": train["tokens_seen"], "n_params": train["n_params"],
        "val_bpb": round(metrics["val_bpb"], 4), "val_loss": round(metrics["val_loss"], 4),
        "train_loss": round(train["train_loss"], 4), "eos_stop_rate": metrics["eos_stop_rate"],
        "val_curve": curve, "val_lowest": best, "val_turned_up": curve[-1][1] > best[1],
        "generate_report": ended[-1] if ended else None, "stories": stories,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "writer.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    (RESULTS / "writer.md").write_text(render(result), encoding="utf-8")
    print(render(result))
    return 0


def render(r: dict) -> str:
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in r["stage_seconds"].items())
    curve = " ".join(f"{s}:{v:.3f}" for s, v in r["val_curve"])
    return (
        f"# `make writer` (benchmarks/writer.py)\n\n"
        f"- wall time: {r['wall_seconds'] / 60:.1f} min on {r['cpu_count']} cores, load average "
        f"{r['load_avg_before'][0]} before and {r['load_avg_after'][0]} after (a shared machine if above ~2)\n"
        f"- stages: {stages}\n"
        f"- train: {r['steps']} steps, {r['tokens_seen']:,} tokens, {r['n_params']:,} parameters, "
        f"{r['train_tokens_per_sec']:,} tokens/s over {r['train_seconds']:.0f} s\n"
        f"- val bits/byte {r['val_bpb']:.3f} (val loss {r['val_loss']:.3f} nats/token, train loss "
        f"{r['train_loss']:.3f}); {r['eos_stop_rate']:.0%} of evaluate samples ended on end-of-text\n"
        f"- val loss by step: {curve}; lowest {r['val_lowest'][1]:.3f} at step {r['val_lowest'][0]}"
        f"{' (it turned up after)' if r['val_turned_up'] else ' (the last)'}\n\n"
        f"## What it printed after the flow\n\n```text\n{r['stories']}\n```\n\n{r['generate_report']}\n"
    )


if __name__ == "__main__":
    sys.exit(main())
