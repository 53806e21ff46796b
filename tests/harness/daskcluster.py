"""A Dask cluster started with Dask's own commands, as on separate machines.

``DaskCluster(workers=2).start()`` runs ``dask scheduler`` and ``dask worker``
processes (from the Python that runs the tests) on loopback; ``.address`` is
the scheduler's ``tcp://`` address; ``stop()`` ends them. ``worker_pids()``
lists the worker processes of a ``LocalCluster`` started under a given pid
(multiprocessing children), for tests that kill workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from .net import LOOPBACK, free_port
from .wait import wait_until

# Dask's own command, installed next to the Python running the tests.
DASK = str(Path(sys.executable).parent / "dask")


class DaskCluster:
    def __init__(self, workers: int = 2, workdir: Path | None = None) -> None:
        self.workers = workers
        self.workdir = workdir
        self.port = free_port()
        self.address = f"tcp://{LOOPBACK}:{self.port}"
        self.processes: list[subprocess.Popen] = []

    def _spawn(self, args: list[str]) -> subprocess.Popen:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir,
                                   start_new_session=True)
        self.processes.append(process)
        return process

    def start(self, timeout: float = 60.0) -> DaskCluster:
        self._spawn([DASK, "scheduler", "--host", LOOPBACK, "--port", str(self.port), "--no-dashboard"])
        for _ in range(self.workers):
            self._spawn([DASK, "worker", self.address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                                  "--host", LOOPBACK])
        from distributed import Client

        with Client(self.address, timeout=f"{int(timeout)}s") as client:
            wait_until(lambda: len(client.scheduler_info()["workers"]) >= self.workers, timeout, 0.2,
                       what="dask workers to join the scheduler")
        return self

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def worker_pids(parent: int) -> list[int]:
    """The Dask worker processes of a LocalCluster started under ``parent``:
    spawned children, or the children of its multiprocessing fork server."""
    pids = []
    try:
        children = psutil.Process(parent).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    for child in children:
        try:
            cmdline = " ".join(child.cmdline())
            parent_cmdline = " ".join(child.parent().cmdline())
        except (psutil.Error, AttributeError):
            continue
        if "spawn_main" in cmdline or "forkserver" in parent_cmdline:
            pids.append(child.pid)
    return pids
