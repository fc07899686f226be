"""The trainer: schedule, accumulation, NaN stop, reproducibility, checkpoints, SIGKILL resume, DDP."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

import pipeline.train as train_mod
from model import GPT, GPTConfig, load_train_state
from model.tokenizer import train_tokenizer
from pipeline.config import ModelConfig, TrainConfig
from pipeline.manifest import read_manifest, run_stage
from pipeline.train import lane_seed, lr_at, train, train_step

REPO = Path(__file__).resolve().parent.parent
MODEL = ModelConfig(block_size=32, n_layer=2, n_head=2, n_embd=32)
FAST = {"batch_size": 4, "warmup_steps": 2, "eval_every": 4, "eval_tokens": 2000, "threads": 1, "device": "cpu"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok_manifest(tmp_path_factory) -> Path:
    """A tokenize-stage folder made directly (tokenizer, token_bytes, one train and one val shard)."""
    from tests.conftest import POEM, STORIES

    def work(stage: Path):
        docs = STORIES * 3 + [POEM] * 4
        tok = train_tokenizer(docs, stage / "tokenizer.model", vocab_size=400, character_coverage=1.0)
        np.save(stage / "token_bytes.npy", np.array(tok.token_bytes(), dtype=np.int32))
        outputs, stats = {"tokenizer": "tokenizer.model", "token_bytes": "token_bytes.npy"}, {}
        for split, part in (("train", docs[:-5]), ("val", docs[-5:])):
            ids = np.array([t for d in part for t in tok.encode(d) + [tok.eos_id]], dtype=np.uint16)
            (stage / split).mkdir()
            pq.write_table(pa.table({"tokens": ids}), stage / split / "shard_00000.parquet")
            outputs[split] = [f"{split}/shard_00000.parquet"]
            stats.update({f"chars_{split}": sum(map(len, part)), f"bytes_{split}": sum(len(d.encode()) for d in part)})
        return outputs, stats

    return run_stage("tokenize", tmp_path_factory.mktemp("train") / "tokenize", [], {}, work).path


def weights(stage: Path) -> dict[str, torch.Tensor]:
    return load_file(str(stage / "checkpoint" / "model.safetensors"))


def losses(stage: Path, key: str = "train_loss") -> list[float]:
    return [h[key] for h in json.loads((stage / "history.json").read_text()) if key in h]


def test_lr_schedule_warmup_then_cosine_to_min():
    cfg = TrainConfig(max_steps=110, warmup_steps=10, lr=1e-3, min_lr=1e-4)
    lrs = [lr_at(s, cfg) for s in range(cfg.max_steps + 1)]
    assert lrs[:10] == pytest.approx([1e-4 * (s + 1) for s in range(10)])  # linear warm-up, step 9 at peak
    assert lrs[10] == pytest.approx(1e-3)
    assert lrs[60] == pytest.approx((1e-3 + 1e-4) / 2)  # half way through the cosine
    assert lrs[110] == pytest.approx(1e-4)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))  # decays monotonically


def test_lane_seeds_are_deterministic_and_distinct():
    assert lane_seed(1, 5, 0) == lane_seed(1, 5, 0)
    seeds = {lane_seed(s, step, lane) for s in (1, 2) for step in range(50) for lane in range(4)}
    assert len(seeds) == 2 * 50 * 4 and all(0 <= s < 2**63 for s in seeds)


def _tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))


def test_grad_accumulation_equals_one_big_batch():
    data = torch.randint(0, 64, (8, 17), generator=torch.Generator().manual_seed(0))
    x, y = data[:, :-1], data[:, 1:]
    results = []
    for batches in ([(x, y)], [(x[:4], y[:4]), (x[4:], y[4:])]):
        model = _tiny_model()
        opt = torch.optim.SGD(model.parameters(), lr=1.0)  # the update is the gradient itself
        loss = train_step(model, opt, batches, lr=1.0, grad_clip=0.0, device="cpu")
        results.append((loss, [p.detach().clone() for p in model.parameters()]))
    (loss1, p1), (loss2, p2) = results
    assert loss1 == pytest.approx(loss2, rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(p1, p2))


def test_nan_loss_stops_with_a_clear_error_before_the_update():
    model = _tiny_model()
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    before = [p.detach().clone() for p in model.parameters()]
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.99), "cpu")
    x = torch.randint(0, 64, (2, 16))
    with pytest.raises(FloatingPointError, match=r"loss is nan .*lower train.lr"):
        train_step(model, opt, [(x, x)], lr=1e-3, grad_clip=1.0, device="cpu")
    assert all(torch.equal(a, b) or a.isnan().any() for a, b in zip(before, model.parameters()))


def test_same_seed_same_run_and_checkpoint_every_n(tmp_path, tok_manifest, monkeypatch):
    saved = []
    real_save = train_mod.save_checkpoint
    monkeypatch.setattr(train_mod, "save_checkpoint",
                        lambda *a, **k: saved.append(k["train_state"]["step"]) or real_save(*a, **k))
    cfg = TrainConfig(max_steps=7, ckpt_every=3, **FAST)
    a = train(tok_manifest, tmp_path / "a", cfg, MODEL)
    assert saved == [3, 6, 7]  # every ckpt_every steps, and at the end
    b = train(tok_manifest, tmp_path / "b", cfg, MODEL)
    assert losses(a.stage_dir) == losses(b.stage_dir)
    assert losses(a.stage_dir, "val_loss") == losses(b.stage_dir, "val_loss")
    assert a.stats["val_bpb"] > 0 and math.isfinite(a.stats["val_bpc"])
    c = train(tok_manifest, tmp_path / "c", cfg.model_copy(update={"seed": 7}), MODEL)
    assert losses(c.stage_dir) != losses(a.stage_dir)


# Trains in a subprocess and stops for good right after its first checkpoint, so the parent's
# SIGKILL lands between two checkpoints of a live training run.
KILLED_RUN = """
import sys, time, json
import pipeline.train as t
from pipeline.config import ModelConfig, TrainConfig
real = t.save_checkpoint
def save_then_hang(*a, **k):
    real(*a, **k)
    print("CHECKPOINT", flush=True)
    time.sleep(600)
t.save_checkpoint = save_then_hang
tok, out, cfg, model = sys.argv[1:]
t.train(tok, out, TrainConfig.model_validate_json(cfg), ModelConfig.model_validate_json(model))
"""


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, tok_manifest):
    cfg = TrainConfig(max_steps=10, ckpt_every=4, **{**FAST, "eval_every": 5})
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tok_manifest), str(out), cfg.model_dump_json(),
                             MODEL.model_dump_json()], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "CHECKPOINT"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and (tmp_path / "killed.partial" / "checkpoint").is_dir()

    resumed = train(tok_manifest, out, cfg, MODEL)
    assert resumed.stats["resumed_from"] == 4
    whole = train(tok_manifest, tmp_path / "whole", cfg, MODEL)
    assert whole.stats["resumed_from"] == 0
    assert losses(resumed.stage_dir) == pytest.approx(losses(whole.stage_dir), rel=1e-5)
    assert resumed.stats["val_loss"] == pytest.approx(whole.stats["val_loss"], rel=1e-5)
    w1, w2 = weights(resumed.stage_dir), weights(whole.stage_dir)
    assert all(torch.allclose(w1[k], w2[k], atol=1e-6) for k in w2)


def crash_after_first_checkpoint(out, tok_manifest, cfg, model, monkeypatch) -> None:
    """Train into `out` until the first checkpoint is written, then stop there (KeyboardInterrupt), in-process."""
    real_save = train_mod.save_checkpoint

    def save_then_crash(*a, **k):
        real_save(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(tok_manifest, out, cfg, model)
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)


def test_resume_repeats_dropout_draws_too(tmp_path, tok_manifest, monkeypatch):
    """In-process crash after the first checkpoint; dropout's RNG is reseeded per step, so still exact."""
    cfg, model = TrainConfig(max_steps=6, ckpt_every=3, **FAST), MODEL.model_copy(update={"dropout": 0.2})
    crash_after_first_checkpoint(tmp_path / "r", tok_manifest, cfg, model, monkeypatch)
    resumed, whole = train(tok_manifest, tmp_path / "r", cfg, model), train(tok_manifest, tmp_path / "w", cfg, model)
    assert resumed.stats["resumed_from"] == 3
    assert losses(resumed.stage_dir) == pytest.approx(losses(whole.stage_dir), rel=1e-6)


def test_resume_from_the_checkpoint_a_kill_between_the_two_renames_left_aside(tmp_path, tok_manifest, monkeypatch):
    """save_checkpoint renames the old folder to .checkpoint.old, then the new one into place: a kill in
    between leaves no `checkpoint/` at all, and training must resume from `.checkpoint.old`, not step 0."""
    cfg = TrainConfig(max_steps=6, ckpt_every=3, **FAST)
    crash_after_first_checkpoint(tmp_path / "r", tok_manifest, cfg, MODEL, monkeypatch)
    partial = tmp_path / "r.partial"
    (partial / "checkpoint").rename(partial / ".checkpoint.old")  # the first rename done, the second not
    (partial / ".checkpoint.tmp").mkdir()  # the new folder, complete or not, never published
    resumed = train(tok_manifest, tmp_path / "r", cfg, MODEL)
    assert resumed.stats["resumed_from"] == 3
    whole = train(tok_manifest, tmp_path / "w", cfg, MODEL)
    assert losses(resumed.stage_dir) == pytest.approx(losses(whole.stage_dir), rel=1e-6)


# One rank of a torchrun job: trains through the real stage, then saves its replica's weights.
DDP_RANK = """
import os, sys, torch
import pipeline.train as t
from pipeline.config import ModelConfig, TrainConfig
real_loop = t._loop
def loop_then_save(run, *a, **k):
    real_loop(run, *a, **k)
    torch.save(run.step_model.module.state_dict(), f"{sys.argv[2]}.rank{os.environ['RANK']}.pt")
t._loop = loop_then_save
tok, out, cfg, model = sys.argv[1:]
t.train(tok, out, TrainConfig.model_validate_json(cfg), ModelConfig.model_validate_json(model))
"""


def test_ddp_two_cpu_ranks_match_one_process_with_the_same_global_batch(tmp_path, tok_manifest):
    cfg = TrainConfig(max_steps=6, **{**FAST, "eval_every": 3})
    runner = tmp_path / "rank.py"
    runner.write_text(DDP_RANK)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(runner),
           str(tok_manifest), str(out), cfg.model_dump_json(), MODEL.model_dump_json()]
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    ddp = read_manifest(out)
    assert ddp.stats["world_size"] == 2 and ddp.stats["tokens_seen"] == 6 * 2 * 4 * 32
    r0, r1 = torch.load(f"{out}.rank0.pt"), torch.load(f"{out}.rank1.pt")
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # replicas never drift apart

    single = train(tok_manifest, tmp_path / "single", cfg.model_copy(update={"grad_accum": 2}), MODEL)
    assert (ddp.config["world_size"], single.config["world_size"]) == (2, 1)  # a rerun on other ranks is not skipped
    assert losses(ddp.stage_dir) == pytest.approx(losses(single.stage_dir), rel=1e-5)
    assert losses(ddp.stage_dir, "val_loss") == pytest.approx(losses(single.stage_dir, "val_loss"), rel=1e-5)
    w_ddp, w_one = weights(ddp.stage_dir), weights(single.stage_dir)
    assert all(torch.allclose(w_ddp[k], w_one[k], atol=1e-5) for k in w_one)


class RecordingTracker:
    """The tracker seam, recording calls; has system_metrics like MlflowTracker."""

    run_id = "fake"

    def __init__(self):
        self.params, self.metrics, self.artifacts, self.monitor = {}, [], [], None

    def log_params(self, params):
        self.params.update(params)

    def log_metrics(self, metrics, step):
        self.metrics.append((step, metrics))

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append(Path(path).name)

    def set_tags(self, tags):
        pass

    def system_metrics(self):
        self.monitor = type("Monitor", (), {"finished": False, "finish": lambda m: setattr(m, "finished", True)})()
        return self.monitor


def test_tracking_seam_params_step_metrics_system_metrics_and_plot(tmp_path, tok_manifest):
    tracker = RecordingTracker()
    m = train(tok_manifest, tmp_path / "t", TrainConfig(max_steps=4, **FAST), MODEL, tracker)
    assert tracker.params["train"]["max_steps"] == 4 and tracker.params["model"]["n_embd"] == 32
    assert [s for s, _ in tracker.metrics] == [1, 2, 3, 4, 4]  # every step, then the run's totals
    assert {"train_loss", "lr", "tokens_per_sec"} <= set(tracker.metrics[0][1])
    assert {"val/loss", "val/bpb", "val/bpc", "val/perplexity"} <= set(tracker.metrics[-2][1])
    assert tracker.metrics[-1][1] == {"train_tokens": m.stats["tokens_seen"], "train_flops": m.stats["train_flops"]}
    assert m.stats["train_flops"] > 6 * m.stats["n_params"] * m.stats["tokens_seen"]  # 6N per token plus attention
    assert tracker.monitor.finished and tracker.artifacts == ["loss_curve.png"]
    assert m.stats["mlflow_run_id"] == "fake" and (m.stage_dir / "loss_curve.png").stat().st_size > 0


def test_gpu_benchmark_dry_run_exercises_the_cuda_code_path_on_cpu(capsys):
    from benchmarks.gpu import main

    assert main(["--dry-run"]) == 0  # bf16 autocast + forced flash SDPA kernel + train_step, 2 tiny steps
    assert '"tokens_per_s"' in capsys.readouterr().out


def test_wsd_schedule_holds_then_decays_linearly_and_cosine_stays_the_default():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-4, schedule="wsd", decay_frac=0.2)
    lrs = [lr_at(s, cfg) for s in range(cfg.max_steps + 1)]
    assert lrs[:10] == pytest.approx([1e-4 * (s + 1) for s in range(10)])
    assert lrs[10:81] == pytest.approx([1e-3] * 71)  # stable until the last 20 %
    assert lrs[90] == pytest.approx((1e-3 + 1e-4) / 2) and lrs[100] == pytest.approx(1e-4)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert TrainConfig().schedule == "cosine"
    assert lr_at(50, cfg.model_copy(update={"schedule": "cosine"})) != lrs[50]


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = _tiny_model()
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.99), "cpu", "muon", 2e-3)
    muon, adamw = opt.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    on_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in on_muon}
    assert names == {n for n, p in model.named_parameters() if p.dim() == 2 and ".h." in n}
    assert "transformer.wte.weight" not in names  # the tied embedding/head stays on AdamW
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == model.num_params(non_embedding=False)  # every parameter once
    x = torch.randint(0, 64, (2, 16))
    before = [p.detach().clone() for p in model.parameters()]
    train_step(model, opt, [(x, x)], lr=1e-3, grad_clip=1.0, device="cpu")
    assert muon.param_groups[0]["lr"] == pytest.approx(2e-3)  # muon_lr: twice the scheduled rate
    assert adamw.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # every tensor moved
    assert isinstance(model.configure_optimizer(0.1, 1e-3, (0.9, 0.99), "cpu"), torch.optim.AdamW)  # the default
    with pytest.raises(ValueError, match="optimizer"):
        model.configure_optimizer(0.1, 1e-3, (0.9, 0.99), "cpu", "lion")


@pytest.mark.parametrize("options", [{"optimizer": "muon", "muon_lr": 2e-3}, {"schedule": "wsd"}])
def test_resume_is_exact_with_the_new_options(tmp_path, tok_manifest, monkeypatch, options):
    """Crash after the first checkpoint; the resumed run (Muon's momentum restored) repeats the whole one."""
    cfg = TrainConfig(max_steps=6, ckpt_every=3, **FAST, **options)
    model = MODEL.model_copy(update={"mlp": "relu2", "logit_softcap": 15.0})
    crash_after_first_checkpoint(tmp_path / "r", tok_manifest, cfg, model, monkeypatch)
    resumed, whole = train(tok_manifest, tmp_path / "r", cfg, model), train(tok_manifest, tmp_path / "w", cfg, model)
    assert resumed.stats["resumed_from"] == 3
    assert losses(resumed.stage_dir) == losses(whole.stage_dir)
    w1, w2 = weights(resumed.stage_dir), weights(whole.stage_dir)
    assert all(torch.equal(w1[k], w2[k]) for k in w2)
    state = load_train_state(whole.stage_dir / "checkpoint")["optimizer"]
    if options.get("optimizer") == "muon":  # the checkpoint holds Muon's momentum beside AdamW's moments
        muon, adamw = state["optimizers"]
        assert muon["state"] and all("momentum_buffer" in v for v in muon["state"].values())
        assert adamw["state"] and all("exp_avg" in v for v in adamw["state"].values())


def test_muon_state_of_another_shape_is_refused():
    from model.optim import Optimizers

    model = _tiny_model()
    both = model.configure_optimizer(0.1, 1e-3, (0.9, 0.99), "cpu", "muon")
    with pytest.raises(ValueError, match="holds 1 optimizers, this run has 2"):
        both.load_state_dict({"optimizers": [both.optimizers[0].state_dict()]})
    assert isinstance(both, Optimizers)
