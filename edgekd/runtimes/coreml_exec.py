"""Core ML files checked on Linux: an executor for the ML Program inside an `.mlpackage`.

`MLModel.predict` only runs on macOS. Here we read the MIL program and its weights with coremltools'
own loader, decode compressed weights (int8, palettised, sparse) with coremltools' own
`materialized_val_inference` (the op definitions Core ML documents), and run each op in float32 with
torch, rounding every fp16 result to fp16 so an fp16 program is emulated rather than idealised.
Ops that edgekd's students do not produce are refused by name. On macOS, Core ML itself runs the file.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgekd.errors import InputError
from edgekd.inputs import named_inputs
from edgekd.runtimes import RUNNERS

OPS: dict[str, Callable] = {}


def op(*names: str):
    def add(fn):
        for n in names:
            OPS[n] = fn
        return fn
    return add


def _pads(pad_type: str, pad, x_spatial, k, strides, dilations) -> list[int]:
    """Begin/end padding per spatial dim, in MIL order [d0_begin, d0_end, d1_begin, ...]."""
    n = len(x_spatial)
    if pad_type == "custom":
        return [int(p) for p in pad]
    if pad_type == "valid":
        return [0] * (2 * n)
    out = []
    for size, kk, s, d in zip(x_spatial, k, strides, dilations):  # "same" / "same_lower"
        total = max(0, (-(-size // s) - 1) * s + (kk - 1) * d + 1 - size)
        lo = total // 2 if pad_type == "same" else total - total // 2
        out += [lo, total - lo]
    return out


def _torch_pad(p: list[int]) -> list[int]:
    pairs = [p[i:i + 2] for i in range(0, len(p), 2)]
    return [v for pair in reversed(pairs) for v in pair]  # F.pad wants the last dim first


@op("conv")
def _conv(a):
    x, w = a["x"], a["weight"]
    n = x.dim() - 2
    strides = [int(s) for s in a.get("strides", [1] * n)]
    dil = [int(d) for d in a.get("dilations", [1] * n)]
    pads = _pads(a.get("pad_type", "valid"), a.get("pad"), x.shape[2:], w.shape[2:], strides, dil)
    x = F.pad(x, _torch_pad(pads))
    conv = F.conv1d if n == 1 else F.conv2d
    return conv(x, w, a.get("bias"), stride=strides, dilation=dil, groups=int(a.get("groups", 1)))


def _pool(a, kind: str):
    x = a["x"]
    n = x.dim() - 2
    k, s = [int(v) for v in a["kernel_sizes"]], [int(v) for v in a["strides"]]
    pads = _pads(a.get("pad_type", "valid"), a.get("pad"), x.shape[2:], k, s, [1] * n)
    if kind == "max":
        x = F.pad(x, _torch_pad(pads), value=float("-inf"))
        return (F.max_pool1d if n == 1 else F.max_pool2d)(x, k, s, ceil_mode=bool(a.get("ceil_mode", False)))
    if any(pads) and bool(a.get("exclude_padding_from_average", False)):
        ones = F.pad(torch.ones_like(x), _torch_pad(pads))
        x = F.pad(x, _torch_pad(pads))
        f = F.avg_pool1d if n == 1 else F.avg_pool2d
        return f(x, k, s) / f(ones, k, s)
    x = F.pad(x, _torch_pad(pads))
    return (F.avg_pool1d if n == 1 else F.avg_pool2d)(x, k, s, ceil_mode=bool(a.get("ceil_mode", False)))


OPS["max_pool"] = lambda a: _pool(a, "max")
OPS["avg_pool"] = lambda a: _pool(a, "avg")


def _axes(a, x):
    axes = a.get("axes")
    return list(range(x.dim())) if axes is None else [int(v) for v in np.atleast_1d(axes)]


@op("reduce_mean")
def _reduce_mean(a):
    return a["x"].mean(dim=_axes(a, a["x"]), keepdim=bool(a.get("keep_dims", False)))


@op("reduce_sum")
def _reduce_sum(a):
    return a["x"].sum(dim=_axes(a, a["x"]), keepdim=bool(a.get("keep_dims", False)))


@op("reduce_max")
def _reduce_max(a):
    return a["x"].amax(dim=_axes(a, a["x"]), keepdim=bool(a.get("keep_dims", False)))


@op("linear")
def _linear(a):
    return F.linear(a["x"], a["weight"], a.get("bias"))


@op("matmul")
def _matmul(a):
    x, y = a["x"], a["y"]
    if a.get("transpose_x", False):
        x = x.transpose(-2, -1)
    if a.get("transpose_y", False):
        y = y.transpose(-2, -1)
    return x @ y


@op("layer_norm")
def _layer_norm(a):
    x = a["x"]
    axes = _axes(a, x)
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    y = (x - mean) / torch.sqrt(var + float(a.get("epsilon", 1e-5)))
    if a.get("gamma") is not None:
        y = y * a["gamma"]
    if a.get("beta") is not None:
        y = y + a["beta"]
    return y


@op("batch_norm")
def _batch_norm(a):
    x = a["x"]
    shape = [1, -1] + [1] * (x.dim() - 2)
    y = ((x - a["mean"].reshape(shape))
         / torch.sqrt(a["variance"].reshape(shape) + float(a.get("epsilon", 1e-5))))
    if a.get("gamma") is not None:
        y = y * a["gamma"].reshape(shape)
    if a.get("beta") is not None:
        y = y + a["beta"].reshape(shape)
    return y


OPS.update({
    "relu": lambda a: torch.relu(a["x"]),
    "gelu": lambda a: F.gelu(a["x"], approximate="tanh" if a.get("mode") == "TANH_APPROXIMATION" else "none"),
    "sigmoid": lambda a: torch.sigmoid(a["x"]),
    "softmax": lambda a: torch.softmax(a["x"], dim=int(a.get("axis", -1))),
    "add": lambda a: a["x"] + a["y"],
    "sub": lambda a: a["x"] - a["y"],
    "mul": lambda a: a["x"] * a["y"],
    "real_div": lambda a: a["x"] / a["y"],
    "sqrt": lambda a: torch.sqrt(a["x"]),
    "rsqrt": lambda a: torch.rsqrt(a["x"] + float(a.get("epsilon", 1e-12))),
    "reshape": lambda a: a["x"].reshape([int(v) for v in a["shape"]]),
    "transpose": lambda a: a["x"].permute([int(v) for v in a["perm"]]),
    "squeeze": lambda a: a["x"].squeeze() if a.get("axes") is None else _squeeze(a["x"], a["axes"]),
    "expand_dims": lambda a: _expand(a["x"], a["axes"]),
    "concat": lambda a: torch.cat(list(a["values"]), dim=int(a["axis"])),
    "identity": lambda a: a["x"],
})


def _squeeze(x, axes):
    for ax in sorted((int(v) % x.dim() for v in np.atleast_1d(axes)), reverse=True):
        x = x.squeeze(ax)
    return x


def _expand(x, axes):
    for ax in sorted(int(v) for v in np.atleast_1d(axes)):
        x = x.unsqueeze(ax if ax >= 0 else x.dim() + 1 + ax)
    return x


@op("clip")
def _clip(a):  # ReLU6 and other bounded activations: min(max(x, alpha), beta)
    return torch.clamp(a["x"], float(a["alpha"]), float(a["beta"]))


@op("pad")
def _pad(a):
    """MIL pad: `pad` holds [begin, end] pairs for the last len(pad)/2 dims, first of them first."""
    mode = str(a.get("mode", "constant"))
    pads = _torch_pad([int(v) for v in np.atleast_1d(a["pad"])])
    if mode == "constant":
        return F.pad(a["x"], pads, value=float(a.get("constant_val", 0.0)))
    if mode not in ("reflect", "replicate"):
        raise ValueError(f"pad mode {mode!r}")
    return F.pad(a["x"], pads, mode=mode)


@op("slice_by_index")
def _slice_by_index(a):
    x = a["x"]
    n = x.dim()
    begin = [int(v) for v in a["begin"]]
    end = [int(v) for v in a["end"]]
    stride = [int(v) for v in a.get("stride", [1] * n)]
    bm = [bool(v) for v in a.get("begin_mask", [False] * n)]
    em = [bool(v) for v in a.get("end_mask", [False] * n)]
    sq = [bool(v) for v in a.get("squeeze_mask", [False] * n)]
    idx = []
    for d in range(n):
        if sq[d]:
            idx.append(begin[d])
            continue
        idx.append(slice(None if bm[d] else begin[d], None if em[d] else end[d], stride[d]))
    return x[tuple(idx)]


@op("split")
def _split(a):
    x, axis = a["x"], int(a["axis"])
    if a.get("split_sizes") is not None:
        return list(torch.split(x, [int(v) for v in a["split_sizes"]], dim=axis))
    return list(torch.chunk(x, int(a["num_splits"]), dim=axis))


_INT_DTYPES = {"int32": torch.int32, "int64": torch.int64, "int16": torch.int16, "int8": torch.int8,
               "uint8": torch.uint8, "bool": torch.bool}


@op("cast")
def _cast(a):
    """To an integer or bool type: converted (truncating, as Core ML); to a float type: kept as float32,
    since rounding to the output dtype happens for every op below."""
    dtype = _INT_DTYPES.get(str(a.get("dtype", "fp32")))
    return a["x"].to(dtype) if dtype is not None else a["x"].float()


# the ops of transformer encoders (token embeddings, attention masks)
OPS.update({
    "greater_equal": lambda a: a["x"] >= a["y"],
    "greater": lambda a: a["x"] > a["y"],
    "less": lambda a: a["x"] < a["y"],
    "less_equal": lambda a: a["x"] <= a["y"],
    "equal": lambda a: a["x"] == a["y"],
    "not_equal": lambda a: a["x"] != a["y"],
    "logical_not": lambda a: ~a["x"].bool(),
    "select": lambda a: torch.where(a["cond"].bool(), a["a"], a["b"]),
    "exp": lambda a: torch.exp(a["x"]),
    "tanh": lambda a: torch.tanh(a["x"]),
    "erf": lambda a: torch.erf(a["x"]),
    "pow": lambda a: torch.pow(a["x"], a["y"]),
})


@op("gather")
def _gather(a):
    """MIL gather (batch_dims 0): rows `indices` of x along `axis`; negative indices count from the end."""
    x, idx, axis = a["x"], a["indices"].long(), int(a.get("axis", 0))
    if int(a.get("batch_dims", 0)) != 0:
        raise ValueError("gather with batch_dims")
    axis = axis % x.dim()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = torch.index_select(x, axis, idx.reshape(-1))
    return out.reshape(*x.shape[:axis], *idx.shape, *x.shape[axis + 1:])


def _quant_params(a, x):
    """scale and zero point shaped to broadcast along `axis` (per-channel) or as scalars."""
    scale, zp, ax = a["scale"], a.get("zero_point"), a.get("axis")
    if ax is not None and scale.dim() == 1:
        shape = [1] * x.dim()
        shape[int(ax)] = -1
        scale = scale.reshape(shape)
        zp = zp.reshape(shape) if zp is not None else None
    return scale, (zp if zp is not None else 0)


@op("quantize")
def _quantize(a):
    scale, zp = _quant_params(a, a["input"])
    lo, hi = (-128, 127) if a.get("output_dtype", "int8") == "int8" else (0, 255)
    return (torch.round(a["input"] / scale) + zp).clamp(lo, hi)


@op("dequantize")
def _dequantize(a):
    scale, zp = _quant_params(a, a["input"])
    return (a["input"] - zp) * scale


@op("classify")
def _classify(a):
    return a["probabilities"]  # the label dict is built by the caller from the class list


def _value(v):
    """A MIL const value as a torch tensor (numbers) or a Python value (strings, bools)."""
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "fiub":
            # floats compute in float32; integers as int64 (Core ML stores small ones as uint8/uint16,
            # which torch cannot index with)
            dtype = {"f": np.float32, "i": np.int64, "u": np.int64}.get(v.dtype.kind, v.dtype)
            return torch.from_numpy(np.ascontiguousarray(v).astype(dtype))
        return v.tolist()
    if isinstance(v, (np.floating, float)):
        return torch.tensor(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v


class MILExecutor:
    """Runs the `main` function of an ML Program, one input at a time."""

    def __init__(self, path: Path):
        import coremltools as ct
        from coremltools.converters.mil.frontend.milproto.load import load
        from coremltools.converters.mil.mil import types

        model = ct.models.MLModel(str(path), skip_model_load=True)
        spec = model.get_spec()
        if spec.WhichOneof("Type") != "mlProgram":
            raise InputError(f"{path}: not an ML Program (found {spec.WhichOneof('Type')}); "
                             "edgekd exports mlprogram")
        prog = load(spec, spec.specificationVersion, file_weights_dir=model.weights_dir)
        self.fn = prog.functions["main"]
        self.fp16 = types.fp16
        self.input_names = list(self.fn.inputs)
        self.output = self.fn.outputs[-1]  # classifier: (classLabel, probabilities); else the only output
        unsupported = sorted({o.op_type for o in self.fn.operations
                              if o.op_type not in OPS and o.op_type != "const"
                              and not o.op_type.startswith("constexpr_")})
        if unsupported:
            raise InputError(f"{path}: the Core ML executor does not support op(s) {', '.join(unsupported)}; "
                             "edgekd runs only the ops its own students produce")
        # Keyed by Var object, not name: a program can hold two consts of the same name
        # (seen: a conv weight and the classifier's class list, both "const_0").
        self.consts: dict[object, object] = {}
        for o in self.fn.operations:
            if o.op_type == "const":
                self.consts[o.outputs[0]] = _value(o.outputs[0].val)
            elif o.op_type.startswith("constexpr_"):
                vals = o.materialized_val_inference()
                vals = vals if isinstance(vals, tuple) else (vals,)
                for var, val in zip(o.outputs, vals):
                    self.consts[var] = _value(np.asarray(val))
        self.ops = [o for o in self.fn.operations
                    if o.op_type != "const" and not o.op_type.startswith("constexpr_")]

    def _arg(self, env, v):
        if isinstance(v, (list, tuple)):
            return [self._arg(env, i) for i in v]
        if v in env:
            return env[v]
        if v.val is not None:
            return _value(v.val)
        raise KeyError(v.name)

    def run(self, x: np.ndarray, record: dict | None = None) -> np.ndarray:
        """Outputs for one input (1, ...) (token rows: input_ids and attention_mask). With `record`, also
        every op output's running min/max (`{name: {"rmin", "rmax"}}`, the form coremltools' activation
        quantisation passes take)."""
        env = dict(self.consts)
        for name, value in named_inputs(x).items():
            inp = self.fn.inputs[name]
            env[inp] = torch.from_numpy(value)
            if inp.dtype == self.fp16:
                env[inp] = env[inp].half().float()
        for o in self.ops:
            args = {k: self._arg(env, v) for k, v in o.inputs.items()}
            out = OPS[o.op_type](args)
            outs = out if isinstance(out, list) else [out]
            if o.op_type == "classify":
                outs = [None, out]
            for var, val in zip(o.outputs, outs):
                if isinstance(val, torch.Tensor) and var.dtype == self.fp16 and val.is_floating_point():
                    val = val.half().float()  # fp16 storage between ops, as Core ML's fp16 programs have
                env[var] = val
                if record is not None and isinstance(val, torch.Tensor) and val.is_floating_point():
                    r = record.setdefault(var.name, {"rmin": np.inf, "rmax": -np.inf})
                    r["rmin"], r["rmax"] = min(r["rmin"], float(val.min())), max(r["rmax"], float(val.max()))
        return env[self.output].numpy()


@RUNNERS.register("coreml")
class CoreMLRunner:
    """Core ML itself on macOS; the MIL executor elsewhere."""

    def __init__(self, path: Path, threads: int = 1):
        import coremltools as ct

        self.threads = threads
        self.native = platform.system() == "Darwin"
        self.measures_latency = self.native  # the executor's speed is edgekd's interpreter, not Core ML
        if self.native:
            self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
            spec = self.model.get_spec()
            self.probs_name = spec.description.predictedProbabilitiesName
            # the probabilities come back as a dict; order them as the model's labels (edgekd records them)
            self.labels = json.loads(spec.description.metadata.userDefined["edgekd.labels"])
            self.name, self.version = "coreml", f"coremltools {ct.__version__} (Core ML)"
        else:
            self.exec = MILExecutor(path)
            self.name, self.version = "coreml-exec", f"coremltools {ct.__version__} (edgekd MIL executor)"

    def _one(self, x: np.ndarray) -> np.ndarray:
        if not self.native:
            return self.exec.run(x).reshape(1, -1)
        probs = self.model.predict(named_inputs(x))[self.probs_name]
        return np.array([[probs[k] for k in self.labels]], np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return np.concatenate([self._one(x[i:i + 1]) for i in range(len(x))]).astype(np.float32)

    def run_one(self, x: np.ndarray) -> None:
        self._one(x)
