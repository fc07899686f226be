"""Benchmark: an unchanged rerun of `quill run --preset tiny` on the embedded defaults against the first run.

    .venv/bin/python -m benchmarks.noop_rerun                  # ~3-6 min on 2 shared cores
    .venv/bin/python -m benchmarks.noop_rerun --out benchmarks/results/noop_rerun.json

Runs the real command line (`python -m flows.cli run --preset tiny`) twice in a fresh temporary folder
(its own MLflow store, PREFECT_HOME and data/runs; no PREFECT_API_URL, so the first run starts the
temporary Prefect server), then reports both wall times and their ratio. The second run checks the
manifests before starting any server (flows/uptodate.py). Target: the rerun takes <= 10 % of the first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed_run(cwd: Path, env: dict[str, str], extra: list[str]) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "flows.cli", "run", "--preset", "tiny", "--source", str(REPO / "data" / "sample"),
           *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override (repeatable)")
    ap.add_argument("--out", type=Path, help="write the result as JSON here")
    args = ap.parse_args()
    extra = [a for o in args.overrides for a in ("--set", o)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update({"PREFECT_HOME": str(tmp / "prefect"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
                    "PYTHONPATH": str(REPO)})
        first, _ = timed_run(tmp, env, extra)
        rerun, out = timed_run(tmp, env, extra)
    up_to_date = "Every stage is up to date" in out
    result = {"command": "quill run --preset tiny" + "".join(f" --set {o}" for o in args.overrides),
              "first_run_s": round(first, 2), "noop_rerun_s": round(rerun, 2), "ratio": round(rerun / first, 4),
              "rerun_skipped_prefect": up_to_date, "python": platform.python_version(),
              "machine": f"{os.cpu_count()} CPUs, shared with other jobs (timings are noisy)"}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
