"""Converters print progress bars and warnings to the terminal. Capture them at the file-descriptor
level, and show the captured tail only if the conversion fails."""

from __future__ import annotations

import errno
import logging
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout

IO_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


class ConverterFailed(Exception):
    def __init__(self, cause: BaseException, output: str):
        tail = [line for line in output.strip().splitlines() if line.strip()][-3:]
        super().__init__(f"{type(cause).__name__}: {cause}"
                         + ("".join(f"\n      | {t}" for t in tail) if tail else ""))
        self.cause, self.output = cause, output

    def io_error(self) -> OSError | None:
        """The disk-level error behind this failure (full disk, read-only or forbidden folder), if any:
        those are the user's to fix, never reported as "the converter failed"."""
        e: BaseException | None = self.cause
        while e is not None:
            if isinstance(e, OSError) and e.errno in IO_ERRNOS:
                return e
            e = e.__cause__ or e.__context__
        text = self.output + str(self.cause)
        for code, words in ((errno.ENOSPC, "No space left on device"),
                            (errno.EROFS, "Read-only file system")):
            if words in text:
                return OSError(code, words, getattr(self.cause, "filename", None))
        return None


@contextmanager
def quiet():
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as log, warnings.catch_warnings(), \
            open(os.devnull, "w") as sink, redirect_stdout(sink), redirect_stderr(sink):
        warnings.simplefilter("ignore")
        level = logging.root.manager.disable
        logging.disable(logging.WARNING)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except Exception as e:  # noqa: BLE001 - re-raised with the converter's own output attached
            sys.stdout.flush()
            sys.stderr.flush()
            log.seek(0)
            raise ConverterFailed(e, log.read().decode(errors="replace")[-2000:]) from e
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            logging.disable(level)
