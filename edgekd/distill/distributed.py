"""Distillation over several processes: PyTorch's own stack, nothing home-made.

    edgekd distill RECIPE --out DIR --nproc N      # N local ranks, launched as torchrun would
    torchrun --nproc-per-node N -m edgekd distill RECIPE --out DIR
    torchrun --nnodes M --node-rank R --rdzv-backend c10d --rdzv-endpoint HOST:PORT \
        --nproc-per-node N -m edgekd distill RECIPE --out DIR     # M machines sharing DIR

Every rank runs the same distill stage. Training is DistributedDataParallel (gloo on CPU, NCCL on
CUDA); each global batch is the one a single process would draw, split across ranks (`ShuffledBatches`),
so a run resumes from its last epoch at any world size. Rank 0 alone writes checkpoints, resume states,
caches and metrics; the others wait at a barrier. The teacher's outputs are computed in shards, one per
rank, into the same memory-mapped cache entry, which rank 0 seals.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch

from edgekd.errors import InputError

TIMEOUT = timedelta(minutes=30)  # a collective waits this long for a rank (rank 0 may be writing a cache)


@dataclass(frozen=True)
class World:
    """This process's place in a run: `rank` of `size` processes, training on `device`."""

    rank: int = 0
    size: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:  # the rank that writes
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (a path, a flag)."""
        if not self.distributed:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)  # NCCL reduces GPU tensors
        torch.distributed.all_reduce(t)
        return float(t.item())

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """The module as DDP sees it (gradients averaged over ranks, buffers from rank 0)."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.device(self.device).index] if self.device.startswith("cuda") else None
        return DistributedDataParallel(module, device_ids=ids)


SINGLE = World()


def resolve_device(device: str) -> str:
    """`auto`: CUDA when present, else CPU. Asking for CUDA without it is bad input."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: this machine has no CUDA GPU that torch can use "
                         f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
                         "use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device {device!r}: choose cpu, cuda or auto")
    return device


def check_nproc(nproc: int, device: str) -> None:
    """Refuse more local ranks than CPUs (cpu) or GPUs (cuda): they would only queue for the same cores."""
    from edgekd.distill.jobs import cpu_count

    if nproc < 1:
        raise InputError(f"--nproc {nproc}: give 1 or more processes")
    have, what = (torch.cuda.device_count(), "CUDA GPUs") if device == "cuda" else (cpu_count(), "CPUs")
    if nproc > have:
        raise InputError(f"--nproc {nproc}: this machine has {have} {what}; use --nproc {have} or fewer "
                         "(or more machines through torchrun's rendezvous)")


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def join(device: str) -> World:
    """This rank's World from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT),
    with the process group started: gloo on CPU, NCCL on CUDA (one GPU per local rank)."""
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device == "cuda":
        if local >= torch.cuda.device_count():
            raise InputError(f"local rank {local} has no GPU (this machine has {torch.cuda.device_count()}); "
                             "start at most one process per GPU (--nproc-per-node)")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=TIMEOUT)
    return World(rank, size, device)


@contextmanager
def joined(device: str):
    """`join`, and the process group ended however the block ends."""
    world = join(device)
    try:
        yield world
    finally:
        if world.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def launch(nproc: int, entrypoint, *args) -> dict:
    """Run `entrypoint(*args)` in `nproc` local ranks with torchrun's launcher (the elastic agent): each
    rank gets torchrun's environment; when one fails the agent stops the others and the error of the
    first failure is raised here. No restarts: a rerun resumes from the last finished epoch."""
    import logging
    import signal

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"edgekd-{os.getpid()}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.5, start_method="spawn")
    agent_log = logging.getLogger("torch.distributed.elastic")
    level = agent_log.level
    agent_log.setLevel(logging.CRITICAL)  # the failure is reported once, below, as the user's error
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # the agent replaces them
    try:
        return elastic_launch(config, entrypoint)(*args)
    except SignalException:  # Ctrl-C or SIGTERM while the ranks ran: an interrupt (outputs kept)
        raise KeyboardInterrupt from None
    except ChildFailedError as e:
        killed = [(r, f) for r, f in e.failures.items() if f.exitcode < 0]
        raise rank_error(*(killed[0] if killed else e.get_first_failure())) from None
    finally:
        agent_log.setLevel(level)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def rank_error(rank: int, failure) -> Exception:
    """The first failed rank's error as edgekd's own (its exit code kept): a rank's InputError stays an
    InputError (exit 2); a killed rank is `Stopped` (exit 1, outputs kept), saying how to resume."""
    from edgekd import errors

    if failure.exitcode < 0:
        return errors.Stopped(
            f"rank {rank} was stopped by {failure.signal_name()}; the launcher stopped the other ranks. Run "
            "the same command again: it resumes from the last finished epoch (at any --nproc)")
    message = failure.message.get("message", "") if isinstance(failure.message, dict) else failure.message
    kind, _, text = str(message).partition(": ")
    cls = getattr(errors, kind.rsplit(".", 1)[-1], None)
    if isinstance(cls, type) and issubclass(cls, errors.EdgekdError):
        return cls(f"rank {rank}: {text}")
    if kind.rsplit(".", 1)[-1] in ("OSError", "FileNotFoundError", "PermissionError", "IsADirectoryError"):
        return errors.InputError(f"rank {rank}: {text}")  # the disk or a path: the user's to fix (exit 2)
    return errors.TrainingError(f"rank {rank} failed (exit code {failure.exitcode}): {message}")
