"""A trial's student and KD settings, drawn from the recipe's `search:` ranges."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgekd.types import ModelSpec


@dataclass(frozen=True)
class Candidate:
    """What one trial trains: a zoo student and the KD settings it is distilled with."""

    arch: str
    width: float
    depth: int | None
    temperature: float
    alpha: float
    lr: float
    epochs: int

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.zoo(self.arch, self.width, self.depth)

    def to_dict(self) -> dict:
        return asdict(self)


def _float(trial, name: str, bounds: tuple[float, float], log: bool = False) -> float:
    low, high = bounds
    return float(low) if low == high else trial.suggest_float(name, low, high, log=log)


def _int(trial, name: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return int(low) if low == high else trial.suggest_int(name, low, high)


def sample(trial, space) -> Candidate:
    """Draw a candidate from `space` (a SearchConfig) through an Optuna trial. A range whose ends are
    equal is a fixed value and is not a parameter of the study."""
    arch = space.archs[0] if len(space.archs) == 1 else trial.suggest_categorical("arch", list(space.archs))
    return Candidate(
        arch=arch,
        width=round(_float(trial, "width", space.width, log=True), 4),
        depth=None if space.depth is None else _int(trial, "depth", space.depth),
        temperature=round(_float(trial, "temperature", space.temperature), 3),
        alpha=round(_float(trial, "alpha", space.alpha), 3),
        lr=float(f"{_float(trial, 'lr', space.lr, log=True):.4g}"),
        epochs=_int(trial, "epochs", space.epochs),
    )
