"""Exported graphs as a flat list of ops with their work: what the simulator walks.

Readers for TFLite (the flatbuffer), Core ML (the MIL program) and ONNX (for the host's ONNX Runtime
profile).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.errors import InputError


@dataclass(frozen=True)
class Op:
    kind: str  # conv, depthwise_conv, fully_connected, matmul, pool, reduce, softmax, norm, elementwise,
    #            activation, layout (reshape/transpose/slice: no arithmetic), quant (quantize/dequantize)
    name: str  # the runtime's own op name, e.g. CONV_2D or conv
    dtype: str  # compute dtype: fp32, fp16, int8
    flops: float  # multiply-adds count 2
    bytes_in: int  # activations read
    bytes_out: int  # activations written
    bytes_weights: int  # constant bytes read (compressed size)
    # a convolution whose kernel spans more than one input position: its input lowered to a matrix
    # (im2col: each element copied once per kernel tap that meets it), for runtimes that lower so
    bytes_lowered: int = 0
    # a kernel's output channels (features, for a matrix product's weight side): the dimension a CPU
    # kernel's SIMD tile covers (Unit.channel_tile); 0 where the reader does not know it
    channels: int = 0


def lowered_bytes(kind: str, flops: float, w_shape, taps: int, itemsize: float, groups: int = 1) -> int:
    """Bytes of a convolution's im2col matrix: output positions x input channels x kernel taps, which is
    its multiply-adds over its output channels (w_shape[0]); 0 for a 1x1 (its input is the matrix)
    and for anything but a convolution (depthwise convolutions run in place)."""
    if kind != "conv" or taps <= 1 or not w_shape or not w_shape[0]:
        return 0
    return int(flops / 2 / w_shape[0] * groups * itemsize)


KERNEL_KINDS = ("conv", "depthwise_conv", "fully_connected", "matmul")  # what runs in a precision's kernels
TFLITE_KINDS = {
    "CONV_2D": "conv", "CONV_3D": "conv", "DEPTHWISE_CONV_2D": "depthwise_conv",
    "FULLY_CONNECTED": "fully_connected", "BATCH_MATMUL": "matmul", "MAX_POOL_2D": "pool",
    "AVERAGE_POOL_2D": "pool", "MEAN": "reduce", "SUM": "reduce", "REDUCE_MAX": "reduce",
    "SOFTMAX": "softmax", "ADD": "elementwise", "SUB": "elementwise", "MUL": "elementwise",
    "DIV": "elementwise", "SQUARED_DIFFERENCE": "elementwise", "RSQRT": "elementwise", "SQRT": "elementwise",
    "POW": "elementwise", "RELU": "activation", "RELU6": "activation", "LOGISTIC": "activation",
    "GELU": "activation", "TANH": "activation", "RESHAPE": "layout", "TRANSPOSE": "layout",
    "SQUEEZE": "layout", "EXPAND_DIMS": "layout", "STRIDED_SLICE": "layout", "SLICE": "layout",
    "CONCATENATION": "layout", "SPLIT": "layout", "GATHER": "layout", "PAD": "layout", "QUANTIZE": "quant",
    "DEQUANTIZE": "quant",
}
_TFL_DTYPE = {0: ("fp32", 4), 1: ("fp16", 2), 2: ("int32", 4), 3: ("int8", 1), 4: ("int64", 8),
              7: ("int16", 2), 9: ("int8", 1), 17: ("int4", 0.5)}


def _nbytes(shape, dtype_size) -> int:
    return int(math.prod(int(s) for s in shape) * dtype_size) if shape is not None else 0


def read_tflite(path: Path) -> list[Op]:
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(Path(path).read_bytes()))
    sg = model.subgraphs[0]
    const = {i for i, t in enumerate(sg.tensors)
             if model.buffers[t.buffer].data is not None and len(model.buffers[t.buffer].data) > 0}
    listed = lambda a: a.tolist() if hasattr(a, "tolist") else a  # noqa: E731
    parsed = [(flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) or "CUSTOM",
               [i for i in listed(op.inputs) if i >= 0], listed(op.outputs)) for op in sg.operators]
    # a DEQUANTIZE of a constant (weight-only int8 and fp16 files) is decompression the runtime does once,
    # at load (TFLite's kernel caches its output; XNNPACK packs the float weights): no op at run time, and
    # its output is the next op's weight, in float. Read as ops, a weight-only file's convolutions lost their
    # weights (flops from the bias alone) and the host profile put them up to 41% under their measured
    # time, which is the fp32 file's
    decompressed = [name == "DEQUANTIZE" and bool(ins) and ins[0] in const for name, ins, _ in parsed]
    for (_, _, outs), gone in zip(parsed, decompressed):
        if gone:
            const.update(outs)
    ops = []
    for (name, ins, outs), gone in zip(parsed, decompressed):
        if gone:
            continue
        kind = TFLITE_KINDS.get(name, "elementwise")
        tin = [sg.tensors[i] for i in ins]
        tout = [sg.tensors[i] for i in outs]
        acts = [t for i, t in zip(ins, tin) if i not in const]
        weights = [t for i, t in zip(ins, tin) if i in const]
        size = lambda t: _TFL_DTYPE.get(t.type, ("?", 4))[1]  # noqa: E731
        out_elems = sum(math.prod(t.shape) for t in tout if t.shape is not None)
        # compute dtype: int8 when the activations are int8 (full-integer) or weights int8 with float
        # activations (dynamic range: XNNPACK quantises the activations on the fly)
        act_dtype = _TFL_DTYPE.get(acts[0].type if acts else tout[0].type, ("fp32", 4))[0]
        w_dtype = _TFL_DTYPE.get(weights[0].type, ("fp32", 4))[0] if weights else act_dtype
        int8_kernel = kind in KERNEL_KINDS
        dtype = "int8" if "int8" in (act_dtype, w_dtype) and int8_kernel else act_dtype
        dtype = "fp32" if dtype not in ("fp32", "fp16", "int8") else dtype
        flops = _flops(kind, out_elems, [list(t.shape) for t in tin if t.shape is not None],
                       [list(t.shape) for t in weights if t.shape is not None])
        w_bytes = sum(_nbytes(t.shape, size(t)) for t in weights)
        if name == "GATHER" and weights and weights[0].shape is not None:
            w_bytes = _rows_read(w_bytes, math.prod(weights[0].shape), out_elems)
        w0 = list(weights[0].shape) if weights and weights[0].shape is not None else []
        # TFLite conv weight: (O, kh, kw, I/groups), the input NHWC
        groups = (acts[0].shape[-1] // w0[3] if len(w0) == 4 and w0[3] and acts and acts[0].shape is not None
                  else 1)
        lowered = lowered_bytes(kind, flops, w0, math.prod(w0[1:3]) if len(w0) == 4 else 1,
                                size(acts[0]) if acts else 4, groups)
        channels = (int(tout[0].shape[-1]) if kind in KERNEL_KINDS and tout and tout[0].shape is not None
                    and len(tout[0].shape) else 0)  # NHWC, and (rows, features)
        ops.append(Op(kind, name, dtype, flops, sum(_nbytes(t.shape, size(t)) for t in acts),
                      sum(_nbytes(t.shape, size(t)) for t in tout), w_bytes, lowered, channels))
    return ops


def _rows_read(table_bytes: float, table_elems: int, out_elems: int) -> int:
    """A lookup (an embedding table's gather) reads the rows it returns, not the whole table: the
    output's elements at the table's stored bytes per element (compressed tables included)."""
    return int(min(table_bytes, out_elems * table_bytes / max(table_elems, 1)))


def _flops(kind: str, out_elems: int, in_shapes: list[list[int]], w_shapes: list[list[int]]) -> float:
    if kind in ("conv", "depthwise_conv") and w_shapes:
        w = w_shapes[0]
        # TFLite: (O, kh, kw, I) / depthwise (1, kh, kw, O); Core ML: (O, I/groups, *k)
        per_out = (math.prod(w[1:]) if kind == "conv"
                   else math.prod(w[1:-1]) if len(w) == 4 else math.prod(w[2:]))
        return 2.0 * out_elems * per_out
    if kind == "fully_connected" and w_shapes:
        return 2.0 * out_elems * w_shapes[0][-1]
    if kind == "matmul" and len(in_shapes) >= 2:
        return 2.0 * out_elems * in_shapes[0][-1]
    if kind in ("layout", "quant"):
        return 0.0
    if kind == "reduce" and in_shapes:
        return float(math.prod(in_shapes[0]))
    return float(out_elems) * (5 if kind in ("softmax", "norm") else 1)


COREML_KINDS = {
    "conv": "conv", "linear": "fully_connected", "matmul": "matmul", "max_pool": "pool", "avg_pool": "pool",
    "reduce_mean": "reduce", "reduce_sum": "reduce", "reduce_max": "reduce", "softmax": "softmax",
    "layer_norm": "norm", "batch_norm": "elementwise", "add": "elementwise", "sub": "elementwise",
    "mul": "elementwise", "real_div": "elementwise", "sqrt": "elementwise", "rsqrt": "elementwise",
    "relu": "activation", "gelu": "activation", "sigmoid": "activation", "clip": "activation",
    "pad": "layout", "reshape": "layout",
    "transpose": "layout", "squeeze": "layout", "expand_dims": "layout", "slice_by_index": "layout",
    "split": "layout", "concat": "layout", "cast": "layout", "identity": "layout", "quantize": "quant",
    "dequantize": "quant", "classify": "layout", "gather": "layout",
}


def read_coreml(path: Path) -> list[Op]:
    from edgekd.runtimes.coreml_exec import MILExecutor

    ex = MILExecutor(Path(path))
    # weight bytes as stored (compressed): the constexpr inputs, or the const itself
    stored: dict[object, int] = {}
    for o in ex.fn.operations:
        if o.op_type == "const" and isinstance(o.outputs[0].val, np.ndarray):
            stored[o.outputs[0]] = int(o.outputs[0].val.nbytes)
        elif o.op_type.startswith("constexpr_"):
            src = sum(int(v.val.nbytes) for v in o.inputs.values()
                      if hasattr(v, "val") and isinstance(v.val, np.ndarray))
            for out in o.outputs:
                stored[out] = src
    has_act_quant = any(o.op_type == "quantize" for o in ex.ops)
    ops = []
    for o in ex.ops:
        kind = COREML_KINDS.get(o.op_type, "elementwise")
        vins = [v for v in o.inputs.values() if not isinstance(v, (list, tuple)) and _is_tensor(v)]
        acts = [v for v in vins if v not in stored and v.val is None]
        weights = [v for v in vins if v in stored]
        outs = [v for v in o.outputs if getattr(v, "shape", None) is not None and _is_tensor(v)]
        dtype = _mil_dtype(outs[0].dtype) if outs else "fp32"
        esize = {"fp16": 2, "int8": 1}.get(dtype, 4)
        if has_act_quant and kind in KERNEL_KINDS:
            dtype = "int8"
        groups = int(o.inputs["groups"].val or 1) if kind == "conv" and "groups" in o.inputs else 1
        if groups > 1 and weights and len(weights[0].shape) >= 3 and int(weights[0].shape[1]) == 1:
            kind = "depthwise_conv"  # one input channel per group (the other readers' rule)
        out_elems = sum(math.prod(int(s) for s in v.shape) for v in outs)
        flops = _flops(kind, out_elems, [list(v.shape) for v in acts + weights if _is_tensor(v)],
                       [list(v.shape) for v in weights])
        w_bytes = sum(stored[v] for v in weights)
        if o.op_type == "gather" and weights:
            w_bytes = _rows_read(w_bytes, math.prod(int(s) for s in weights[0].shape), out_elems)
        w0 = [int(d) for d in weights[0].shape] if weights and kind == "conv" else []
        lowered = lowered_bytes(kind, flops, w0, math.prod(w0[2:]), esize, groups)  # (O, I/groups, *k)
        ops.append(Op(kind, o.op_type, dtype, flops,
                      sum(_nbytes(v.shape, esize) for v in acts if _is_tensor(v)),
                      out_elems * esize, w_bytes, lowered))
    return ops


def _mil_dtype(t) -> str:
    from coremltools.converters.mil.mil import types

    return {types.fp16: "fp16", types.int8: "int8", types.uint8: "int8"}.get(t, "fp32")


def _is_tensor(v) -> bool:
    try:
        return v.shape is not None and all(isinstance(s, (int, np.integer)) for s in v.shape)
    except (ValueError, AttributeError):
        return False


ONNX_KINDS = {
    "Conv": "conv", "ConvInteger": "conv", "QLinearConv": "conv", "Gemm": "fully_connected",
    "MatMul": "matmul", "MatMulInteger": "matmul", "QLinearMatMul": "matmul", "MaxPool": "pool",
    "AveragePool": "pool", "GlobalAveragePool": "pool", "GlobalMaxPool": "pool", "ReduceMean": "reduce",
    "ReduceSum": "reduce", "ReduceMax": "reduce", "Softmax": "softmax", "LayerNormalization": "norm",
    "BatchNormalization": "elementwise", "Relu": "activation", "Sigmoid": "activation", "Tanh": "activation",
    "Clip": "activation", "Gelu": "activation", "Erf": "activation", "HardSwish": "activation",
    "Reshape": "layout", "Transpose": "layout", "Squeeze": "layout", "Unsqueeze": "layout",
    "Concat": "layout", "Slice": "layout", "Split": "layout", "Gather": "layout", "Flatten": "layout",
    "Pad": "layout", "Expand": "layout", "Identity": "layout", "QuantizeLinear": "quant",
    "DequantizeLinear": "quant", "DynamicQuantizeLinear": "quant",
}
# no kernel runs: shape arithmetic ONNX Runtime folds at load, or a cast of a constant
_ONNX_FOLDED = {"Shape", "Constant", "ConstantOfShape", "Cast", "Range", "Size"}
_ONNX_INT8 = {"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul"}


def read_onnx(path: Path) -> list[Op]:
    """An ONNX file as ONNX Runtime's CPU provider runs it: shapes from shape inference (an open batch
    read as 1), weights from the initializers (through a weight's DequantizeLinear in a static-int8 QDQ
    file, which ONNX Runtime folds into the int8 kernel), int8 kernels where the file has integer ops or
    feeds a kernel dequantised activations."""
    import onnx
    from onnx import numpy_helper, shape_inference

    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - a broken or foreign file: say which
        raise InputError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    initialised = {t.name for t in model.graph.initializer}
    for v in model.graph.input:
        if v.name in initialised:
            continue
        if not v.type.tensor_type.HasField("shape"):
            raise InputError(f"{path}: input {v.name!r} has no shape; export it with one (fixed sizes, "
                             "the batch may stay open)")
        for axis, d in enumerate(v.type.tensor_type.shape.dim):
            if d.HasField("dim_value"):
                continue
            if axis > 0:
                raise InputError(f"{path}: input {v.name!r} axis {axis} has no fixed size "
                                 f"({d.dim_param or 'unnamed'}); export it with fixed sizes except the batch")
            d.dim_value = 1  # the batch: one inference
    try:
        try:  # ONNX Runtime's symbolic inference also follows a Reshape to shapes computed in the graph
            from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

            model = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
        except Exception:  # noqa: BLE001 - ops it lacks: ONNX's own inference, head sizes left open
            model = shape_inference.infer_shapes(model, data_prop=True)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path}: ONNX shape inference failed ({type(e).__name__}: {e})") from None
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:  # constants built in the graph are weights too
        if n.op_type == "Constant" and n.attribute and n.attribute[0].HasField("t"):
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    folded = set()  # a weight's DequantizeLinear: the stored int8 tensor is the kernel's weight
    for n in g.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in consts:
            consts[n.output[0]] = consts[n.input[0]]
            folded.add(id(n))
    producer = {o: n.op_type for n in g.node for o in n.output}
    shapes: dict[str, tuple[list[int | None], int]] = {}
    for v in [*g.input, *g.value_info, *g.output]:
        t = v.type.tensor_type
        if t.HasField("shape"):
            shapes[v.name] = ([d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim],
                              _onnx_itemsize(t.elem_type))
    ops = []
    for n in g.node:
        if n.op_type in _ONNX_FOLDED or id(n) in folded:
            continue
        kind = ONNX_KINDS.get(n.op_type, "elementwise")
        ins = [i for i in n.input if i]
        weights = [consts[i] for i in ins if i in consts]
        acts = [(i, shapes[i]) for i in ins if i not in consts and i in shapes]
        outs = [shapes[o] for o in n.output if o in shapes]
        # a dequantised activation into a kernel: ONNX Runtime runs the int8 kernel on the int8 tensor
        dq_in = [i for i, _ in acts if producer.get(i) == "DequantizeLinear"]
        acts = [(s, 1 if i in dq_in else b) for i, (s, b) in acts]
        if n.op_type == "MatMul" and len(acts) == 2 and outs and min(len(s) for s, _ in acts) >= 2:
            (a, _), (b, _) = acts  # a dim shape inference left open (attention's head size): the other's
            k, cols = a[-1] or b[-2], b[-1] or outs[0][0][-1]
            batch = a[:-2] if len(a) >= len(b) else b[:-2]
            acts = [([*a[:-1], k], acts[0][1]), ([*b[:-2], k, cols], acts[1][1])]
            outs = [([*batch, a[-2], cols], outs[0][1])]
        acts = [([d or 1 for d in s], b) for s, b in acts]  # still open: counted as 1
        outs = [([d or 1 for d in s], b) for s, b in outs]
        out_elems = sum(math.prod(s) for s, _ in outs)
        flops = None
        w = consts.get(n.input[1]) if len(n.input) > 1 else None  # Conv, Gemm, MatMul: the weight is B
        if kind == "conv" and w is not None and w.ndim >= 3:
            if _attr(n, "group", 1) > 1 and w.shape[1] == 1:
                kind = "depthwise_conv"
            flops = 2.0 * out_elems * math.prod(w.shape[1:])  # (O, I/groups, *k): I/groups * k MACs each
        elif kind in ("fully_connected", "matmul"):
            a0 = consts.get(n.input[0])
            if w is not None and w.ndim >= 2:  # x @ W: K is W's rows (Gemm: columns when transposed)
                kind = "fully_connected"
                k = w.shape[1] if n.op_type == "Gemm" and _attr(n, "transB", 0) else w.shape[-2]
                flops = 2.0 * out_elems * k
            elif a0 is not None and a0.ndim >= 2:  # W @ x: K is W's columns
                kind = "fully_connected"
                k = a0.shape[0] if n.op_type == "Gemm" and _attr(n, "transA", 0) else a0.shape[-1]
                flops = 2.0 * out_elems * k
            elif n.op_type == "Gemm":
                kind = "matmul"
        if flops is None:
            flops = _flops(kind, out_elems, [s for s, _ in acts], [])
        if n.op_type == "BatchNormalization":
            flops = 2.0 * out_elems  # a scale and shift
        kernel = kind in KERNEL_KINDS
        dtype = "int8" if n.op_type in _ONNX_INT8 or (kernel and dq_in) else "fp32"
        w_bytes = sum(int(x.nbytes) for x in weights)
        if n.op_type == "Gather" and weights:
            w_bytes = _rows_read(w_bytes, weights[0].size, out_elems)
        lowered = (lowered_bytes(kind, flops, w.shape, math.prod(w.shape[2:]), acts[0][1] if acts else 4,
                                 _attr(n, "group", 1)) if w is not None and w.ndim >= 3 else 0)
        # output channels from the weight (O, I/groups, *k), or a product's weight side; 0 where unknown (the
        # output's shape may be open there, counted as 1 above)
        channels = (0 if w is None or w.ndim < 2 or kind not in KERNEL_KINDS else
                    int(w.shape[0]) if kind in ("conv", "depthwise_conv") else
                    int(w.shape[0] if n.op_type == "Gemm" and _attr(n, "transB", 0) else w.shape[-1])
                    if kind == "fully_connected" else 0)
        ops.append(Op(kind, n.op_type, dtype, flops, sum(math.prod(s) * b for s, b in acts),
                      sum(math.prod(s) * b for s, b in outs), w_bytes, lowered, channels))
    return ops


def _onnx_itemsize(elem_type: int) -> int:
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        return tensor_dtype_to_np_dtype(elem_type).itemsize
    except (KeyError, TypeError, ValueError):  # undefined or string tensors
        return 4


def _attr(node, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def read_graph(fmt: str, path: Path) -> list[Op]:
    if fmt == "tflite":
        return read_tflite(path)
    if fmt == "coreml":
        return read_coreml(path)
    if fmt == "onnx":
        return read_onnx(path)
    raise InputError(f"the simulator reads tflite, coreml and onnx graphs, not {fmt!r}")
