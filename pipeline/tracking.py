"""Experiment tracking seam: stages log through a Tracker; MLflow is the one implementation.

Tracking location: `MLFLOW_TRACKING_URI` when set (a real server, say), else the embedded store
`sqlite:///mlruns/mlflow.db` relative to the working directory. Experiments created on a SQLite
store keep their artifacts beside the database (`mlruns/artifacts`); on a server, artifacts go
where the server says. Runs are addressed by id through `MlflowClient`, never through the
thread-local "active run", so a Prefect task in any thread can log to the run its flow opened.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)
DEFAULT_STORE = Path("mlruns")


class Tracker(Protocol):
    run_id: str | None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...


class NullTracker:
    """Same signatures, does nothing: stages run without any tracking server."""

    run_id = None

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(DEFAULT_STORE / 'mlflow.db').resolve()}"


def configure() -> str:
    """Point MLflow at the configured store (never at import time); returns the URI."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment_id(name: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifacts = None
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        # A SQLite store's default artifact root is ./mlruns under whatever the cwd is: keep the
        # artifacts beside the database instead (mlruns/mlflow.db -> mlruns/artifacts).
        artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=artifacts)


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:6000]
    return out


OWNER_HOST, OWNER_PID = "quill.host", "quill.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def close_abandoned_runs(exp_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs that a process on this host started and that process is gone (a train
    killed with SIGKILL cannot end its own run); returns their ids. Runs of other hosts are left alone."""
    from mlflow import MlflowClient

    client = MlflowClient()
    host = socket.gethostname()
    runs = client.search_runs([exp_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{OWNER_HOST}` = "
                              f"'{host}'", max_results=200)
    closed = []
    for run in runs:
        pid = run.data.tags.get(OWNER_PID, "")
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            client.set_tag(run.info.run_id, "quill.ended", f"process {pid} was gone; closed by the next run")
            client.set_terminated(run.info.run_id, "KILLED")
            closed.append(run.info.run_id)
            log.warning("MLflow run %s of process %s (gone) marked KILLED", run.info.run_id, pid)
    return closed


class MlflowTracker:
    """Logs to one MLflow run by id."""

    def __init__(self, run_id: str):
        from mlflow import MlflowClient

        configure()
        self.client = MlflowClient()
        self.run_id = run_id

    @classmethod
    def start(cls, experiment: str, run_name: str, tags: dict[str, str] | None = None) -> MlflowTracker:
        """A new run, tagged with this process (host and pid), after closing the runs of dead processes."""
        from mlflow import MlflowClient

        configure()
        exp = experiment_id(experiment)
        close_abandoned_runs(exp)
        owner = {OWNER_HOST: socket.gethostname(), OWNER_PID: str(os.getpid())}
        run = MlflowClient().create_run(exp, run_name=run_name, tags={**owner, **(tags or {})})
        return cls(run.info.run_id)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def system_metrics(self):
        """A started MLflow system-metrics monitor (CPU, memory, GPU) for this run; call .finish()."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(self.run_id, sampling_interval=5, samples_before_logging=1)
        monitor.start()
        return monitor

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)

    @property
    def url(self) -> str:
        run = self.client.get_run(self.run_id)
        return f"{ui_url()}/#/experiments/{run.info.experiment_id}/runs/{self.run_id}"


def ui_url() -> str:
    """Where the MLflow UI is, for links: QUILL_MLFLOW_UI, else the tracking server itself (an http(s)
    MLFLOW_TRACKING_URI serves its UI at the same address), else `make ui`'s http://127.0.0.1:5000."""
    uri = tracking_uri()
    derived = uri if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return os.environ.get("QUILL_MLFLOW_UI", derived).rstrip("/")


MODEL_CACHE = Path("data/cache/models")


def pinned_uri(model_uri: str) -> str | None:
    """The immutable form of a model URI (models:/quill@champion -> models:/quill/3), None if it has none."""
    if model_uri.startswith("runs:/"):
        return model_uri
    name, _, ref = model_uri.removeprefix("models:/").partition("@")
    if ref:
        from mlflow import MlflowClient

        return f"models:/{name}/{MlflowClient().get_model_version_by_alias(name, ref).version}"
    # models:/quill/3, not .../Production
    return model_uri if model_uri.rstrip("/").rsplit("/", 1)[-1].isdigit() else None


def download_checkpoint(model_uri: str, cache: Path | None = None) -> Path:
    """The checkpoint folder inside a logged Quill model (models:/quill@champion, runs:/...).

    A model version never changes, so each one is downloaded once into `cache` (default
    `$QUILL_MODEL_CACHE` or data/cache/models), keyed by tracking URI and version: after the
    first call, `quill generate` starts without a download. An alias is resolved on every call,
    so a new champion is fetched as soon as the alias moves.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    configure()
    try:
        return _download_checkpoint(model_uri, cache)
    except MlflowException as exc:  # unknown model, version or alias: one line, not MLflow's traceback
        raise FileNotFoundError(f"{model_uri}: no such model in the MLflow registry at {mlflow.get_tracking_uri()} "
                                f"({exc.message.splitlines()[0] if exc.message else exc})") from exc


def _download_checkpoint(model_uri: str, cache: Path | None) -> Path:
    import hashlib
    import shutil

    import mlflow

    pinned = pinned_uri(model_uri)
    if pinned is None:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    else:
        key = hashlib.sha256(f"{mlflow.get_tracking_uri()}\n{pinned}".encode()).hexdigest()[:20]
        local = Path(cache or os.environ.get("QUILL_MODEL_CACHE") or MODEL_CACHE) / key
        if not local.is_dir():
            tmp = local.with_name(f".{key}.tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            mlflow.artifacts.download_artifacts(artifact_uri=pinned, dst_path=str(tmp))
            try:
                os.replace(tmp, local)  # whole or not at all: a killed download is never mistaken for a model
            except OSError:  # another process finished the same download first
                shutil.rmtree(tmp, ignore_errors=True)
    found = next(local.rglob("model.safetensors"), None)
    if found is None:
        raise FileNotFoundError(f"{model_uri}: the downloaded model holds no checkpoint (model.safetensors)")
    return found.parent
