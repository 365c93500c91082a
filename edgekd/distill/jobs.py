"""Independent pieces of a distillation run side by side, one process per CPU core.

Each job trains or runs a network on `threads` torch threads, exactly as it would alone, so its numbers
do not depend on how many jobs run beside it (or on the machine's core count): parallelism comes from
running whole jobs at once (students, cache shards, the transfer set, exports), never from splitting one
job's arithmetic. (The teacher, trained in this process before the students, may split its own over a
fixed `teacher.threads`: its numbers depend on that count, never on the cores.) With one job everything
runs in this process, in order.

Workers are spawned (no forked torch or OpenMP state) by `concurrent.futures`; a job's exception is
raised again here when its result is read.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

import torch


def cpu_count() -> int:
    """CPUs this process may use (its affinity mask, as taskset or a container sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _init_worker(threads: int, preload, parent: int | None = None) -> None:
    from edgekd.console import quiet_backends

    if parent is not None:
        exit_with(parent)
    quiet_backends()  # as in the CLI's own process
    torch.set_num_threads(threads)
    if preload is not None:
        preload()


def exit_with(parent: int) -> None:
    """End this job process when the run that started it is gone. Killed (SIGKILL, a crash), a run leaves
    its pool's processes behind, adopted by init; they went on training and saving into the folder the
    next run then held (its lock is the parent's), over that run's checkpoints."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.1)
        os._exit(1)

    threading.Thread(target=watch, name="edgekd-parent-watch", daemon=True).start()


@contextmanager
def _native_threads(threads: int):
    """The environment a job process starts with: its native thread pools (OpenMP, OpenBLAS, MKL) sized to
    its `threads`, not to every core of the machine (a job beside the teacher must not take its core)."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({k: str(threads) for k in names})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Jobs:
    """`submit(fn, *args)` -> Future. `n` <= 1: runs `fn` at once in this process. Otherwise `n` spawned
    processes (all started by `start()` or on first use, each running `preload()` first, e.g. loading the
    data its jobs will read, while this process is busy) run jobs concurrently; `fn` and its arguments
    must pickle."""

    def __init__(self, n: int, threads: int = 1, preload=None):
        self.n, self.threads, self.preload = max(1, n), threads, preload
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Spawn the job processes now (they import torch and run `preload()` while this process goes on),
        so the first jobs do not wait for them."""
        if self.n > 1 and self._pool is None:
            self._pool = ProcessPoolExecutor(self.n, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker,
                                             initargs=(self.threads, self.preload, os.getpid()))
            with _native_threads(self.threads):  # read by numpy's and scipy's BLAS as they load
                for _ in range(self.n):  # the pool starts a process per job waiting: all of them, now
                    self._pool.submit(int)

    def submit(self, fn, *args, **kwargs) -> Future:
        if self.n == 1:
            done: Future = Future()
            try:
                done.set_result(fn(*args, **kwargs))
            except Exception as e:  # noqa: BLE001 - handed to the caller through the future
                done.set_exception(e)
            return done
        self.start()
        try:
            return self._pool.submit(fn, *args, **kwargs)
        except BrokenProcessPool:  # a job process died before this job was handed to the pool
            raise _stopped() from None

    def map(self, fn, arg_lists) -> list:
        """`fn(*args)` for each args, concurrently; results in order (the first failure is raised)."""
        futures = [self.submit(fn, *args) for args in arg_lists]
        return [self.result(f) for f in futures]

    @staticmethod
    def result(future: Future):
        """A job's result; a job process that died (killed, out of memory) is `Stopped`, like a killed rank:
        the outputs and resume states stay for the next run."""
        try:
            return future.result()
        except BrokenProcessPool:
            raise _stopped() from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "Jobs":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and self._pool is not None:
            # interrupted (Ctrl-C, SIGTERM) or failed: stop the running jobs now, not after they finish (a
            # student's hundreds of epochs); their resume states stay for the next run
            for p in list(getattr(self._pool, "_processes", {}).values()):
                p.terminate()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            return
        self.close()


def _stopped():
    from edgekd.errors import Stopped

    return Stopped("a job process of this run died (killed, or out of memory); run the same command again: "
                   "finished work is reused and training resumes from its last epoch")
