"""A PyTorch network as the simulator's op list, without a converter: `torch.export` traces it, and each
aten op becomes an `Op` with its work (what a TFLite or Core ML file of it would run).

What a converter does to the graph is done here too, so the list reads like an exported file's: batch
norm after a convolution is folded into it, shape-only ops (view, flatten, getitem, dropout) vanish, and
an attention kernel is two matmuls and a softmax. The precision says what the target computes in:
fp32 / fp16 (weights and activations), w8 (8-bit weights computed in fp16), int8 (w8a8: both 8-bit),
w8a16 (8-bit weights, 16-bit activations: Qualcomm's default integer mode).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgekd.bench.graph import KERNEL_KINDS, Op, lowered_bytes
from edgekd.errors import InputError

# precision -> (compute dtype of conv/linear/matmul, activation bytes, weight bytes, other ops' dtype)
PRECISIONS = {"fp32": ("fp32", 4, 4, "fp32"), "fp16": ("fp16", 2, 2, "fp16"),
              "w8": ("fp16", 2, 1, "fp16"),  # 8-bit weights decompressed to fp16 (weight-only)
              "int8": ("int8", 1, 1, "int8"), "w8a16": ("int16", 2, 1, "int16")}

_KINDS = {
    "conv1d": "conv", "conv2d": "conv", "conv3d": "conv", "convolution": "conv", "conv_transpose2d": "conv",
    "linear": "fully_connected", "addmm": "fully_connected",
    "matmul": "matmul", "mm": "matmul", "bmm": "matmul", "baddbmm": "matmul", "einsum": "matmul",
    "max_pool2d": "pool", "avg_pool2d": "pool", "adaptive_avg_pool2d": "pool", "adaptive_avg_pool1d": "pool",
    "max_pool1d": "pool", "avg_pool1d": "pool", "max_pool2d_with_indices": "pool",
    "mean": "reduce", "sum": "reduce", "amax": "reduce", "max": "reduce", "var_mean": "reduce",
    "softmax": "softmax", "_softmax": "softmax", "log_softmax": "softmax",
    "layer_norm": "norm", "group_norm": "norm", "native_layer_norm": "norm", "batch_norm": "norm",
    "_native_batch_norm_legit_no_training": "norm", "rms_norm": "norm",
    "relu": "activation", "relu_": "activation", "relu6": "activation", "hardtanh": "activation",
    "hardtanh_": "activation", "hardswish": "activation", "hardswish_": "activation",
    "hardsigmoid": "activation", "sigmoid": "activation", "silu": "activation", "silu_": "activation",
    "gelu": "activation", "tanh": "activation", "elu": "activation", "leaky_relu": "activation",
    "clamp": "activation", "clamp_min": "activation", "erf": "activation", "exp": "elementwise",
    "add": "elementwise", "add_": "elementwise", "sub": "elementwise", "rsub": "elementwise",
    "mul": "elementwise", "mul_": "elementwise", "div": "elementwise", "pow": "elementwise",
    "sqrt": "elementwise", "rsqrt": "elementwise", "neg": "elementwise", "where": "elementwise",
    "permute": "layout", "transpose": "layout", "t": "layout", "cat": "layout", "stack": "layout",
    "pad": "layout", "constant_pad_nd": "layout", "embedding": "layout", "roll": "layout",
    "pixel_shuffle": "layout", "channel_shuffle": "layout", "upsample_nearest2d": "layout",
    "index_select": "layout", "gather": "layout", "repeat": "layout", "expand": "layout",
    "slice": "layout", "select": "layout", "split": "layout", "split_with_sizes": "layout",
    "chunk": "layout", "unbind": "layout", "narrow": "layout",
}
# shape-only ops: a converter folds them into a tensor's description, no kernel runs
_NO_KERNEL = {"view", "reshape", "_unsafe_view", "flatten", "unflatten", "squeeze", "unsqueeze", "contiguous",
              "clone", "dropout", "dropout_", "alias", "detach", "getitem", "_assert_tensor_metadata",
              "lift_fresh_copy", "_to_copy", "to", "type_as", "size", "sym_size", "scalar_tensor", "arange",
              "zeros", "ones", "full", "zeros_like", "ones_like", "_assert_scalar", "identity", "copy_",
              "feature_dropout", "alpha_dropout", "stochastic_depth"}
_LOOKUPS = {"embedding", "index_select", "gather"}
_ATTENTION = {"scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu"}


def _op_name(node) -> str:
    target = node.target
    name = getattr(target, "__name__", str(target))
    if hasattr(target, "_schema"):
        name = target._schema.name.split("::")[-1]
    return name.split(".")[0]


def _shape(v) -> list[int] | None:
    val = v.meta.get("val") if hasattr(v, "meta") else None
    if isinstance(val, (list, tuple)):
        val = val[0] if val else None
    if isinstance(val, torch.Tensor):
        return [int(s) for s in val.shape]
    return None


def export_ops(model: nn.Module, example: tuple, precision: str = "fp32") -> list[Op]:
    """The op list of `model` run on `example` (a tuple of inputs) at `precision`."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    try:
        program = torch.export.export(model.eval(), tuple(example), strict=False)
    except Exception as e:  # noqa: BLE001 - the user's network: any tracing failure is theirs to see
        raise InputError(f"torch.export could not trace the network ({type(e).__name__}: {e})") from None
    return graph_ops(program, precision)


def graph_ops(program, precision: str) -> list[Op]:
    kernel_dtype, abytes, wbytes, other_dtype = PRECISIONS[precision]
    sig = program.graph_signature
    consts = set(sig.inputs_to_parameters) | set(sig.inputs_to_buffers) | set(
        getattr(sig, "inputs_to_lifted_tensor_constants", {}))
    ops: list[Op] = []
    last_kind_by_node: dict[object, str] = {}
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node)
        if name in _NO_KERNEL:
            continue
        tensor_args = [a for a in _flat(node.args) if hasattr(a, "meta") and _shape(a) is not None]
        weights = [a for a in tensor_args if a.name in consts]
        acts = [a for a in tensor_args if a.name not in consts]
        out = _shape(node) or []
        out_elems = math.prod(out) if out else 0
        if name in _ATTENTION:  # q @ k^T, softmax, @ v
            q, k = _shape(tensor_args[0]), _shape(tensor_args[1])
            scores = math.prod(q[:-1]) * k[-2]
            io = lambda n: int(n * abytes)  # noqa: E731
            ops += [Op("matmul", name, kernel_dtype, 2.0 * scores * q[-1], io(math.prod(q) + math.prod(k)),
                       io(scores), 0),
                    Op("softmax", name, other_dtype, 5.0 * scores, io(scores), io(scores), 0),
                    Op("matmul", name, kernel_dtype, 2.0 * out_elems * k[-2], io(scores + math.prod(k)),
                       io(out_elems), 0)]
            continue
        kind = _KINDS.get(name, "elementwise")
        if "batch_norm" in name:
            src = acts[0] if acts else None
            if src is not None and last_kind_by_node.get(src) in KERNEL_KINDS[:3]:
                last_kind_by_node[node] = last_kind_by_node[src]  # folded into the conv before it
                continue
            kind = "elementwise"  # left standing (pre-activation): a converter writes a scale and shift
        w_shape = _shape(node.args[1]) if kind == "conv" and len(node.args) > 1 else None
        if kind == "conv" and w_shape and w_shape[1] == 1 and _groups(node, name) > 1:
            kind = "depthwise_conv"  # one input channel per group; other grouped convs stay conv
        flops = _work(kind, node, name, out_elems, acts)
        dtype = kernel_dtype if kind in KERNEL_KINDS else other_dtype
        # a lookup (embedding, gather) reads the rows it returns, not its whole table
        w_elems = (out_elems if name in _LOOKUPS and weights
                   else sum(math.prod(_shape(a)) for a in weights))
        lowered = (lowered_bytes(kind, flops, w_shape, math.prod(w_shape[2:]), abytes, _groups(node, name))
                   if w_shape and "transpose" not in name else 0)  # weight (O, I/groups, *k)
        channels = (0 if kind not in KERNEL_KINDS or len(out) < 2 else
                    out[1] if kind in ("conv", "depthwise_conv") else out[-1])  # NCHW, and (rows, features)
        ops.append(Op(kind, name, dtype, flops, int(sum(math.prod(_shape(a)) for a in acts) * abytes),
                      int(out_elems * abytes), int(w_elems * wbytes), lowered, channels))
        last_kind_by_node[node] = kind
    return ops


def _groups(node, name: str) -> int:
    # conv2d(input, weight, bias, stride, padding, dilation, groups);
    # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    at = 8 if name == "convolution" else 6
    groups = node.args[at] if len(node.args) > at else node.kwargs.get("groups", 1)
    return groups if isinstance(groups, int) else 1


def _flat(args) -> list:
    out = []
    for a in args:
        if isinstance(a, (list, tuple)):
            out += _flat(a)
        else:
            out.append(a)
    return out


def _work(kind: str, node, name: str, out_elems: int, acts: list) -> float:
    """Multiply-adds count 2; the same rules as the file readers (graph._flops), with the reduction length
    K taken from the operand each aten op reduces over."""
    if kind in ("conv", "depthwise_conv"):
        w = _shape(node.args[1])
        return 2.0 * out_elems * math.prod(w[1:]) if w else 0.0  # weight (O, I/groups, *k)
    if kind in ("fully_connected", "matmul"):
        # linear(x, w, b), mm/bmm/matmul(a, b): K is the last dim of the first operand;
        # addmm(bias, a, b), baddbmm(input, a, b): of the second; einsum(eq, [a, b]): of a (an estimate)
        at = 1 if name in ("addmm", "baddbmm") else 0
        operand = node.args[1][0] if name == "einsum" else node.args[at] if len(node.args) > at else None
        shape = _shape(operand) if hasattr(operand, "meta") else None
        return 2.0 * out_elems * shape[-1] if shape else 0.0
    if kind in ("layout", "quant"):
        return 0.0
    if kind in ("reduce", "pool") and acts:
        return float(math.prod(_shape(acts[0])))
    if "batch_norm" in name:
        return 2.0 * out_elems  # scale and shift per element
    return float(out_elems) * (5 if kind in ("softmax", "norm") else 1)
