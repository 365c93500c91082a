"""ONNX (torch.onnx.export), with onnxruntime dynamic and static (QDQ, per-channel) int8; a static-int8
student the compress step trained (edgekd.models.qat) goes out as its own QDQ program, not recalibrated."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgekd.export.common import ExportMeta, register
from edgekd.inputs import named_inputs

QUANTS = ("fp32", "dynamic-int8", "static-int8")


@register("onnx", ".onnx", QUANTS)
def write_onnx(model, sample: np.ndarray, dest: Path, quant: str, calib: np.ndarray,
               meta: ExportMeta) -> None:
    import onnx
    import torch

    with tempfile.TemporaryDirectory() as tmpd:
        fp32 = Path(tmpd) / "fp32.onnx"
        feeds = named_inputs(sample)
        args = tuple(torch.from_numpy(v) for v in feeds.values())
        src = fp32
        if meta.trained_for(quant):  # a program with trained int8 ranges (edgekd.models.qat): QDQ as it is
            two = tuple(torch.cat([a, a]) for a in args)  # a batch of 1 could be specialised to 1
            torch.onnx.export(model, two, str(fp32), input_names=list(feeds), output_names=["probs"],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), dynamo=True,
                              verbose=False)
        else:
            torch.onnx.export(model, args, str(fp32), input_names=list(feeds), output_names=["probs"],
                              dynamic_axes={**{name: {0: "batch"} for name in feeds}, "probs": {0: "batch"}},
                              opset_version=17, dynamo=False)
        if quant != "fp32" and not meta.trained_for(quant):
            from onnxruntime.quantization import (
                CalibrationDataReader,
                QuantFormat,
                QuantType,
                quantize_dynamic,
                quantize_static,
            )

            src = Path(tmpd) / "q.onnx"
            if quant == "dynamic-int8":
                quantize_dynamic(str(fp32), str(src), weight_type=QuantType.QInt8, per_channel=True)
            else:
                class Reader(CalibrationDataReader):
                    def __init__(self):
                        self.it = iter(calib[i:i + 1] for i in range(len(calib)))

                    def get_next(self):
                        x = next(self.it, None)
                        return None if x is None else named_inputs(x)

                quantize_static(str(fp32), str(src), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        m = onnx.load(str(src))
        if meta.trained_for(quant):  # the dynamo exporter's debug record (fx nodes, stack paths): 29 kB of 42
            for item in [*m.graph.node, *m.graph.value_info, m.graph]:
                del item.metadata_props[:]
        m.doc_string = meta.description
        m.producer_name = "edgekd"
        m.model_version = 1
        for k, v in {**meta.user_defined(), "author": meta.author, "license": meta.license,
                     "version": meta.version, "quant": quant}.items():
            m.metadata_props.add(key=k, value=v)
        onnx.save(m, str(src))
        shutil.move(str(src), dest)
