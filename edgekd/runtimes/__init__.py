"""Running an exported file: one place, used by export's parity check and by bench's measurements,
so a parity number and a benchmark number come from the same code.

Every runner maps float inputs (N, *input_shape), already normalised, to class probabilities (N, C).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from edgekd.registry import Registry


class Runner(Protocol):
    name: str  # e.g. "tflite", "onnxruntime", "coreml-exec"
    version: str
    threads: int
    # False when timing this runner would not measure the target runtime (Core ML's MIL executor on
    # Linux: its latency comes from simulation instead)
    measures_latency: bool

    def predict(self, x: np.ndarray) -> np.ndarray:  # (N, *input_shape) float32 -> (N, C) float32
        ...

    def run_one(self, x: np.ndarray) -> None:  # (1, *input_shape): one timed inference
        ...


RUNNERS: Registry[Callable[..., Runner]] = Registry("runner")

# Which runner executes each file format here.
FORMAT_RUNNER = {"tflite": "tflite", "onnx": "onnxruntime", "coreml": "coreml"}


# The libraries each runner imports when it first loads a file: imported before a file's load is timed and
# its memory counted (edgekd.bench.measure), so the first file of a format is not charged for them
RUNTIME_MODULES = {
    "tflite": ("ai_edge_litert.interpreter",),
    "onnxruntime": ("onnxruntime", "onnx"),
    "coreml": ("coremltools", "coremltools.converters.mil.frontend.milproto.load"),
    "torch": (),
}


def import_runtime(fmt: str) -> None:
    """Import the libraries the runner of `fmt` needs (a no-op once imported)."""
    import importlib

    for name in RUNTIME_MODULES.get(FORMAT_RUNNER.get(fmt, fmt), ()):
        importlib.import_module(name)


def load_runner(fmt: str, path: Path, threads: int = 1) -> Runner:
    from edgekd.runtimes import coreml_exec, onnxrt, tflite, torch_eager  # noqa: F401 - registers the runners

    return RUNNERS.get(FORMAT_RUNNER.get(fmt, fmt), "artifact format")(Path(path), threads=threads)
