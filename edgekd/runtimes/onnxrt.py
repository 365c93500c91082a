"""ONNX Runtime on the CPU, a fixed thread count.

A dynamically quantised graph (onnxruntime's quantize_dynamic) scales its int8 activations by the range
of the whole input tensor, batch included, so a row's prediction would depend on the rows batched with
it; such a graph runs one row at a time, as an app runs it. Every other graph runs 256 rows a call."""

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
        self.batch = 1 if batch_dependent(path) else 256
        self._bound = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return np.concatenate([self.sess.run(None, named_inputs(x[i:i + self.batch]))[0]
                               for i in range(0, len(x), self.batch)]).astype(np.float32)

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


# ops that quantise an activation with a scale taken from the whole tensor at run time
DYNAMIC_OPS = {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"}


def batch_dependent(path: Path) -> bool:
    """True when the graph (or a function or subgraph in it) quantises activations dynamically."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graphs = [model.graph, *model.functions]
    while graphs:
        g = graphs.pop()
        for node in g.node:
            if node.op_type in DYNAMIC_OPS:
                return True
            for a in node.attribute:  # If / Loop / Scan bodies
                graphs.extend([a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs)
    return False
