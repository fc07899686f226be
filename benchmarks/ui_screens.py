"""Real UIs, not part of CI: start a Prefect server and the MLflow UI on 127.0.0.1, run the tiny flow
against them, and take headless Chromium screenshots of the flow run page, its training-summary artifact
and the registered model page.

    apt-get install -y chromium chromium-driver           # once (Debian)
    .venv/bin/python -m benchmarks.ui_screens             # ~3-4 min on 2 cores; writes data/screens/*.png

Both servers use a temporary PREFECT_HOME and MLflow store and free ports; both are stopped at
the end. Each page is also dumped as rendered HTML, and the script checks that the flow run page
names the run and its tasks and the model page shows the registered version (exit 1 if not).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--window-size=1400,900",
            "--virtual-time-budget=15000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f} s")


def chromium(url: str, png: Path, timeout: float) -> str:
    """Screenshot of `url` into `png`; returns the rendered DOM."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        raise SystemExit("chromium not found: apt-get install -y chromium chromium-driver")
    with tempfile.TemporaryDirectory() as profile:
        flags = [*CHROMIUM, f"--user-data-dir={profile}"]
        subprocess.run([browser, *flags, f"--screenshot={png}", url], capture_output=True, timeout=timeout, check=True)
    with tempfile.TemporaryDirectory() as profile:
        flags = [*CHROMIUM, f"--user-data-dir={profile}"]
        return subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=timeout,
                              check=True).stdout


def artifact_id(flow_run_id: str, key: str) -> str:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    only = ArtifactFilter(key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        return str(client.read_artifacts(artifact_filter=only)[0].id)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "data" / "screens"))
    p.add_argument("--set", dest="overrides", action="append", default=["train.max_steps=60", "train.eval_every=30"],
                   metavar="SECTION.KEY=VALUE", help="config overrides for the tiny run (default: a short training)")
    p.add_argument("--server-timeout", type=float, default=120)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="quill-ui-"))
    prefect_port, mlflow_port = free_port(), free_port()
    store = f"sqlite:///{work / 'mlflow.db'}"
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect"), "PREFECT_SERVER_API_HOST": "127.0.0.1",
           "PREFECT_SERVER_API_PORT": str(prefect_port), "DO_NOT_TRACK": "true",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("PREFECT_API_URL", None)
    servers = [
        start([str(BIN / "prefect"), "server", "start"], env, work / "prefect.log"),
        start([str(BIN / "mlflow"), "ui", "--backend-store-uri", store,
               "--default-artifact-root", str(work / "artifacts"),
               "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"], env, work / "mlflow.log"),
    ]
    prefect_ui, mlflow_ui = f"http://127.0.0.1:{prefect_port}", f"http://127.0.0.1:{mlflow_port}"
    try:
        wait_healthy(f"{prefect_ui}/api/health", servers[0], args.server_timeout)
        wait_healthy(f"{mlflow_ui}/health", servers[1], args.server_timeout)
        print(f"Prefect UI {prefect_ui}, MLflow UI {mlflow_ui}", flush=True)
        os.environ.update(env, PREFECT_API_URL=f"{prefect_ui}/api", MLFLOW_TRACKING_URI=store,
                          QUILL_MLFLOW_UI=mlflow_ui, PREFECT_LOGGING_EXTRA_LOGGERS="pipeline,model")
        from flows.corpus_to_model import FlowParams, corpus_to_model

        result = corpus_to_model(FlowParams(preset="tiny", overrides=[f"data_root={work / 'runs'}", *args.overrides],
                                            sources=[str(REPO / "data" / "sample")]))
        pages = {
            "prefect_flow_run": (f"{prefect_ui}/runs/flow-run/{result['flow_run_id']}",
                                 ["corpus_to_model", "train", "register"]),
            "prefect_training_summary": (f"{prefect_ui}/artifacts/artifact/"
                                         f"{artifact_id(result['flow_run_id'], 'training-summary')}",
                                         ["Training summary", "val_bpb"]),
            "mlflow_registered_model": (f"{mlflow_ui}/#/models/{result['model_name']}",
                                        [result["model_name"], f"Version {result['version']}"]),
        }
        failed = []
        for name, (url, expect) in pages.items():
            dom = chromium(url, out / f"{name}.png", timeout=90)
            (out / f"{name}.html").write_text(dom)
            missing = [e for e in expect if e not in dom]
            size = (out / f"{name}.png").stat().st_size
            print(f"{name}: {out / f'{name}.png'} ({size // 1024} KB) {url}"
                  + (f"  MISSING {missing}" if missing else "  ok"))
            failed += missing
        return 1 if failed else 0
    finally:
        for proc in servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in servers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
