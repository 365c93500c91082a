"""ONNX Runtime on the CPU, a fixed thread count."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.inputs import named_inputs
from edgekd.runtimes import RUNNERS


@RUNNERS.register("onnxruntime")
class OnnxRunner:
    name = "onnxruntime"
    measures_latency = True

    def __init__(self, path: Path, threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.log_severity_level = 3
        self.version, self.threads = f"onnxruntime {ort.__version__}", threads
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._bound = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return np.concatenate([self.sess.run(None, named_inputs(x[i:i + 256]))[0]
                               for i in range(0, len(x), 256)]).astype(np.float32)

    def run_one(self, x: np.ndarray) -> None:
        """One timed inference with the inputs bound in advance (IOBinding), like the TFLite runner."""
        if self._bound is not x:
            self._io = self.sess.io_binding()
            self._feeds = named_inputs(x)  # kept alive: the binding points at their memory
            for name, value in self._feeds.items():
                self._io.bind_cpu_input(name, value)
            self._io.bind_output(self.sess.get_outputs()[0].name)
            self._bound = x
        self.sess.run_with_iobinding(self._io)
