"""`mlflow models serve -m models:/quill@champion --env-manager local` and `quill serve-model` answer
/invocations with text.

The server is a real subprocess on loopback (a free port), started against the session's
registered store; every wait is bounded and the server is stopped in a finally.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

READY_WITHIN_S = 90
REQUEST_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> tuple[int, dict]:
    """(status, JSON body) of a bounded POST; HTTP errors are answers too."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def wait_until_healthy(base: str, proc: subprocess.Popen, log: Path) -> None:
    """Poll /health until 200, the server exits, or READY_WITHIN_S pass."""
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"server not healthy within {READY_WITHIN_S} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it was started in its own session), then SIGKILL if needed."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def test_serve_champion_over_http(registered_store, tmp_path: Path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    venv_bin = str(Path(sys.executable).parent)
    # The venv's bin on PATH: the server launches `uvicorn` by name ("uvicorn: not found" otherwise).
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered_store, "MLFLOW_REGISTRY_URI": registered_store,
           "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = tmp_path / "server.log"
    cmd = [str(Path(venv_bin) / "mlflow"), "models", "serve", "-m", "models:/quill@champion", "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group: stop() ends uvicorn too
    try:
        wait_until_healthy(base, proc, log)
        status, answer = post(f"{base}/invocations", {
            "dataframe_split": {"columns": ["prompt"], "data": [["Once upon a time"], ["The sea"]]},
            "params": {"max_new_tokens": 5, "seed": 1},
        })
        assert status == 200, answer
        texts = answer["predictions"]
        assert len(texts) == 2 and texts[0].startswith("Once upon a time") and texts[1].startswith("The sea")
        assert len(texts[0]) > len("Once upon a time")  # it wrote something

        status, answer = post(f"{base}/invocations", {"inputs": ["Once"], "params": {"strategy": "shout"}})
        assert status == 400 and "strategy" in answer.get("message", ""), answer
    finally:
        stop(proc)


def test_quill_serve_model_refuses_unknown_params_and_stops_on_sigterm(registered_store, tmp_path: Path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered_store, "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = tmp_path / "server.log"
    cmd = [str(Path(sys.executable).parent / "quill"), "serve-model", "--port", str(port), "--grace", "2"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_until_healthy(base, proc, log)
        status, answer = post(f"{base}/invocations", {"inputs": ["Once upon a time"],
                                                      "params": {"max_new_tokens": 5, "seed": 1}})
        assert status == 200 and answer["predictions"][0].startswith("Once upon a time"), answer
        status, answer = post(f"{base}/invocations", {"inputs": ["Once"], "params": {"max_new_token": 5}})
        assert status == 400 and "unknown params: max_new_token" in answer["message"], answer
        os.killpg(proc.pid, signal.SIGTERM)
        # uvicorn shuts down (requests in flight get --grace seconds), then ends by the signal it got
        assert proc.wait(timeout=30) == -signal.SIGTERM, log.read_text()[-3000:]
        assert "Finished server process" in log.read_text()
    finally:
        stop(proc)
