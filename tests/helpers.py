import subprocess
import sys
from pathlib import Path


def run_cli(*args, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real `edgekd` command (exit codes and stderr as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "edgekd.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)
