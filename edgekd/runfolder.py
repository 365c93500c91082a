"""A run folder (`--out`): its lock, its record of the recipe that made it, and the sweep of temporary
files a killed run left behind.

Everything downstream of a stage is derived from the run record, never from what happens to be in the
folder: a student renamed in the recipe does not ship the old student's files.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from edgekd.errors import InputError
from edgekd.fileio import read_json, write_json

STATE_DIR = ".edgekd"
RECORD = "run.json"
LOCK = "lock"


class Busy(InputError):
    """Another edgekd process holds the output folder."""


@dataclass(frozen=True)
class RunRecord:
    recipe_name: str
    students: tuple[str, ...]
    platforms: dict[str, str]  # bundle name -> export format
    policy: str | None = None  # the policy file the run's gate read (None: the built-in policy)

    def bench_files(self, out: Path) -> list[Path]:
        return [Path(out) / "bench" / s / "bench.json" for s in self.students]


def write_record(out: Path, record: RunRecord, recipe_json: dict) -> None:
    write_json(Path(out) / STATE_DIR / RECORD, {"recipe_name": record.recipe_name,
                                                "students": list(record.students),
                                                "platforms": record.platforms, "policy": record.policy,
                                                "recipe": recipe_json})


def read_record(out: Path) -> RunRecord | None:
    """The record of an `edgekd run` folder, or None when `out` is not one."""
    path = Path(out) / STATE_DIR / RECORD
    if not path.is_file():
        return None
    raw = read_json(path, "run record", "re-run `edgekd run` on this folder")
    try:
        policy = raw.get("policy")
        return RunRecord(str(raw["recipe_name"]), tuple(str(s) for s in raw["students"]),
                         {str(k): str(v) for k, v in dict(raw["platforms"]).items()},
                         None if policy is None else str(policy))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: malformed run record (field {e}); "
                         "re-run `edgekd run` on this folder") from None


def check_writable(out: Path) -> bool:
    """`--out` must be a folder edgekd can write: refuse a file, a read-only place, a name too long.
    Returns whether the folder was created here."""
    out = Path(out)
    try:
        existed = out.exists()
        if existed and not out.is_dir():
            raise InputError(f"{out}: --out is a file, not a folder; choose a folder name")
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".edgekd-write-test.{os.getpid() % 10**8:08d}.tmp"  # a name the sweep knows
        probe.write_bytes(b"")
        probe.unlink()
        return not existed
    except OSError as e:
        raise InputError(f"{out}: cannot write the output folder (--out): {e.strerror}; "
                         f"{io_fix(e)}") from None


def io_fix(e: OSError) -> str:
    """What a user does about an I/O error."""
    return {
        errno.ENOSPC: "free space on that disk or choose --out on another one",
        errno.EDQUOT: "free space (disk quota) or choose --out elsewhere",
        errno.EROFS: "the file system is read-only: choose a writable --out",
        errno.EACCES: "no permission there: choose a writable --out",
        errno.EPERM: "no permission there: choose a writable --out",
        errno.ENAMETOOLONG: "the path is too long for the file system: use a shorter name",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
    }.get(e.errno, "check the path")


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold `out/.edgekd/lock` for the block; a second process on the same folder is refused with the
    holder's pid. The lock dies with its process (flock), so a killed run never blocks the next."""
    state = Path(out) / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(state / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise Busy(f"{out}: another edgekd process (pid {holder}) is writing this output folder; "
                       "wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        sweep_temporaries(Path(out))
        yield
    finally:
        os.close(fd)  # releases the flock


# edgekd's own temporary names: `.NAME.XXXXXXXX.tmp` (fileio.atomic_path/atomic_dir, mkstemp's 8
# characters) and `.STEM.HEX8.tmp.SUFFIX` (export's files awaiting their parity check)
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")
_SWEEP_DEPTH = 4  # out/export/STUDENT/.file.tmp is as deep as edgekd writes


def sweep_temporaries(out: Path) -> list[Path]:
    """Remove the temporary files and folders a killed process left: under the lock nothing else is
    writing them. Only edgekd's own temporary names, only as deep as edgekd writes, never inside other
    hidden folders (a user's `--out .` may hold .git or .venv). Resume states are kept."""
    removed = []
    out = Path(out)
    for root, dirs, files in os.walk(out):
        depth = len(Path(root).relative_to(out).parts)
        for name in [*dirs, *files]:
            if _TEMPORARY.match(name):
                p = Path(root) / name
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
        dirs[:] = [d for d in dirs if not d.startswith(".") and depth < _SWEEP_DEPTH]
    return removed
