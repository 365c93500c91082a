"""Process-wide console settings for edgekd's own processes (the CLI and the search's workers)."""

from __future__ import annotations


def quiet_backends() -> None:
    """The converters announce optional pieces they could not load (Core ML's macOS-only runtime, CUDA
    kernels, untested-version notices) on every import; users cannot act on them."""
    import logging
    import os
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("coremltools", "torchao", "torch.utils._pytree", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
