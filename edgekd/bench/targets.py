"""Hardware profiles (`targets/*.yaml`): data validated by a schema, never code."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgekd.config import config_dir, format_validation, read_yaml
from edgekd.errors import InputError

Dtype = Literal["fp32", "fp16", "int8", "int16"]  # int16: 16-bit integer activations (w8a16)
OP_KINDS = ("conv", "depthwise_conv", "fully_connected", "matmul", "pool", "reduce", "softmax", "norm",
            "elementwise", "activation", "layout", "quant")


class Unit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    accelerator: bool
    peak_gops: dict[Dtype, float]  # the dtypes this unit runs, at their peak rate (Gop/s, 1 MAC = 2 ops)
    efficiency: dict[str, float]  # share of peak reached per op kind; "default" for the rest
    memory_bandwidth_gbps: float = Field(gt=0)  # weights stream from DRAM
    # activations (small, cache-resident) per op kind, "default" for the rest; absent: DRAM bandwidth
    cache_bandwidth_gbps: dict[str, float] | None = None
    overlap: bool = True  # True: roofline max(compute, memory); False: compute + memory (no overlap)
    # a unit that lowers a convolution wider than 1x1 to a matrix product (im2col, as ONNX Runtime's CPU
    # provider does) moves that matrix at this bandwidth; None: convolutions read their input in place
    # (XNNPACK's indirect convolution, the NPUs)
    im2col_gbps: float | None = Field(None, gt=0)
    # output channels a kernel computes at once (a CPU's SIMD tile): a layer's work is padded to a multiple
    # of it. XNNPACK's f32 kernels on x86 (AVX2 6x16, AVX-512 7x16 GEMMs; 16-channel depthwise) tile 16;
    # NEON's GEMMs tile 8. 1: no padding (the NPUs' profiles, whose fits price what tiling costs)
    channel_tile: int = Field(1, ge=1)
    dispatch_overhead_us: float = Field(ge=0)  # fixed cost of launching one op
    # per op kind, where launching that kind costs other than dispatch_overhead_us (ONNX Runtime's CPU
    # provider: about 8 us per attention matmul against under 1 us per conv; `edgekd calibrate host` fits it)
    dispatch_by_kind_us: dict[str, float] | None = None
    ops: list[str]  # op kinds this unit runs; ["*"] for all
    fuses_activation: bool = True  # an activation right after conv/linear costs nothing

    @model_validator(mode="after")
    def _check(self):
        bad = [k for k in [*self.ops, *self.efficiency, *(self.cache_bandwidth_gbps or {})]
               if k not in (*OP_KINDS, "*", "default")]
        bad += [k for k in self.dispatch_by_kind_us or {} if k not in OP_KINDS]  # no "default"
        if bad:
            raise ValueError(f"unit {self.name!r}: unknown op kind(s) {bad}; known: {', '.join(OP_KINDS)}")
        if "default" not in self.efficiency:
            raise ValueError(f"unit {self.name!r}: efficiency needs a 'default' entry")
        if self.cache_bandwidth_gbps is not None and "default" not in self.cache_bandwidth_gbps:
            raise ValueError(f"unit {self.name!r}: cache_bandwidth_gbps needs a 'default' entry")
        if any(not 0 < v <= 1 for v in self.efficiency.values()):
            raise ValueError(f"unit {self.name!r}: efficiencies are shares of peak, in (0, 1]")
        if any(not 0 <= v < math.inf for v in (self.dispatch_by_kind_us or {}).values()):
            raise ValueError(f"unit {self.name!r}: dispatch_by_kind_us holds costs in us, finite and >= 0")
        return self

    def runs(self, kind: str, dtype: str) -> bool:
        return ("*" in self.ops or kind in self.ops) and dtype in self.peak_gops

    def dispatch_us(self, kind: str) -> float:
        """The fixed cost of launching one op of `kind` on this unit."""
        return (self.dispatch_by_kind_us or {}).get(kind, self.dispatch_overhead_us)


class Calibration(BaseModel):
    """Where a profile's free parameters came from, and how far its predictions were seen to miss."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chipset: str | None = None  # the calibration set's `chipset_norm` rows it is fitted to; None: no rows
    rows: int = Field(0, ge=0)  # rows the fit used
    networks: int = Field(0, ge=0)
    source: str = ""  # the file and how it was fitted
    # 80% interval of published / predicted latency on networks left out of the fit (leave one out):
    # the true latency lies within [predicted * low, predicted * high] for 8 in 10 unseen networks
    error_band: tuple[float, float] | None = None
    median_abs_error: float | None = None
    host_cpu: str | None = None  # a host profile: the CPU model it was measured on
    # the figures every fit started from (the datasheet's, before any fit), so a profile fitted again
    # starts its held-out fits from them and not from values that saw the held-out network
    start: dict[str, float] | None = None
    fitted_at: str | None = None  # when (UTC, ISO 8601)
    # the dtypes of the kernels its rows ran on the calibrated unit (the accelerator, else the only one); a
    # graph with ops of another dtype there is outside the calibration, and its simulated latency carries no
    # band (the host profiles are fitted on fp32 files; integer-kernel files ran from 3.6x faster to 11x
    # slower than their fit gave them). None: not recorded (every dtype counts as covered)
    dtypes: list[Dtype] | None = None
    # chips of the same accelerator design (other generations, clocks) whose rows join the fit: they price
    # the op classes the chip's own few networks leave open, each chip with its own speed factor
    # (family_factors: its latency over this chip's, as fitted); the error band is the chip's own rows'
    family: list[str] = []
    family_rows: int = Field(0, ge=0)
    family_factors: dict[str, float] | None = None

    @model_validator(mode="after")
    def _family(self):
        if self.family and not self.chipset:
            raise ValueError("calibration.family needs calibration.chipset: the chip the family joins")
        if self.chipset in self.family or len(set(self.family)) < len(self.family) or "" in self.family:
            raise ValueError(f"calibration.family {self.family}: name other chips, each once (not the "
                             f"profile's own chipset {self.chipset!r})")
        return self

    @property
    def calibrated(self) -> bool:
        return self.rows > 0 and self.error_band is not None


class RuntimeRule(BaseModel):
    """What one runtime can use on this chip, where it differs from the profile's units: published runs
    show e.g. ONNX Runtime's QNN execution provider leaving every layer on the CPU of a chip whose HTP
    TFLite and QNN use. The fallback unit (the last) is always usable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: str = Field(min_length=1)  # case-insensitive substring of the runtime's name
    units: list[str]  # the units this runtime places ops on, in the profile's order
    why: str = Field(min_length=1)  # the evidence, with its source


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    formats: list[Literal["coreml", "tflite", "onnx"]]
    invoke_overhead_us: float = Field(ge=0)  # per inference, outside the ops
    unit_switch_us: float = Field(ge=0)  # each time execution moves between units
    transfer_bandwidth_gbps: float = Field(gt=0)  # activations copied at a unit switch
    units: list[Unit] = Field(min_length=1)  # in preference order; the last one must run every op
    calibration: Calibration = Calibration()  # absent: assumed figures, checked against nothing
    runtimes: list[RuntimeRule] = []  # runtimes that use fewer units than the profile has

    @model_validator(mode="after")
    def _fallback(self):
        last = self.units[-1]
        if "*" not in last.ops:
            raise ValueError(f"the last unit ({last.name!r}) is the fallback and must list ops: ['*']")
        names = [u.name for u in self.units]
        for rule in self.runtimes:
            bad = [n for n in rule.units if n not in names]
            if bad:
                raise ValueError(f"runtimes rule {rule.match!r}: no unit named {bad[0]!r}; units: "
                                 f"{', '.join(names)}")
        return self

    def _rule(self, runtime: str | None) -> RuntimeRule | None:
        return next((r for r in self.runtimes if runtime and r.match.lower() in runtime.lower()), None)

    def for_runtime(self, runtime: str | None) -> Target:
        """The profile as `runtime` sees it: only the units its rule names (and the fallback). A runtime
        no rule matches (or None) uses every unit."""
        rule = self._rule(runtime)
        if rule is None:
            return self
        keep = [u for u in self.units[:-1] if u.name in rule.units] + [self.units[-1]]
        return self.model_copy(update={"units": keep})

    def runtime_note(self, runtime: str | None) -> str | None:
        rule = self._rule(runtime)
        return f"{runtime}: {rule.why}" if rule else None

    def yaml_data(self) -> dict:
        """The profile as its YAML file holds it: no empty fields (no `runtimes: []`)."""
        data = self.model_dump(exclude_none=True)
        if not data.get("runtimes"):
            data.pop("runtimes", None)
        if not self.calibration.family:
            for k in ("family", "family_rows"):
                data["calibration"].pop(k, None)
        return data


def targets_dir() -> Path:
    """The profiles shipped inside the installed package (edgekd/targets/), else, in a source checkout
    or an editable install, the repository's targets/ they are built from. Never the working directory."""
    package = Path(__file__).resolve().parents[1]
    for d in (package / "targets", package.parent / "targets"):
        if d.is_dir() and any(d.glob("*.yaml")):
            return d
    raise InputError(f"no target profiles found in {package / 'targets'}; reinstall edgekd")


def load_target(path: Path) -> Target:
    raw = read_yaml(path, "target profile")
    try:
        return Target.model_validate(raw)
    except ValidationError as e:
        raise InputError(format_validation(path, e, "target profile")) from None


def user_targets_dir() -> Path:
    """Profiles fitted on this machine (`edgekd calibrate host`): used instead of packaged ones by name."""
    return config_dir() / "targets"


def all_targets(directory: Path | None = None) -> dict[str, Target]:
    d = directory or targets_dir()
    out = {}
    paths = {p.stem: p for p in sorted(d.glob("*.yaml"))}
    if directory is None and user_targets_dir().is_dir():
        paths.update({p.stem: p for p in sorted(user_targets_dir().glob("*.yaml"))})
    for p in paths.values():
        try:
            t = load_target(p)
        except InputError as e:
            if p.parent != user_targets_dir():
                raise
            raise InputError(f"{e} (your own profile, used instead of the packaged {p.stem}: fix it, delete "
                             "it, or re-run `edgekd calibrate host`)") from None
        if t.name != p.stem:
            raise InputError(f"{p}: field 'name' is {t.name!r} but the file is {p.stem}.yaml; "
                             "make them equal")
        out[t.name] = t
    return out


def get_targets(names: list[str] | None, directory: Path | None = None) -> list[Target]:
    available = all_targets(directory)
    if names is None:
        return list(available.values())
    missing = [n for n in names if n not in available]
    if missing:
        raise InputError(f"unknown target(s) {', '.join(missing)} (--targets); "
                         f"available: {', '.join(available)}")
    return [available[n] for n in names]


def host_profile_notes(targets: list[Target]) -> list[str]:
    """host_profile_note of every host profile (`host-cpu`, one per host runtime) among `targets`."""
    return [host_profile_note(t) for t in targets if t.name.startswith("host-cpu")]


def host_profile_note(target: Target) -> str:
    """Which host profile a bench used, when it was fitted, and a warning when it was fitted elsewhere."""
    from edgekd.bench.measure import cpu_model

    c = target.calibration
    mine = (user_targets_dir() / f"{target.name}.yaml").is_file()
    where = f"yours ({user_targets_dir() / f'{target.name}.yaml'})" if mine else "packaged"
    when = f", fitted {c.fitted_at} on {c.host_cpu}" if c.fitted_at and c.host_cpu else ""
    note = f"host profile {target.name}: {where}{when}"
    if c.calibrated and c.dtypes is None:
        note += ("; fitted before profiles recorded the kernels they were calibrated on: its error band is "
                 "applied to every file; run `edgekd calibrate host` again")
    here = cpu_model()
    if c.host_cpu != here:
        note += (f"; warning: fitted on {c.host_cpu or 'another machine'}, this host is {here}: its "
                 "predictions may be off here; run `edgekd calibrate host`")
    return note
