"""`quill` command line: run the flow, run one stage, generate text, show the config.

    quill run --preset tiny [--task-runner threads|processes|dask|ray]
    quill serve --preset small --cron "0 3 * * 1"      # scheduled retraining + per-stage flows (needs PREFECT_API_URL)
    quill stage tokenize --input data/runs/tiny/filter/manifest.json --out /tmp/tok
    quill generate "Once upon a time" --model models:/quill@champion --stream
    quill export --model models:/quill@champion --format hf out/quill-hf
    quill write --model models:/quill@champion          # type a beginning, read on, add more, in a loop
    quill config --preset small --set train.max_steps=100

Heavy imports (torch, prefect, mlflow) happen inside the commands so `quill --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import traceback
from pathlib import Path

from pipeline import STAGES


def _quiet_defaults() -> None:
    """Embedded-defaults environment: no telemetry, a patient ephemeral Prefect server (the stage loggers reach
    its UI through flows/logs.py)."""
    for key, value in {
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    }.items():
        os.environ.setdefault(key, value)


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _finite_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {raw}")
    return value


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=["tiny", "small", "writer", "base"],
                   help="config preset (default: the file's, else tiny)")
    p.add_argument("--config", metavar="FILE", help="TOML config file applied over the preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set train.max_steps=50 (repeatable)")


def _runner_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task-runner", choices=["threads", "processes", "dask", "ray"], default="threads",
                   help="where the data stages run (default: %(default)s; dask and ray need the extras quill[dask], "
                   "quill[ray])")
    p.add_argument("--task-runner-address", metavar="ADDRESS",
                   help="an existing dask scheduler (tcp://host:8786) or ray cluster (ray://host:10001)")
    p.add_argument("--train-processes", type=int, default=1, metavar="N",
                   help="train on N processes with torchrun + DDP, one per GPU (default: %(default)s, in the flow's "
                   "process)")


def _load(args):
    from pipeline.config import load_config

    return load_config(args.preset, args.config, args.overrides)


def _flow_params(args):
    from flows.params import FlowParams

    return FlowParams(preset=args.preset or "tiny", sources=args.source or [], overrides=args.overrides,
                      config_file=args.config, run_folder=args.run_folder, train_processes=args.train_processes)


def cmd_run(args) -> int:
    params = _flow_params(args)
    params.config()  # a bad preset, file or override fails here, before any server starts
    result = None
    if not os.environ.get("PREFECT_API_URL"):  # embedded default: no temporary server when nothing would run
        from flows.uptodate import finished_run

        result, lines = finished_run(params)
        print("\n".join(lines) + ("\nEvery stage is up to date: nothing to run (no Prefect server started)."
                                  if result else "\nStarting the flow."))
    if result is None:
        from flows.corpus_to_model import StageFailed, corpus_to_model
        from flows.runners import task_runner

        runner = task_runner(args.task_runner, args.task_runner_address)
        flow = corpus_to_model.with_options(task_runner=runner) if runner else corpus_to_model
        try:
            result = flow(params)
        except StageFailed as exc:
            print(f"quill: error: {exc}\nFinished stages are kept; rerun the same command to resume at that stage.",
                  file=sys.stderr)
            return 1
    print(f"\nRegistered model {result['model_name']} version {result['version']}"
          f" ({'champion' if result['champion'] else 'challenger'}: {result['decision']})")
    print(f"Run folder: {result['run_dir']}\n")
    for i, text in enumerate(result["samples"][:3], 1):
        print(f"--- sample {i} ---\n{text}\n")
    return 0


def cmd_stage(args) -> int:
    cfg = _load(args)
    out = Path(args.out)
    name = args.name
    inputs = list(args.input)  # ingest sources stay strings: Path() would fold the '//' of a URL
    single = Path(inputs[0]) if inputs else None
    # Local stage runs log apart from the scheduled flow's runs ("quill" -> "quill-local").
    local_experiment = cfg.register.experiment = f"{cfg.register.experiment}-local"
    if name != "ingest" and (len(inputs) != 1):
        raise SystemExit(f"quill stage {name}: give exactly one --input manifest (the previous stage's manifest.json)")
    if name == "ingest":
        from pipeline.ingest import ingest

        m = ingest(inputs or cfg.sources, out, cfg.ingest, force=args.force)
    elif name == "clean":
        from pipeline.clean import clean

        m = clean(single, out, cfg.clean, force=args.force)
    elif name == "filter":
        from pipeline.filter import filter_docs

        m = filter_docs(single, out, cfg.filter, force=args.force)
    elif name == "tokenize":
        from pipeline.tokenize import tokenize

        m = tokenize(single, out, cfg.tokenize, force=args.force)
    elif name == "train":
        from pipeline.tracking import MlflowTracker, NullTracker
        from pipeline.train import train

        tracker = NullTracker() if args.no_mlflow else MlflowTracker.start(local_experiment, f"train {out}")
        try:
            m = train(single, out, cfg.train, cfg.model, tracker, force=args.force)
        except BaseException as exc:  # Ctrl-C too: the run must not stay RUNNING
            if tracker.run_id:
                tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        if tracker.run_id:
            tracker.end()
    elif name == "evaluate":
        from pipeline.evaluate import evaluate

        m = evaluate(single, out, cfg.evaluate, force=args.force)
    else:
        from pipeline.register import register

        if cfg.register.move_aliases and not args.move_aliases:
            cfg.register.move_aliases = False
            print("quill stage register: aliases left alone (--move-aliases moves challenger/champion)",
                  file=sys.stderr)
        m = register(single, out, cfg.register, force=args.force)
    print(m.path)
    return 0


def cmd_serve(args) -> int:
    from flows.runners import task_runner
    from flows.serve import api_url, deployments, serve_all

    params = _flow_params(args)
    schedule = params.config().schedule
    for key in ("cron", "timezone"):
        if getattr(args, key):
            setattr(schedule, key, getattr(args, key))
    if args.name:
        schedule.deployment = args.name
    if args.paused:
        schedule.active = False
    runner = task_runner(args.task_runner, args.task_runner_address)
    if args.dry_run:
        for d in deployments(params, schedule, runner, stages=not args.no_stages):
            cron = [s.schedule.cron for s in d.schedules or []]
            schedule = cron[0] if cron else "manual"
            print(f"{d.flow_name}/{d.name}  schedule={schedule}  parameters={json.dumps(d.parameters)}")
        return 0
    if not api_url():
        raise SystemExit("quill serve: no Prefect server configured. Start one and point Quill at it:\n"
                         "  prefect server start --host 127.0.0.1 --port 4200\n"
                         "  export PREFECT_API_URL=http://127.0.0.1:4200/api")
    print(f"Serving corpus_to_model/{schedule.deployment} on cron '{schedule.cron}' ({schedule.timezone})"
          f"{'' if args.no_stages else ' and stage-<name>/manual'}; UI: {api_url().removesuffix('/api')}")
    serve_all(params, schedule, runner, stages=not args.no_stages, limit=args.limit)
    return 0


def resolve_checkpoint(model: str) -> Path:
    """A checkpoint folder, or an MLflow model URI (models:/quill@champion) downloaded to the local cache."""
    if not model.startswith(("models:/", "runs:/")):
        path = Path(model)
        if not (path / "model.safetensors").exists():
            raise SystemExit(f"{model}: not a checkpoint folder (no model.safetensors) and not a models:/ URI")
        return path
    from pipeline.tracking import configure, download_checkpoint, pinned_uri

    ckpt = download_checkpoint(model)  # first: an unknown model is a one-line error there
    if "@" in model:  # an alias moves: say which version it named this time
        configure()
        print(f"quill: {model} is {pinned_uri(model)}", file=sys.stderr)
    return ckpt


def _sampling_defaults() -> tuple[dict, tuple]:
    """model/sampling.py's SETTINGS and STRATEGIES, for the help text. The file is loaded by path: importing
    model.sampling would run model/__init__.py, which imports torch, and `quill --help` must stay fast."""
    import importlib.util

    package = importlib.util.find_spec("model").submodule_search_locations[0]  # finds, does not run, the package
    spec = importlib.util.spec_from_file_location("quill_sampling_defaults", Path(package) / "sampling.py")
    module = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)  # (the dataclass looks its module up in sys.modules)
    return module.SETTINGS, module.STRATEGIES


def sampling_settings(args) -> dict:
    """The sampling settings given on the command line (None: not given, so the shared default)."""
    from model.sampling import SETTINGS

    return {name: getattr(args, name) for name in SETTINGS}


def sample_separator(n: int, total: int) -> str:
    """The line that opens sample n of total (1-based): a sample may hold blank lines, so they are not enough."""
    return f"===== sample {n}/{total} =====" if total > 1 else ""


def cmd_generate(args) -> int:
    from model import generate, load_checkpoint, stream
    from model.sampling import SamplingConfig
    from model.tokenizer import Tokenizer

    ckpt = resolve_checkpoint(args.model)
    model, _, _ = load_checkpoint(ckpt)
    tok = Tokenizer(ckpt / "tokenizer.model")
    cfg = SamplingConfig.from_settings(sampling_settings(args), eos_id=None if args.ignore_eos else tok.eos_id)
    seed = cfg.seed
    if args.interactive or args.command == "write":
        from flows.writer import write_loop

        write_loop(model, tok, cfg, args.prompt)
        return 0
    ids = tok.encode_prompt(args.prompt)
    ended = []
    if args.stream and not args.json:
        for n in range(args.n):
            cfg.seed = seed + n
            if args.n > 1:
                sys.stdout.write(("\n" if n else "") + sample_separator(n + 1, args.n) + "\n")
            dec = tok.stream_decoder(ids)
            sys.stdout.write(args.prompt)
            for token in stream(model, ids, cfg):
                sys.stdout.write(dec.push(token))
                sys.stdout.flush()
            sys.stdout.write(dec.finish() + "\n")
            ended.append(len(dec.new_ids) < cfg.max_new_tokens)
        _report_ended(ended, cfg)
        return 0
    outs = []
    for n in range(args.n):
        cfg.seed = seed + n
        new = generate(model, [ids], cfg)[0]
        outs.append(args.prompt + tok.decode_continuation(ids, new))
        ended.append(len(new) < cfg.max_new_tokens)
    if args.json:
        print(json.dumps({"model": args.model, "prompt": args.prompt, "samples": outs, "stopped_on_eos": ended},
                         ensure_ascii=False, indent=2))
    elif args.n == 1:
        print(outs[0])
    else:
        print("\n\n".join(f"{sample_separator(n, args.n)}\n{text}" for n, text in enumerate(outs, 1)))
    _report_ended(ended, cfg)
    return 0


def cmd_export(args) -> int:
    from model.hf_export import export_hf

    ckpt = resolve_checkpoint(args.model)
    card = ckpt / "MODEL_CARD.md"  # registered versions carry theirs (pipeline/register.py)
    out = export_hf(ckpt, Path(args.out), model_card=card.read_text(encoding="utf-8") if card.is_file() else None)
    [arch] = json.loads((out / "config.json").read_text(encoding="utf-8"))["architectures"]
    print(f"{out}: Hugging Face transformers folder ({arch}); load it with "
          f"AutoModelForCausalLM.from_pretrained({str(out)!r}) and AutoTokenizer.from_pretrained(...)")
    return 0


def _report_ended(ended: list[bool], cfg) -> None:
    """On stderr (stdout stays the text): how many samples the model ended itself, at end-of-text."""
    if cfg.eos_id is None:
        return
    n = sum(ended)
    print(f"quill: {n} of {len(ended)} samples stopped on their own (end-of-text); {len(ended) - n} reached "
          f"--max-new-tokens {cfg.max_new_tokens}", file=sys.stderr)


def cmd_serve_model(args) -> int:
    from flows.model_server import serve_model

    serve_model(args.model, args.host, args.port, args.grace)
    return 0


def cmd_config(args) -> int:
    print(_load(args).model_dump_json(indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quill", description="Quill: corpus-to-model workflow for small writing LMs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the whole flow (Prefect) and register a model",
                       description="Run ingest -> clean -> filter -> tokenize -> train -> evaluate -> register as a "
                       "Prefect flow. Without PREFECT_API_URL a temporary local Prefect server is used; MLflow logs to "
                       "MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db.")
    _config_args(p)
    p.add_argument("--source", action="append", metavar="PATH", help="corpus file/folder/glob (repeatable; default: "
                   "data/sample)")
    p.add_argument("--run-folder", "--run-name", dest="run_folder",
                   help="folder under data/runs/ (default: the preset name); reruns reuse finished stages")
    _runner_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("serve", help="serve the flow on a cron schedule, plus one flow per stage, for the Prefect UI",
                       description="Register corpus_to_model on the config's cron schedule (section [schedule]) and "
                       "one deployment per stage (stage-<name>/manual), then run their flow runs from this process "
                       "until Ctrl-C. Needs a Prefect server (PREFECT_API_URL). The given config is each deployment's "
                       "default parameters; the UI can change them per run.")
    _config_args(p)
    p.add_argument("--source", action="append", metavar="PATH", help="corpus file/folder/glob (repeatable; default: "
                   "the config's)")
    p.add_argument("--run-folder", "--run-name", dest="run_folder",
                   help="folder under data/runs/ (default: the preset name)")
    p.add_argument("--cron", help="cron string, e.g. '0 3 * * 1' (default: schedule.cron)")
    p.add_argument("--timezone", help="IANA time zone of the cron string (default: schedule.timezone)")
    p.add_argument("--name", help="deployment name of corpus_to_model (default: schedule.deployment)")
    p.add_argument("--paused", action="store_true", help="deploy the schedule paused (runs only when triggered)")
    p.add_argument("--no-stages", action="store_true", help="serve only corpus_to_model, not the per-stage flows")
    p.add_argument("--limit", type=int, default=1, help="flow runs at a time (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print the deployments and exit")
    _runner_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("stage", help="run one stage locally, without Prefect",
                       description="Run one stage and print the path of its manifest.json. A stage whose manifest "
                       "matches its inputs and config is skipped (use --force to redo it).")
    p.add_argument("name", choices=STAGES)
    p.add_argument("--input", action="extend", nargs="+", default=[], metavar="PATH",
                   help="the previous stage's manifest.json (for ingest: one or more corpus files/folders/globs/URLs; "
                   "--input a b and --input a --input b are the same)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder; manifest.json is written there last")
    p.add_argument("--force", action="store_true", help="recompute even if the manifest is up to date")
    p.add_argument("--no-mlflow", action="store_true", help="train: do not log to MLflow")
    p.add_argument("--move-aliases", action="store_true",
                   help="register: point challenger (and champion, if the gate says so) at the new version")
    _config_args(p)
    p.set_defaults(func=cmd_stage)

    p = sub.add_parser("generate", aliases=["write"], help="write text with a trained model (write: interactively)",
                       description="Generate text from a checkpoint folder or a registered model. Each sample ends at "
                       "end-of-text (the model ends the story) or after --max-new-tokens. `quill write` (or "
                       "--interactive) writes with you: type a beginning, read the continuation, type more or press "
                       "Enter to keep going, in a loop. The sampling defaults are the ones the served model and the "
                       "evaluate stage use (model/sampling.py).")
    p.add_argument("prompt", nargs="?", default="", help="the beginning (default: none: the model starts a document)")
    p.add_argument("--model", default="models:/quill@champion", help="checkpoint folder or MLflow URI (default: "
                   "%(default)s)")
    defaults, strategies = _sampling_defaults()

    def default(name: str) -> str:
        return f"default: {defaults[name]}" + (", 0 = off" if name in ("top_k", "top_p", "min_p") else "")

    p.add_argument("--strategy", choices=strategies, help=default("strategy"))
    p.add_argument("--max-new-tokens", type=int, help=default("max_new_tokens"))
    p.add_argument("--temperature", type=_finite_float, help=default("temperature") + "; 0 = greedy")
    p.add_argument("--top-k", type=int, help=default("top_k"))
    p.add_argument("--top-p", type=_finite_float, help=default("top_p"))
    p.add_argument("--min-p", type=_finite_float, help=default("min_p"))
    p.add_argument("--repetition-penalty", type=_finite_float, help=default("repetition_penalty") + "; 1 = off")
    p.add_argument("--no-repeat-ngram", type=int, help=default("no_repeat_ngram") + "; 0 = off")
    p.add_argument("--num-beams", type=int, help=default("num_beams") + " (strategy beam)")
    p.add_argument("--seed", type=int, help=default("seed") + "; sample i uses seed + i")
    p.add_argument("--n", type=_positive_int, default=1, help="number of samples")
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--ignore-eos", action="store_true", help="keep writing past end-of-text up to --max-new-tokens")
    p.add_argument("--interactive", action="store_true", help="write together in a loop (same as `quill write`)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export", help="write a model in a format other tools load",
                       description="Export a checkpoint folder or registered model. --format hf writes a Hugging Face "
                       "transformers folder (config.json, model.safetensors, tokenizer.json, MODEL_CARD.md): rope "
                       "models as GPTNeoXForCausalLM, learned/sinusoidal positions as GPT2LMHeadModel; qk_norm models "
                       "cannot be exported.")
    p.add_argument("out", metavar="OUT", help="output folder (replaced if it exists)")
    p.add_argument("--model", default="models:/quill@champion", help="checkpoint folder or MLflow URI (default: "
                   "%(default)s)")
    p.add_argument("--format", choices=["hf"], default="hf", help="hf: Hugging Face transformers (default)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve-model", help="serve a registered model over HTTP (MLflow's scoring protocol)",
                       description="Serve a registered model at /invocations with MLflow's scoring server (the "
                       "request and response formats of `mlflow models serve`), stricter: unknown param names get "
                       "HTTP 400, generation stops when the client disconnects, and SIGTERM stops the server after at "
                       "most --grace seconds. Limits per request come from the version's model_config "
                       "(register.serve_*).")
    p.add_argument("--model", default="models:/quill@champion", help="MLflow model URI (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=5001, help="port (default: %(default)s)")
    p.add_argument("--grace", type=float, default=5.0, metavar="S",
                   help="seconds requests in flight get after SIGTERM or Ctrl-C (default: %(default)s)")
    p.set_defaults(func=cmd_serve_model)

    p = sub.add_parser("config", help="print the resolved config as JSON")
    _config_args(p)
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: "
                        "%(message)s")
    for noisy in ("httpx", "httpcore", "alembic", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _quiet_defaults()
    try:
        return args.func(args)
    except (ValueError, OSError, FloatingPointError) as exc:  # bad input or environment: say what, not where
        if args.verbose:
            traceback.print_exc()
        print(f"quill: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
