"""Task runners for the data stages (ingest, clean, filter, tokenize): where their tasks execute.

    quill run --task-runner processes
    quill run --task-runner dask [--task-runner-address tcp://scheduler:8786]    # pip install 'quill[dask]'
    quill run --task-runner ray  [--task-runner-address ray://head:10001]        # pip install 'quill[ray]'

`threads` (the default) runs them in the flow's process; `processes` in a local process pool; `dask`
and `ray` on a local cluster, or on an existing one given its address (the run folder must then be
on storage the workers share). Train, evaluate and register always run in the flow's process.
"""

from __future__ import annotations

from typing import Literal

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

RunnerName = Literal["threads", "processes", "dask", "ray"]
RUNNERS = ("threads", "processes", "dask", "ray")


def task_runner(name: RunnerName, address: str | None = None) -> TaskRunner | None:
    """The runner for `name`; None for plain threads (the flow's default)."""
    if address and name not in ("dask", "ray"):
        raise ValueError(f"--task-runner-address is for dask or ray, not {name}")
    if name == "threads":
        return None
    if name == "processes":
        return ProcessPoolTaskRunner()
    if name == "dask":
        prefect_dask = _extra("prefect_dask", "dask")
        import dask

        # Dask's workers are daemonic by default, and a daemon may not start the process pool the
        # tokenize stage encodes shards with.
        dask.config.set({"distributed.worker.daemon": False})
        return prefect_dask.DaskTaskRunner(address=address) if address else prefect_dask.DaskTaskRunner()
    if name == "ray":
        prefect_ray = _extra("prefect_ray", "ray")
        return prefect_ray.RayTaskRunner(address=address) if address else prefect_ray.RayTaskRunner()
    raise ValueError(f"unknown task runner {name!r}; choose one of {', '.join(RUNNERS)}")


def _extra(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(
            f"--task-runner {extra} needs the optional extra: pip install 'quill[{extra}]' "
            f"(or pip install {module.replace('_', '-')}); {exc}"
        ) from exc
