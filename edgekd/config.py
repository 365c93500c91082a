"""Recipe and policy schemas. Every default lives here (STYLE habit 3); library code takes plain
arguments and never reads YAML (habit 4)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from edgekd.errors import InputError
from edgekd.types import ModelSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainConfig(_Strict):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)


def config_dir() -> Path:
    """The user's edgekd folder: $EDGEKD_CONFIG_DIR, else $XDG_CONFIG_HOME/edgekd, else ~/.config/edgekd."""
    import os

    if os.environ.get("EDGEKD_CONFIG_DIR"):
        return Path(os.environ["EDGEKD_CONFIG_DIR"])
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "edgekd"


class AugmentConfig(_Strict):
    crop: int = Field(0, ge=0)  # random crop after zero-padding by this many pixels (images)
    flip: bool = False  # random horizontal flip


class DataConfig(_Strict):
    # a source in edgekd.data.DATASETS: mnist1d, digits, npz, idx, fashion-mnist, imagefolder, csv, parquet
    name: str = "mnist1d"
    # npz/csv/parquet: the file; idx/imagefolder: the folder; fashion-mnist: the folder of its IDX files
    # (default /usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist)
    path: Path | None = None
    # the dataset's own split/generation seed (and the 80/20 hold-out's, where a source has no test split)
    seed: int = 42
    transfer_samples: int = Field(80_000, ge=0)  # extra unlabeled inputs the teacher labels
    # imagefolder (required there): [height, width] in pixels every image is resized to
    image_size: tuple[PositiveInt, PositiveInt] | None = None
    # imagefolder: 1 (grey) or 3 (RGB); None: grey when every image is grey, else RGB
    channels: Literal[1, 3] | None = None
    label_column: str = "label"  # csv/parquet: the column holding each row's class (name or id 0..C-1)
    # inputs become (x - mean) / std with this fixed [mean, std] (a pretrained network's own, e.g.
    # EfficientNet-Lite's [127.5, 128] on 0..255 pixels) instead of the training split's statistics
    normalization: tuple[float, PositiveFloat] | None = None
    # text (movie-reviews, text): a Hugging Face folder's tokenizer (a path, or all-minilm-l6-v2, which a
    # package ships) and the fixed sequence length every sentence is padded or cut to
    tokenizer: str = "all-minilm-l6-v2"
    max_length: int = Field(64, ge=8, le=512)
    text_column: str = "text"  # text: the column holding each row's sentence
    labels: list[str] | None = None  # text: the label set (a row with another label is refused)
    transfer_path: Path | None = None  # text: unlabelled sentences, one a line, for the transfer set
    # text: perturbed copies of every training sentence ([UNK] masks, short spans) added to the transfer set
    transfer_copies: int = Field(0, ge=0)
    # images: augment each training batch in the loader; students then learn from a teacher that runs
    # on the same augmented view (not from cached outputs)
    augment: AugmentConfig | None = None


class ModelConfig(_Strict):
    """A network that is not a zoo entry: a factory `package.module:function` called with `kwargs`, a
    torch.export program, or a Hugging Face BERT-family `folder` (a path, or a name a package ships:
    `all-minilm-l6-v2`) whose `kwargs` make a student of it (`layers`, `hidden`, `vocab: task`;
    edgekd.nets.text); `weights` (safetensors, or a state dict read with weights_only) loaded into
    a factory's network, with `rename` (regex: replacement) applied to the file's tensor names first."""

    factory: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    kwargs: dict = {}
    program: Path | None = None
    folder: str | None = None
    weights: Path | None = None
    rename: dict[str, str] = {}

    @model_validator(mode="after")
    def _one_source(self):
        if sum(v is not None for v in (self.factory, self.program, self.folder)) != 1:
            raise ValueError("give exactly one of factory ('package.module:function'), program (a .pt2 file) "
                             "or folder (a Hugging Face folder)")
        if self.program is not None and (self.kwargs or self.weights):
            raise ValueError("a program carries its own weights and arguments: drop kwargs and weights")
        if self.folder is not None and self.weights:
            raise ValueError("a Hugging Face folder carries its own weights: drop weights")
        return self

    def spec(self) -> ModelSpec:
        if self.program is not None:
            return ModelSpec("program", program=str(self.program))
        if self.folder is not None:
            return ModelSpec("hf", folder=self.folder, kwargs=dict(self.kwargs))
        weights = None if self.weights is None else str(self.weights)
        return ModelSpec("factory", factory=self.factory, kwargs=dict(self.kwargs), weights=weights,
                         rename=dict(self.rename))


class _Network(_Strict):
    """A teacher or student: its own network (`model`), else the zoo's arch at a width and depth."""

    def spec(self) -> ModelSpec:
        if self.model is not None:
            return self.model.spec()
        return ModelSpec.zoo(self.arch, self.width, self.depth)


class TeacherConfig(_Network):
    arch: str = "cnn1d"
    width: float = Field(1.0, gt=0)
    depth: int | None = Field(None, ge=1)
    model: ModelConfig | None = None  # your own network instead of arch/width/depth; with weights: pretrained
    checkpoint: Path | None = None  # load this teacher instead of training one
    min_accuracy: float = Field(0.9, ge=0, le=1)  # refuse to distill from a worse teacher
    train: TrainConfig = TrainConfig(epochs=60, batch_size=128, lr=3e-3, weight_decay=5e-4)
    # torch threads while the teacher trains, first (side-by-side jobs start beside it only on the cores
    # it leaves); None: the recipe's `threads`. The weights depend on it (the order of the arithmetic),
    # not on the machine's core count: when set, it is in the teacher's cache key. One CPU process only:
    # DDP ranks (--nproc, torchrun) and GPUs keep `threads`
    threads: int | None = Field(None, ge=1)
    # images: crop/flip while the teacher trains (a stronger teacher); students still learn from its
    # cached outputs on the plain inputs (data.augment is what augments the students' batches)
    augment: AugmentConfig | None = None


class StudentConfig(_Network):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    arch: str = "cnn1d"
    width: float = Field(0.25, gt=0)
    depth: int | None = Field(None, ge=1)
    # A budget instead of a width: teacher params / student params, or a parameter count. edgekd picks
    # the width (and the depth, from `depths`) that lands within 10% and reports the compression reached.
    compression: float | None = Field(None, gt=1)
    params: int | None = Field(None, ge=1)
    depths: list[int] | None = None  # depths the budget search may use (default: the family's own)
    model: ModelConfig | None = None  # your own network instead of arch/width
    # This student's training budget, field by field over distill.train (the smallest students of a
    # ladder gain from a longer one: benchmarks/kd_ceiling.py)
    train: TrainConfig | None = None

    @model_validator(mode="after")
    def _one_size(self):
        given = [k for k in ("width", "compression", "params", "model") if k in self.model_fields_set]
        if len(given) > 1:
            raise ValueError(f"give one of width, compression, params or model, not {' and '.join(given)}")
        if self.model is not None and self.model.program is not None:
            raise ValueError("a torch.export program cannot be trained; give a factory or a zoo arch")
        if self.depths is not None and not ({"compression", "params"} & self.model_fields_set):
            raise ValueError("depths is the range a budget (compression or params) searches; set one of them")
        return self

    @property
    def budget(self) -> tuple[str, float] | None:
        if self.compression is not None:
            return ("compression", self.compression)
        return ("params", float(self.params)) if self.params is not None else None


class DistillConfig(_Strict):
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.1, ge=0, le=1)  # weight of the hard-label CE; (1 - alpha) goes to KD
    hint_weight: float = Field(0.0, ge=0)  # FitNets hint loss on penultimate features
    cosine_weight: float = Field(0.0, ge=0)  # DistilBERT cosine loss on penultimate features
    use_transfer: bool = True
    workers: int = Field(0, ge=0)  # DataLoader worker processes reading batches (0: in the training process)
    train: TrainConfig = TrainConfig()


class ExportConfig(_Strict):
    formats: list[Literal["coreml", "tflite", "onnx"]] = ["coreml", "tflite", "onnx"]
    quants: list[str] | None = None  # None: every mode each format has
    coreml_target: Literal["iOS15", "iOS16", "iOS17", "iOS18"] = "iOS18"
    # held-out test inputs every file is checked on; None: the whole test split, so that an agreement
    # threshold is a statistical statement (its 95% interval is recorded beside it)
    parity_samples: int | None = Field(None, ge=1)
    calibration_samples: int = Field(128, ge=1)  # training inputs for static quantisation
    # Minimum top-1 agreement with PyTorch, by quantisation mode; "default" covers the rest. A file is
    # dropped when its whole 95% interval lies below (edgekd.parity). fp32 files must agree on every
    # input and stay within fp32_max_abs_diff. Set below the spread of healthy files
    # (benchmarks/parity_spread.py, 12 files a mode: 2 students x 3 seeds x 1-2 threads): int8 modes
    # 0.996-1.0, pal6/pal4 0.995-1.0, prune-pal4 0.944-0.995 (pruning without fine-tuning varies most
    # with the seed; the gate's retention rule still judges the shipped file against the teacher).
    min_top1_agreement: dict[str, float] = {"fp16": 0.999, "pal4": 0.98, "prune-pal4": 0.93, "default": 0.99}
    fp32_max_abs_diff: float = 1e-5


# What each format's file can carry of a trained compression (edgekd.compress): Core ML stores palettes
# (2-8 bits, per channel or per tensor, with a sparse mask) and int8; TFLite's int8 weights use the same
# per-channel grid as Core ML's; TFLite full-int8 and ONNX static-int8 files carry int8 activations whose
# ranges were trained (PT2E quantisation-aware training, edgekd.models.qat).
CARRIES = {"coreml": ("int8", "pal2", "pal4", "pal6", "pal8", "prune-pal4", "mixed-pal"),
           "tflite": ("int8", "full-int8"), "onnx": ("static-int8",)}
TRAINED_MODES = tuple(dict.fromkeys(m for modes in CARRIES.values() for m in modes))


class CompressConfig(_Strict):
    """Compression-aware fine-tuning with the KD loss, per format: the modes each format's files are to
    carry (e.g. `coreml: [pal4, mixed-pal]`, `tflite: [int8]`). A mode named under two formats trains once."""

    coreml: list[str] = []
    tflite: list[str] = []
    onnx: list[str] = []
    # fine-tuning from the distilled student: a few epochs at a tenth of distillation's learning rate
    train: TrainConfig = TrainConfig(epochs=3, batch_size=256, lr=3e-4)
    per_channel: bool = True  # palettes of <= 4 bits: one per output channel (iOS18+); 6-8 bits: one a tensor
    # prune-pal4: share of the weights that are zero, spread over the layers by what each costs
    # ("sensitivity": at most 0.95, the top of edgekd.compress.allocate.SPARSITY_LADDER), or the same
    # share in every tensor as Core ML's magnitude pruner does ("tensor")
    sparsity: float = Field(0.5, gt=0, lt=1)
    sparsity_by: Literal["sensitivity", "tensor"] = "sensitivity"
    mixed_bits: tuple[Literal[1, 2, 4, 6], Literal[2, 4, 6, 8]] = (2, 4)  # mixed-pal: low and high widths
    average_bits: float = Field(3.5, gt=0)  # mixed-pal: budget of index bits per weight
    sensitivity_samples: int = Field(2000, ge=1)  # mixed-pal, prune-pal4: rows sensitivity is read on
    # share of the soft target that is the float student's own outputs, the rest the teacher's: the file is
    # judged by agreement with the float student, and the teacher's targets pull the compressed student
    # toward the teacher on exactly the inputs where the two differ. The default, measured by
    # benchmarks/compress_aware.py (Fashion-MNIST 10x/30x students, 3 seeds, 18 int8 and pal4 files):
    # fidelity 0 / 0.5 / 1 gave agreement with the float student min 0.9899 / 0.9914 / 0.9911 (mean
    # 0.9933 / 0.9950 / 0.9960) and accuracy against it, mean +0.001 / +0.028 / -0.001 points: half and
    # half agrees as well as the student alone, and keeps the teacher's say
    fidelity: float = Field(0.5, ge=0, le=1)

    @field_validator("coreml", "tflite", "onnx")
    @classmethod
    def _carried(cls, modes, info):
        can = CARRIES[info.field_name]
        for m in modes:
            if m not in TRAINED_MODES:
                raise ValueError(f"unknown compression {m!r}; choose from {', '.join(TRAINED_MODES)}")
            if m not in can:
                name = {"coreml": "Core ML", "tflite": "TFLite", "onnx": "ONNX"}[info.field_name]
                home = next(f for f, carried in CARRIES.items() if m in carried)
                raise ValueError(f"{name} files cannot carry {m!r} (they carry {', '.join(can)}); "
                                 f"move {m!r} under compress.{home} or remove it")
        return modes

    @model_validator(mode="after")
    def _bits(self):
        if self.mixed_bits[0] >= self.mixed_bits[1]:
            raise ValueError(f"mixed_bits {list(self.mixed_bits)}: the low width must be below the high one")
        if self.average_bits < self.mixed_bits[0]:  # checked here, not after the teacher has trained
            raise ValueError(f"average_bits {self.average_bits} is below the low width of mixed_bits "
                             f"{list(self.mixed_bits)}: no choice of bits per layer meets it; raise it")
        if self.sparsity_by == "sensitivity" and self.sparsity > 0.95:
            raise ValueError(f"sparsity {self.sparsity}: at most 0.95 spread by sensitivity (no layer is "
                             f"pruned further); lower it, or set sparsity_by: tensor")
        return self

    @property
    def modes(self) -> dict[str, list[str]]:
        """Each mode to train -> the formats whose files carry it, in recipe order."""
        out: dict[str, list[str]] = {}
        for fmt in ("coreml", "tflite", "onnx"):
            for m in getattr(self, fmt):
                out.setdefault(m, []).append(fmt)
        return out


class BenchConfig(_Strict):
    targets: list[str] | None = None  # simulated targets; None: every profile in targets/
    threads: int = Field(1, ge=1)


class BundleConfig(_Strict):
    # bundle name -> the export format it ships
    platforms: dict[str, Literal["coreml", "tflite", "onnx"]] = {"ios": "coreml", "android": "tflite"}
    validation_samples: int = Field(16, ge=1)  # bundled inputs with expected outputs, for `edgekd verify`


class RegressionLimits(_Strict):
    retention: float | None = Field(None, ge=0)  # allowed drop in retention (absolute, e.g. 0.01)
    latency_pct: float | None = Field(None, ge=0)  # allowed rise of any shared latency, percent
    size_pct: float | None = Field(None, ge=0)  # allowed growth of the model file, percent


class Policy(_Strict):
    """Release rules. Unset rules are not checked."""

    min_retention: float | None = Field(None, gt=0)  # file accuracy / teacher accuracy
    min_teacher_agreement: float | None = Field(None, ge=0, le=1)  # top-1 agreement with the teacher
    max_size_bytes: int | None = Field(None, gt=0)
    # runner (tflite, onnxruntime, ...) or target name -> p50 limit
    max_latency_ms: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]] = {}
    # simulated targets: meet max_latency_ms even at the upper edge of the profile's error band (a row
    # without a band fails the rule: an uncalibrated profile, or a file whose kernels its calibration never
    # ran, such as an int8 file on a host profile fitted on fp32 files; its number is a guess)
    latency_margin: Literal["none", "band"] = "none"
    # target name -> minimum share of ops on its accelerator
    min_accelerator_residency: dict[str, Annotated[float, Field(ge=0, le=1)]] = {}
    max_regression: RegressionLimits | None = None  # against --baseline BUNDLE
    prefer: Literal["size", "latency"] = "size"  # how to pick among files that pass


class ModelFile(_Strict):
    """A model of yours for `edgekd export MODEL.yaml` / `edgekd bench`, with no distill run: the network
    and the data its files are checked and measured on (parity, calibration, accuracy)."""

    name: str = Field("model", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: ModelConfig
    data: DataConfig


class SearchConfig(_Strict):
    """`edgekd search`: the ranges a trial's student and KD settings are drawn from (Optuna), and what a
    trial exports. A range is [low, high] (equal: a fixed value); every default lives here."""

    archs: list[str] = ["cnn1d"]  # zoo families a trial may use
    width: tuple[PositiveFloat, PositiveFloat] = (0.05, 0.5)  # zoo width multiplier, sampled on a log scale
    depth: tuple[PositiveInt, PositiveInt] | None = None  # None: the family's own depth
    temperature: tuple[PositiveFloat, PositiveFloat] = (1.0, 8.0)
    alpha: tuple[float, float] = (0.0, 0.5)  # weight of the hard-label CE
    lr: tuple[PositiveFloat, PositiveFloat] = (1e-3, 1e-2)  # sampled on a log scale
    epochs: tuple[PositiveInt, PositiveInt] = (3, 12)
    # teacher-labelled inputs a trial trains on (a cheaper proxy than the full run's); None: data's own
    transfer_samples: int | None = Field(None, ge=0)
    # export modes a trial tries, in the formats that have them; None: every mode of the budgets' formats
    # (the fastest file is often not the obvious one: fp32 Core ML runs a tiny net on the CPU faster than
    # the Neural Engine, full-int8 is TFLite's fastest on a CPU)
    quants: list[str] | None = None
    # ladder: stop a trial, at 3/4 of its epochs or before its export, once it can no longer become the best
    # student of any budget it could meet (edgekd.search.pruner)
    pruner: Literal["ladder", "none"] = "ladder"
    startup_trials: int = Field(5, ge=1)  # random trials per rung before the sampler models the results
    # finished trials (of any rung) before any trial is pruned
    pruner_startup_trials: int = Field(3, ge=1)
    validation_samples: int = Field(2000, ge=100)  # fresh unlabeled inputs the pruner's agreement is read on

    @field_validator("width", "depth", "temperature", "alpha", "lr", "epochs")
    @classmethod
    def _range(cls, v, info):
        if v is not None and v[0] > v[1]:
            raise ValueError(f"inverted range [{v[0]}, {v[1]}]: write it as [low, high]")
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v):
        if not (0 <= v[0] and v[1] <= 1):
            raise ValueError("alpha is a weight in [0, 1]")
        return v

    @field_validator("archs", "quants")
    @classmethod
    def _nonempty(cls, v):
        if v is not None and not v:
            raise ValueError("empty list: name at least one")
        return v


class GateConfig(_Strict):
    policy: Path | None = None  # None: the built-in policy (min_retention 0.97)


class Recipe(_Strict):
    name: str = "recipe"
    seed: int = 0
    threads: int = Field(1, ge=1)  # torch threads; 1 is fastest on a busy 2-core machine
    # processes for independent work side by side (students, teacher-output shards, the transfer set
    # beside the teacher when it leaves a core free, each student's export as soon as it is trained);
    # 0: one per CPU. Each job runs `threads` threads, so results do not depend on it
    jobs: int = Field(0, ge=0)
    cache_dir: Path | None = None  # teacher-logit and transfer-set cache; default ~/.cache/edgekd
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    students: list[StudentConfig] = Field(min_length=1)
    distill: DistillConfig = DistillConfig()
    compress: CompressConfig = CompressConfig()  # none by default: post-training quantisation only
    export: ExportConfig = ExportConfig()
    bench: BenchConfig = BenchConfig()
    bundle: BundleConfig = BundleConfig()
    gate: GateConfig = GateConfig()
    search: SearchConfig = SearchConfig()  # `edgekd search` / `edgekd ladder`

    def record(self) -> dict:
        """The recipe as JSON that loads back as this recipe (what run folders, bundles and searches keep): a
        student keeps only the size it was given (a budget student's default width of 0.25 is not its
        width, and would clash with the budget when the recipe is read again)."""
        d = self.model_dump(mode="json")
        for s, raw in zip(self.students, d["students"]):
            for k in ("width", "compression", "params", "model", "depths"):
                if k not in s.model_fields_set or raw[k] is None:  # (load_recipe sets `model` even to None)
                    del raw[k]
        return d

    def student_train(self, student: StudentConfig) -> TrainConfig:
        """distill.train with the fields this student's own `train` sets."""
        if student.train is None:
            return self.distill.train
        return self.distill.train.model_copy(
            update={k: getattr(student.train, k) for k in student.train.model_fields_set})

    @field_validator("students")
    @classmethod
    def _unique_names(cls, students):
        names = [s.name for s in students]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"student names must be unique; repeated: {', '.join(dupes)}")
        return students


def format_validation(path: Path | str, err: ValidationError, what: str = "recipe",
                      field: str = "field") -> str:
    """One line per bad field: where it is, what is wrong (pydantic's words, or ours for unknown keys)."""
    lines = [f"{path}: invalid {what}"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = (f"unknown {field}; remove it or check its spelling" if e["type"] == "extra_forbidden"
               else e["msg"])
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def validate_config(model: type[BaseModel], data: dict, where: str):
    """Validate `data` against a config model; errors name `where` and each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InputError(format_validation(where, e, "settings")) from None


def read_yaml(path: Path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such {what} file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({e})") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save the {what} as UTF-8") \
            from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a {what} must be a YAML mapping of fields, got {type(data).__name__}")
    return data


def _resolve(base: Path, p: Path | None) -> Path | None:
    return None if p is None or p.is_absolute() else (base / p)


def _folder_or_name(base: Path, value: str | None) -> str | None:
    """A Hugging Face folder beside the recipe (made absolute), else the value as it is: a path already,
    or the name of a folder a package ships (edgekd.data.tokens.PRETRAINED)."""
    if value is not None and not Path(value).is_absolute() and (base / value).exists():
        return str(base / value)
    return value


def _resolve_data(base: Path, d: DataConfig) -> DataConfig:
    return d.model_copy(update={"path": _resolve(base, d.path) or d.path,
                                "tokenizer": _folder_or_name(base, d.tokenizer),
                                "transfer_path": _resolve(base, d.transfer_path) or d.transfer_path})


def _resolve_model(base: Path, m: ModelConfig | None) -> ModelConfig | None:
    if m is None:
        return None
    return m.model_copy(update={"weights": _resolve(base, m.weights) or m.weights,
                                "program": _resolve(base, m.program) or m.program,
                                "folder": _folder_or_name(base, m.folder)})


def load_recipe(path: Path | None = None) -> tuple[Recipe, Path]:
    """Read and validate a recipe; relative paths inside it are taken from the recipe's folder.
    With no path, the built-in MNIST-1D recipe."""
    path = Path(path) if path is not None else default_recipe_path()
    raw = read_yaml(path, "recipe")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        raise InputError(format_validation(path, e)) from None
    base = path.resolve().parent
    data = _resolve_data(base, recipe.data)
    teacher = recipe.teacher.model_copy(
        update={"checkpoint": _resolve(base, recipe.teacher.checkpoint) or recipe.teacher.checkpoint,
                "model": _resolve_model(base, recipe.teacher.model)})
    students = [s.model_copy(update={"model": _resolve_model(base, s.model)}) for s in recipe.students]
    cache = _resolve(base, recipe.cache_dir) or recipe.cache_dir
    gate = recipe.gate.model_copy(update={"policy": _resolve(base, recipe.gate.policy) or recipe.gate.policy})
    resolved = {"data": data, "teacher": teacher, "students": students, "cache_dir": cache, "gate": gate}
    return recipe.model_copy(update=resolved), path


def load_model_file(path: Path) -> ModelFile:
    """Read and validate a model file; relative paths inside it are taken from its folder."""
    path = Path(path)
    raw = read_yaml(path, "model")
    try:
        m = ModelFile.model_validate(raw)
    except ValidationError as e:
        raise InputError(format_validation(path, e, "model file")) from None
    base = path.resolve().parent
    data = _resolve_data(base, m.data)
    return m.model_copy(update={"model": _resolve_model(base, m.model), "data": data})


def load_policy(path: Path | None = None) -> Policy:
    """Read and validate a gate policy; with no path, the built-in one."""
    path = (Path(path) if path is not None
            else Path(str(resources.files("edgekd") / "policies" / "default.yaml")))
    raw = read_yaml(path, "policy")
    try:
        return Policy.model_validate(raw)
    except ValidationError as e:
        raise InputError(format_validation(path, e, "policy", field="rule")) from None


def default_recipe_path() -> Path:
    return Path(str(resources.files("edgekd") / "recipes" / "mnist1d.yaml"))


