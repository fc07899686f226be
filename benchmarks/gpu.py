"""CUDA path check and throughput: the `base` preset trained on random tokens with bf16 autocast,
torch.compile, fused AdamW (beside Muon when the preset uses it) and the flash attention kernel;
prints tokens/s and MFU.

    .venv/bin/python -m benchmarks.gpu                  # needs a CUDA GPU (about a minute, most of it compiling)
    .venv/bin/python -m benchmarks.gpu --dry-run        # 2 steps of a tiny config on the CPU: a smoke test of the code

Every step runs inside sdpa_kernel(FLASH_ATTENTION), so attention that cannot use the flash
kernel fails loudly instead of silently falling back to the math kernel. MFU is model FLOPs/s
(GPT.flops_per_token x tokens/s) over two peaks: the nominal dense bf16 peak of known GPUs and a
large bf16 torch.matmul timed in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from model import GPT, GPTConfig
from model.optim import Optimizers
from pipeline.config import base
from pipeline.train import autocast_for, lr_at, train_step

RESULTS = Path(__file__).resolve().parent / "results"
# Dense bf16 tensor-core peaks (no sparsity) from the vendor data sheets, in FLOP/s.
NOMINAL_PEAK = {"H200": 989e12, "H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12,
                "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12, "RTX 4090": 165e12}


def nominal_peak(name: str) -> float | None:
    return next((v for k, v in NOMINAL_PEAK.items() if k in name), None)


def matmul_peak(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def setup(dry_run: bool, compile_: bool, batch_size: int | None):
    cfg = base()
    if dry_run:
        cfg.model = cfg.model.model_copy(update={"block_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 64})
        cfg.tokenize.vocab_size, cfg.train.batch_size = 512, 2
    device = torch.device("cpu" if dry_run else "cuda")
    torch.manual_seed(0)
    gpt_cfg = GPTConfig(vocab_size=cfg.tokenize.vocab_size, **cfg.model.model_dump())
    model = GPT(gpt_cfg).to(device)
    t = cfg.train
    opt = model.configure_optimizer(t.weight_decay, t.lr, (t.beta1, t.beta2), device.type, t.optimizer, t.muon_lr)
    adamw = opt.optimizers[-1] if isinstance(opt, Optimizers) else opt  # beside Muon when the preset uses it
    if device.type == "cuda":
        assert adamw.defaults["fused"], "AdamW should be fused on CUDA"
    step_model = torch.compile(model) if compile_ else model
    return cfg, gpt_cfg, model, step_model, opt, device, batch_size or t.batch_size


def run(args) -> dict:
    cfg, gpt_cfg, model, step_model, opt, device, B = setup(args.dry_run, args.compile and not args.dry_run,
                                                           args.batch_size)
    T, V = gpt_cfg.block_size, gpt_cfg.vocab_size
    autocast = autocast_for(device, "bfloat16")  # what dtype "auto" picks on CUDA; forced so the dry run uses it too
    gen = torch.Generator().manual_seed(0)

    def step(i: int) -> float:
        data = torch.randint(0, V, (B, T + 1), generator=gen)
        data = (data.pin_memory() if device.type == "cuda" else data).to(device, non_blocking=True)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return train_step(step_model, opt, [(data[:, :-1], data[:, 1:])], lr=lr_at(i, cfg.train),
                              grad_clip=cfg.train.grad_clip, device=device, autocast=autocast)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    losses = [step(i) for i in range(args.warmup)]  # compiles on the first step
    sync()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    losses += [step(args.warmup + i) for i in range(args.steps)]
    sync()
    tok_s = args.steps * B * T / (time.perf_counter() - t0)
    model_flops = model.flops_per_token(T) * tok_s
    row = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (dry run)",
           "params": model.num_params(), "batch": f"{B}x{T}", "compile": bool(args.compile and not args.dry_run),
           "warmup_s": round(compile_s, 1), "tokens_per_s": tok_s, "model_tflops": model_flops / 1e12,
           "first_loss": losses[0], "last_loss": losses[-1]}
    if device.type == "cuda":
        measured, nominal = matmul_peak(device), nominal_peak(row["device"])
        row.update(peak_bf16_matmul_tflops=measured / 1e12, mfu_vs_matmul=model_flops / measured,
                   max_memory_gib=torch.cuda.max_memory_allocated() / 2**30)
        if nominal:
            row.update(nominal_peak_tflops=nominal / 1e12, mfu=model_flops / nominal)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="2 steps of a tiny config on the CPU (no CUDA needed)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: the preset's)")
    args = p.parse_args(argv)
    if args.dry_run:
        args.steps, args.warmup = 1, 1
    elif not torch.cuda.is_available():
        print("benchmarks.gpu: no CUDA device here (torch.cuda.is_available() is False); "
              "run it on a GPU machine with a CUDA build of torch, or use --dry-run to smoke-test the code")
        return 1
    row = run(args)
    print(json.dumps(row, indent=2))
    if not args.dry_run:
        RESULTS.mkdir(exist_ok=True)
        with open(RESULTS / "gpu.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
