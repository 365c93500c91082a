import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path


def run_cli(*args, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real `edgekd` command (exit codes and stderr as a user sees them). tests/ is on its
    PYTHONPATH, so a model spec can name the test networks (`own_nets:tiny_net`) as a user names theirs."""
    import os

    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "edgekd.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env=env)


def run_main(argv: list, capsys) -> tuple[int, str]:
    """The `edgekd` command in this process (fast: torch is imported once); returns (exit code, stderr)."""
    from edgekd.cli import main

    saved = sys.argv
    sys.argv = ["edgekd", *map(str, argv)]
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved
    return code, capsys.readouterr().err


@contextmanager
def mounted_tmpfs(path: Path, options: str):
    """A real small or read-only file system at `path` (a full disk, a read-only folder), for the test's
    duration; skips the test where mounting is not allowed (needs root)."""
    import os

    import pytest

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]).returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)])
