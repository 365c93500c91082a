"""The answer the report leads with: did the gate pass, and what ships on each platform (or which
rules every candidate broke). Numbers come from the same bench rows as the matrices below them."""

from __future__ import annotations

from dataclasses import dataclass

from edgekd.gate.verdict import Candidate, Verdict
from edgekd.report.matrix import host_row
from edgekd.types import Measurement

NOT_RUN = "NOT RUN"


@dataclass(frozen=True)
class Rejected:
    name: str  # "student/artifact"
    rules: tuple[str, ...]  # every rule it broke, with its numbers


@dataclass(frozen=True)
class PlatformOutcome:
    platform: str
    ships: str | None  # "student/artifact", or None when nothing passes
    label: str = ""  # "coreml/int8"
    size_bytes: int | None = None
    retention: float | None = None
    rejected: tuple[Rejected, ...] = ()  # when nothing ships: each candidate and why


@dataclass(frozen=True)
class Headline:
    status: str  # "PASS" | "FAIL" | NOT_RUN
    platforms: tuple[PlatformOutcome, ...]
    notes: tuple[str, ...]


def headline(verdict: Verdict | None, rows: list[Measurement]) -> Headline:
    if verdict is None:
        return Headline(NOT_RUN, (), ("the release gate has not run on these files yet",))
    outcomes = tuple(_outcome(p, c, verdict, rows) for p, c in verdict.chosen.items())
    return Headline("PASS" if verdict.passed else "FAIL", outcomes, tuple(verdict.notes))


def shipped_files(verdict: Verdict | None) -> dict[tuple[str, str], tuple[str, ...]]:
    """(student, artifact) -> the platforms that ship it, for marking lines in the matrices."""
    ships: dict[tuple[str, str], tuple[str, ...]] = {}
    for platform, c in (verdict.chosen.items() if verdict else ()):
        if c is not None:
            ships[(c.model, c.artifact)] = ships.get((c.model, c.artifact), ()) + (platform,)
    return ships


def _outcome(platform: str, chosen: Candidate | None, verdict: Verdict,
             rows: list[Measurement]) -> PlatformOutcome:
    if chosen is None:
        mine = [c for c in verdict.candidates if c.platform == platform]
        rejected = tuple(Rejected(f"{c.model}/{c.artifact}", tuple(str(f) for f in c.failures)) for c in mine)
        return PlatformOutcome(platform, None, rejected=rejected)
    host = host_row(rows, chosen.model, chosen.artifact)
    retention = host.retention if host is not None else None
    return PlatformOutcome(platform, f"{chosen.model}/{chosen.artifact}", f"{chosen.format}/{chosen.quant}",
                           chosen.size_bytes, retention)
