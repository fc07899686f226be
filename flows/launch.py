"""Train on several processes with torchrun, launched by the train task (one process per GPU; CPU works too).

    quill run --train-processes 2          # on a machine with 2 GPUs (or 2 CPU processes, for a test)

The train task then runs, in the flow's working directory,

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m flows.launch \\
        <tokenize manifest> <train out dir> '<TrainConfig json>' '<ModelConfig json>' [--mlflow-run-id ID] [--force]

and `pipeline.train.train` does the rest: each rank joins the process group from torchrun's
environment (nccl on CUDA, gloo on CPU), the model is wrapped in DDP, and rank 0 alone logs to
the flow's MLflow run and publishes the stage folder. N ranks with grad_accum k see the batches of
one process with grad_accum N*k. The Prefect progress artifact is not updated from the ranks; the
metrics are in MLflow as usual.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from pipeline.config import ModelConfig, TrainConfig

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent


def torchrun_train(in_manifest: str, out_dir: str, cfg: TrainConfig, model_cfg: ModelConfig, nproc: int,
                   mlflow_run_id: str | None = None, force: bool = False) -> str:
    """Run the train stage on `nproc` local processes; returns its manifest path."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m",
           "flows.launch",
           in_manifest, out_dir, cfg.model_dump_json(), model_cfg.model_dump_json()]
    cmd += ["--mlflow-run-id", mlflow_run_id] if mlflow_run_id else []
    cmd += ["--force"] if force else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log.info("train: launching %d processes: %s", nproc, " ".join(cmd[:8]))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
    if done.returncode != 0:
        raise RuntimeError(f"torchrun with {nproc} processes exited with {done.returncode}:\n{tail}")
    log.info("train: torchrun finished:\n%s", tail)
    return str((Path(out_dir) / "manifest.json").resolve())


def main(argv: list[str] | None = None) -> None:
    """One rank: train through the real stage function."""
    from pipeline.tracking import MlflowTracker, NullTracker
    from pipeline.train import train

    p = argparse.ArgumentParser(prog="python -m flows.launch", description="one torchrun rank of the train stage")
    p.add_argument("in_manifest")
    p.add_argument("out_dir")
    p.add_argument("train_json")
    p.add_argument("model_json")
    p.add_argument("--mlflow-run-id")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main_rank = os.environ.get("RANK", "0") == "0"
    tracker = MlflowTracker(args.mlflow_run_id) if args.mlflow_run_id and main_rank else NullTracker()
    m = train(Path(args.in_manifest), Path(args.out_dir), TrainConfig.model_validate_json(args.train_json),
              ModelConfig.model_validate_json(args.model_json), tracker, force=args.force)
    if main_rank:
        print(m.path)


if __name__ == "__main__":
    main()
