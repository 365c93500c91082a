"""The values that pass between stages, in one place: checkpoint -> artifact -> measurement -> verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ModelSpec:
    """Which network: a zoo entry (`arch`, `width`, `depth`), a factory `package.module:function` called
    with `kwargs`, or a torch.export `program` file. `weights` (with `rename`, regex -> replacement
    on the file's tensor names) loads a file into it; a checkpoint's own weights sit beside its spec."""

    kind: str  # "zoo" | "factory" | "program" | "hf"
    arch: str | None = None
    width: float = 1.0
    depth: int | None = None
    factory: str | None = None
    kwargs: dict = field(default_factory=dict)
    program: str | None = None
    folder: str | None = None  # "hf": a Hugging Face BERT-family folder (or a name in data.tokens.PRETRAINED)
    weights: str | None = None
    rename: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, {}) or k == "kind"}

    @classmethod
    def zoo(cls, arch: str, width: float = 1.0, depth: int | None = None) -> "ModelSpec":
        return cls("zoo", arch=arch, width=float(width), depth=depth)

    @property
    def label(self) -> str:
        """A short name for logs and reports."""
        if self.kind == "zoo":
            return f"{self.arch} x{self.width:g}" + (f" depth {self.depth}" if self.depth else "")
        if self.kind == "hf":
            name = Path(self.folder or "").name
            return f"{name} {self.kwargs}" if self.kwargs else name
        return self.factory if self.kind == "factory" else Path(self.program or "").name


@dataclass(frozen=True)
class Checkpoint:
    """A trained model on disk: `model.safetensors` + `model.json` in `path`."""

    path: Path
    name: str
    role: str  # "teacher" | "student"
    arch: str
    width: float
    depth: int | None
    input_shape: tuple[int, ...]
    labels: tuple[str, ...]
    mean: float  # inputs are (x - mean) / std before the model
    std: float
    params: int
    weights_sha256: str
    data_fingerprint: str
    accuracy: float | None = None  # on the dataset's test split
    provenance: dict = field(default_factory=dict)  # training key, data source, teacher, ...
    spec: ModelSpec | None = None  # the network (its weights are the checkpoint's); None: the zoo's arch
    # further safetensors files in `path` (file name -> sha256), e.g. trained int8 ranges (edgekd.models.qat)
    extras: dict = field(default_factory=dict)

    @property
    def model_spec(self) -> ModelSpec:
        return self.spec or ModelSpec.zoo(self.arch, self.width, self.depth)


@dataclass(frozen=True)
class Parity:
    """How closely an exported file reproduces PyTorch on held-out inputs."""

    top1_agreement: float
    max_abs_diff: float
    cosine: float
    snr_db: float
    n: int
    top1_ci95: tuple[float, float] | None = None  # 95% Wilson interval of the agreement over n inputs

    def to_dict(self) -> dict:
        d = asdict(self)
        d["top1_ci95"] = [round(v, 6) for v in self.top1_ci95] if self.top1_ci95 else None
        return d


@dataclass(frozen=True)
class Artifact:
    """One exported file."""

    format: str  # "coreml" | "tflite" | "onnx"
    quant: str  # "fp32", "fp16", "int8", ...
    path: Path
    size_bytes: int
    sha256: str
    params: int
    parity: Parity
    convert_s: float
    model: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["parity"] = self.parity.to_dict()
        return d


@dataclass(frozen=True)
class StudentResult:
    name: str
    checkpoint: Path
    params: int
    accuracy: float
    retention: float | None  # student accuracy / teacher accuracy (None: teacher's unknown)
    compression: float  # teacher params / student params
    method: str  # "kd" | "label"
    train_samples_per_s: float = 0.0  # all ranks together
    train_samples_per_s_per_rank: float = 0.0
    world_size: int = 1
    trained_here: bool = True  # False: an earlier run's checkpoint, reused (its throughput is that run's)


# Measurement.no_band of a simulated row whose profile was checked against no real device
UNCALIBRATED = "uncalibrated profile"


@dataclass(frozen=True)
class Measurement:
    """One bench row: a file measured on a runtime here (`kind` "measured"), timed on a device, or
    predicted for a mobile target by the simulator ("simulated"). A row that could not be taken has
    `failed` set to the reason and no numbers. Report, gate and bundle read rows by attribute."""

    model: str  # the student (checkpoint name) the file was exported from
    artifact: str  # file name, relative to the artifacts.json that lists it
    format: str  # "torch" | "coreml" | "tflite" | "onnx"
    quant: str
    kind: str  # "measured" | "simulated"
    runner: str | None = None  # "tflite", "onnxruntime", "android:gpu", "sim:<target>", ...
    target: str | None = None  # simulated target profile name
    params: int | None = None
    size_bytes: int | None = None
    zip_size_bytes: int | None = None
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_avg: float | None = None
    load_ms: float | None = None
    peak_memory_bytes: int | None = None
    timed_runs: int | None = None
    threads: int | None = None
    runtime_version: str | None = None
    cpu: str | None = None
    accuracy: float | None = None  # on the test split, through this file
    retention: float | None = None  # accuracy / teacher accuracy; None when the teacher's is unknown
    teacher_agreement: float | None = None  # top-1 agreement with the teacher; None when unknown
    accelerator_residency: dict | None = None  # {"ops": share, "time": share} on the target's accelerator
    accelerator: bool = False  # the target has an accelerator at all (CPU-only profiles do not)
    fallback_ops: tuple[dict, ...] = ()  # ops an accelerator could not take, and why
    delegated_nodes: tuple[int, int] | None = None
    per_op: tuple[dict, ...] = ()
    # simulated: the profile's 80% interval [low, high] ms from its calibration on published phone
    # latencies (or this host's measurements); None: see no_band
    latency_band_ms: tuple[float, float] | None = None
    # simulated without a band: why (UNCALIBRATED: checked against no real device; or the file runs kernels
    # or on units its profile's calibration never priced). Rows written before it existed: None
    no_band: str | None = None
    failed: str | None = None

    @property
    def where(self) -> str:
        """The runner or target a number comes from: what policies and report columns name."""
        return self.target or self.runner or self.format

    @property
    def ok(self) -> bool:
        return self.failed is None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fallback_ops"], d["per_op"] = list(self.fallback_ops), list(self.per_op)
        d["delegated_nodes"] = list(self.delegated_nodes) if self.delegated_nodes else None
        return {k: v for k, v in d.items() if v is not None or k in ("retention", "teacher_agreement")}

    @classmethod
    def from_dict(cls, d: dict, where: str = "bench.json") -> "Measurement":
        """A row as bench.json stores it; a malformed one is an InputError naming the field."""
        from dataclasses import fields

        from edgekd.errors import InputError

        if not isinstance(d, dict):
            raise InputError(f"{where}: a row is {type(d).__name__}, not an object; re-run `edgekd bench`")
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("model", "artifact", "format", "quant", "kind") if k not in d]
        if missing:
            raise InputError(f"{where}: a row lacks field {missing[0]!r}; "
                             "re-run `edgekd bench` to rewrite it")
        if d["kind"] not in ("measured", "simulated"):
            raise InputError(f"{where}: row field 'kind' is {d['kind']!r}; "
                             "expected 'measured' or 'simulated'")
        kw = {k: v for k, v in d.items() if k in known}
        kw["fallback_ops"] = tuple(kw.get("fallback_ops") or ())
        kw["per_op"] = tuple(kw.get("per_op") or ())
        for k in ("delegated_nodes", "latency_band_ms"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        try:
            return cls(**kw)
        except TypeError as e:
            raise InputError(f"{where}: malformed row ({e}); re-run `edgekd bench`") from None


@dataclass(frozen=True)
class Budget:
    """A latency limit for the search and the ladder: `name` as the user typed it (a simulated target
    profile, or `host` / a runner timed here), `where` the bench rows it is read from (a Measurement's
    `where`), `format` the export format those rows measure."""

    name: str
    where: str
    latency_ms: float
    format: str
    measured: bool  # True: a runner timed on this machine; False: a simulated target

    @property
    def key(self) -> str:
        return f"{self.name}={self.latency_ms:g}"

    @property
    def slug(self) -> str:
        """The key as a file name."""
        return self.key.replace("=", "-")


@dataclass(frozen=True)
class CompressSpec:
    """One compression-aware fine-tuning of a student (edgekd.compress): `mode` is the Core ML/TFLite
    quantisation its files carry ("int8", "pal2".."pal8", "prune-pal4", "mixed-pal"; "full-int8" and
    "static-int8" with int8 activations), the rest how it
    trains (KD against the same teacher outputs as distillation, at a fine-tuning learning rate)."""

    mode: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    temperature: float
    alpha: float
    seed: int
    per_channel: bool = True  # one palette per output channel (Core ML per_grouped_channel, iOS18+)
    sparsity: float = 0.0  # prune-pal4: share of the weights that are zero
    sparsity_by: str = "tensor"  # "tensor": that share in every tensor; "sensitivity": spread by sensitivity
    mixed_bits: tuple[int, int] = (2, 4)  # mixed-pal: the low and high bit widths
    average_bits: float = 3.5  # mixed-pal: budget of index bits per weight, weighted by layer size
    sensitivity_samples: int = 2000  # mixed-pal, prune-pal4: training rows sensitivity is measured on
    fidelity: float = 0.0  # share of the soft target that is the float student's own outputs (rest: teacher)

    @property
    def bits(self) -> int:
        """The bit width of every layer (mixed-pal: the high one)."""
        if self.mode in ("int8", "full-int8", "static-int8"):
            return 8
        return self.mixed_bits[1] if self.mode == "mixed-pal" else int(self.mode[-1])


@dataclass(frozen=True)
class CompressResult:
    name: str  # the compressed checkpoint's name: STUDENT.MODE-kd
    checkpoint: Path
    student: str
    mode: str
    accuracy: float  # test split, the snapped network in PyTorch
    student_accuracy: float  # the float student it started from
    retention: float | None
    bits: dict  # layer -> bits per weight
    average_bits: float
    sparsity: float
    train_s: float  # wall seconds of the fine-tuning (0 when reused)
    sensitivity: dict = field(default_factory=dict)  # mixed-pal: layer -> {kl, accuracy_drop_points, ...}
    layer_sparsity: dict = field(default_factory=dict)  # prune-pal4: layer -> share of its weights zero
