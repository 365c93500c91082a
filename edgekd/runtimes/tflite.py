"""The TFLite interpreter (ai-edge-litert, XNNPACK), with int8 input/output handled from the
tensors' own quantisation parameters (full-integer models take and return int8)."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edgekd.inputs import named_inputs
from edgekd.runtimes import RUNNERS


@contextmanager
def _native_stderr_muted():
    """The interpreter's C++ side logs "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." to the
    process's stderr once per process: not the user's concern (errors still arrive as exceptions)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@RUNNERS.register("tflite")
class TFLiteRunner:
    name = "tflite"
    measures_latency = True

    def __init__(self, path: Path, threads: int = 1):
        from ai_edge_litert import __version__ as litert_version
        from ai_edge_litert.interpreter import Interpreter

        self.version, self.threads = f"ai-edge-litert {litert_version}", threads
        with _native_stderr_muted():
            self.interp = Interpreter(model_path=str(path), num_threads=threads)
            self.interp.allocate_tensors()
        self.inputs = _inputs_by_name(self.interp)
        self.out = self.interp.get_output_details()[0]
        self._staged = None  # the input last placed by run_one

    def _set_input(self, x: np.ndarray) -> None:
        for name, value in named_inputs(x).items():
            inp = self.inputs[name]
            if inp["dtype"] in (np.int8, np.uint8) and value.dtype == np.float32:  # a full-integer model
                scale, zero = inp["quantization"]
                info = np.iinfo(inp["dtype"])
                value = np.clip(np.round(value / scale + zero), info.min, info.max).astype(inp["dtype"])
            self.interp.set_tensor(inp["index"], value.astype(inp["dtype"], copy=False))

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        out = self.out
        self._staged = None
        self._set_input(x)
        self.interp.invoke()
        y = self.interp.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return np.concatenate([self._invoke(x[i:i + 1]) for i in range(len(x))]).astype(np.float32)

    def run_one(self, x: np.ndarray) -> None:
        """One timed inference: invoke() with the input already in place, as TFLite's benchmark_model
        times it (the Python-side copy in and out is not the runtime's latency)."""
        if self._staged is not x:
            self._set_input(x)
            self._staged = x
        self.interp.invoke()


def _inputs_by_name(interp) -> dict:
    """The interpreter's input tensors under the graph's input names (x; input_ids, attention_mask):
    the signature's names (edgekd converts several inputs by keyword); the tensor details carry mangled
    ones."""
    details = interp.get_input_details()
    if len(details) == 1:
        return {"x": details[0]}
    by_index = {d["index"]: d for d in details}
    runner_inputs = interp.get_signature_runner(next(iter(interp.get_signature_list()))).get_input_details()
    return {name: by_index[d["index"]] for name, d in runner_inputs.items()}
