"""The values that pass between stages, in one place: checkpoint -> artifact -> measurement -> verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


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


@dataclass(frozen=True)
class Parity:
    """How closely an exported file reproduces PyTorch on held-out inputs."""

    top1_agreement: float
    max_abs_diff: float
    cosine: float
    snr_db: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


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
    retention: float  # student accuracy / teacher accuracy
    compression: float  # teacher params / student params
    method: str  # "kd" | "label"
    train_samples_per_s: float = 0.0
