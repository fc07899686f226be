"""Run one function over shards of work: in this process, in a process pool, or on a Dask cluster.

    results = run_shards(clean_shard, jobs, executor="processes", num_workers=None)
    with open_executor("dask", n_jobs=len(jobs)) as ex:   # one pool or cluster for several steps
        first = run_shards(step_one, jobs, ex); second = run_shards(step_two, more_jobs, ex)

`fn` is a module-level function and each job a small picklable dict (paths and config, never
documents). Results come back in job order whatever ran them, and every job writes files named by
its own shard number, so a stage that merges the results produces the same bytes on any executor
and any number of workers.

Executors: "local" (one after another, here), "processes" (a process pool, one worker per core by
default), "dask" (dask.distributed, an optional extra: the cluster of the Dask task this runs in,
else `dask_address`, else the caller's current client, else a local cluster started for the call),
or any object with `submit(fn, job)`: a `concurrent.futures.Executor` or a `distributed.Client`.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

Job = dict[str, Any]


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_count(n_jobs: int, num_workers: int | None) -> int:
    """None = one per core; never more workers than jobs, never fewer than one."""
    wanted = cpus() if num_workers is None else num_workers
    return max(1, min(wanted, n_jobs))


def run_shards(fn: Callable[[Job], Any], jobs: list[Job], executor: Any = "processes",
               num_workers: int | None = None, dask_address: str | None = None,
               on_result: Callable[[Job, Any], None] | None = None) -> list[Any]:
    """[fn(job) for job in jobs], run where `executor` says; results in job order.

    on_result(job, result), if given, is called in this process as results come in (in job order), e.g. to
    move a progress bar.
    """
    if not jobs:
        return []
    results = _results(fn, jobs, executor, num_workers, dask_address)
    out = []
    for job, result in zip(jobs, results):
        if on_result is not None:
            on_result(job, result)
        out.append(result)
    return out


def _results(fn, jobs: list[Job], executor: Any, num_workers: int | None, dask_address: str | None) -> Iterator[Any]:
    if not isinstance(executor, str):
        yield from _submit_all(executor, fn, jobs)
        return
    workers = worker_count(len(jobs), num_workers)
    if executor == "local" or (executor == "processes" and workers == 1):
        yield from map(fn, jobs)
    elif executor == "processes":
        # fork starts in milliseconds and the jobs share no locks with this process; spawn elsewhere.
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, mp_context=mp.get_context(method)) as pool:
            yield from pool.map(fn, jobs)
    elif executor == "dask":
        with dask_client(workers, dask_address) as client:
            yield from _submit_all(client, fn, jobs)
    else:
        raise ValueError(f"unknown executor {executor!r}: use local, processes or dask")


@contextmanager
def open_executor(executor: Any, n_jobs: int, num_workers: int | None = None,
                  dask_address: str | None = None) -> Iterator[Any]:
    """What to pass as `executor` to several `run_shards` calls in a row, so a stage of several steps starts
    one process pool or Dask cluster rather than one per step: "local", a process pool or a Dask client."""
    if not isinstance(executor, str):
        yield executor
        return
    workers = worker_count(n_jobs, num_workers)
    if executor == "local" or (executor == "processes" and workers == 1):
        yield "local"
    elif executor == "processes":
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, mp_context=mp.get_context(method)) as pool:
            yield pool
    elif executor == "dask":
        with dask_client(workers, dask_address) as client:
            yield client
    else:
        raise ValueError(f"unknown executor {executor!r}: use local, processes or dask")


def _submit_all(executor: Any, fn: Callable[[Job], Any], jobs: list[Job]) -> list[Any]:
    if hasattr(executor, "gather"):  # distributed.Client: impure, so equal jobs never share one result
        return executor.gather([executor.submit(fn, job, pure=False) for job in jobs])
    return [f.result() for f in [executor.submit(fn, job) for job in jobs]]


def _dask_mode(address: str | None) -> str:
    from distributed import get_client, get_worker

    try:
        get_worker()
        return "worker"  # this code is itself a Dask task (e.g. under Prefect's DaskTaskRunner)
    except ValueError:
        pass
    if address:
        return "address"
    try:
        get_client()
        return "current"
    except ValueError:
        return "local"


@contextmanager
def dask_client(workers: int, address: str | None = None) -> Iterator[Any]:
    """A distributed.Client to submit shard jobs to; see the module docstring for which one."""
    try:
        from distributed import Client, LocalCluster, get_client, worker_client
    except ImportError as exc:
        raise RuntimeError("executor 'dask' needs dask.distributed: pip install 'dask[distributed]'") from exc
    mode = _dask_mode(address)
    log.info("dask executor: %s client", mode)
    if mode == "worker":
        with worker_client() as client:  # secedes this worker thread so the shard jobs can use it
            yield client
    elif mode == "address":
        with Client(address) as client:
            yield client
    elif mode == "current":
        yield get_client()
    else:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            yield client
