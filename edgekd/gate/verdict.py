"""The gate: every candidate file checked against every rule; for each platform the smallest (or
fastest) passing file is chosen; the verdict lists every failed rule with its numbers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgekd.config import Policy
from edgekd.errors import InputError
from edgekd.fileio import read_json


@dataclass(frozen=True)
class RuleFailure:
    rule: str
    where: str  # runner/target the number comes from, or "file"
    value: float | None
    limit: float

    def __str__(self) -> str:
        v = "missing" if self.value is None else f"{self.value:.6g}"
        return f"{self.rule} [{self.where}]: {v} vs limit {self.limit:.6g}"


@dataclass(frozen=True)
class Candidate:
    platform: str
    model: str
    artifact: str
    format: str
    quant: str
    size_bytes: int
    path: str  # the file, as bench.json's artifacts.json located it
    rows: list[dict] = field(repr=False)
    failures: list[RuleFailure] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def measured(self) -> dict | None:
        return next((r for r in self.rows if r["kind"] == "measured" and "failed" not in r), None)

    def simulated_latency_ms(self) -> float | None:
        sims = [r["latency_ms_p50"] for r in self.rows if r["kind"] == "simulated" and "failed" not in r]
        return sum(sims) / len(sims) if sims else None


@dataclass(frozen=True)
class Verdict:
    passed: bool
    chosen: dict[str, Candidate | None]
    candidates: list[Candidate]
    notes: list[str]

    def to_dict(self) -> dict:
        def cand(c: Candidate | None):
            if c is None:
                return None
            return {"platform": c.platform, "model": c.model, "artifact": c.artifact, "format": c.format,
                    "quant": c.quant, "size_bytes": c.size_bytes, "passed": c.passed,
                    "failures": [{**asdict(f), "message": str(f)} for f in c.failures]}

        return {"passed": self.passed, "chosen": {p: cand(c) for p, c in self.chosen.items()},
                "candidates": [cand(c) for c in self.candidates], "notes": self.notes}


def load_bench_rows(path: Path) -> list[tuple[dict, dict]]:
    """(bench.json, row) pairs from a bench.json, a folder holding one, or a run folder holding many."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("bench.json"))
    if not files:
        raise InputError(f"{path}: no bench.json found; run `edgekd bench` (or `edgekd run`) first")
    out = []
    for f in files:
        bench = read_json(f, "bench.json", "re-run `edgekd bench`")
        out += [(bench, r) for r in bench.get("rows", [])]
    return out


def check_policy_names(policy: Policy, known: set[str]) -> None:
    for rule in ("max_latency_ms", "min_accelerator_residency"):
        for name in getattr(policy, rule):
            if name not in known:
                raise InputError(f"policy rule {rule} names {name!r}, which no bench row has; "
                                 f"known runners and targets: {', '.join(sorted(known))}")


def evaluate(rows: list[tuple[dict, dict]], policy: Policy, platforms: dict[str, str],
             baseline: dict | None = None) -> Verdict:
    check_policy_names(policy, {r.get("target") or r.get("runner") for _, r in rows if "failed" not in r} - {None})
    groups: dict[tuple[str, str], list[dict]] = {}
    sources: dict[tuple[str, str], dict] = {}
    for bench, r in rows:
        key = (r.get("model", bench.get("model")), r["artifact"])
        groups.setdefault(key, []).append(r)
        sources[key] = bench
    candidates, notes = [], []
    for platform, fmt in platforms.items():
        for (model, artifact), rs in groups.items():
            if rs[0]["format"] != fmt:
                continue
            base_dir = Path(sources[(model, artifact)]["artifacts"]).parent
            c = Candidate(platform, model, artifact, fmt, rs[0]["quant"], rs[0].get("size_bytes") or 0,
                          str(base_dir / artifact), rs)
            c.failures.extend(_check(c, policy, baseline if baseline and baseline.get("platform") == platform else None))
            candidates.append(c)
    chosen = {}
    for platform in platforms:
        mine = [c for c in candidates if c.platform == platform]
        if not mine:
            notes.append(f"{platform}: no {platforms[platform]} files were benchmarked; nothing to ship")
            chosen[platform] = None
            continue
        ok = [c for c in mine if c.passed]
        chosen[platform] = min(ok, key=lambda c: _preference(c, policy.prefer)) if ok else None
    present = [p for p in platforms if any(c.platform == p for c in candidates)]
    passed = bool(present) and all(chosen[p] is not None for p in present)
    if not present:
        notes.append("no candidate files at all")
    return Verdict(passed, chosen, candidates, notes)


def _preference(c: Candidate, prefer: str):
    lat = c.simulated_latency_ms()
    lat = lat if lat is not None else float("inf")
    return (c.size_bytes, lat, c.artifact) if prefer == "size" else (lat, c.size_bytes, c.artifact)


def _check(c: Candidate, p: Policy, baseline: dict | None) -> list[RuleFailure]:
    fails: list[RuleFailure] = []
    broken = [r for r in c.rows if "failed" in r]
    for r in broken:
        fails.append(RuleFailure(f"benchmark failed: {r['failed']}", r.get("target") or r.get("runner") or "file",
                                 None, 0))
    m = c.measured()
    if p.min_retention is not None:
        v = m.get("retention") if m else None
        if v is None or v < p.min_retention:
            fails.append(RuleFailure("min_retention", m["runner"] if m else "file", v, p.min_retention))
    if p.min_teacher_agreement is not None:
        v = m.get("teacher_agreement") if m else None
        if v is None or v < p.min_teacher_agreement:
            fails.append(RuleFailure("min_teacher_agreement", m["runner"] if m else "file", v, p.min_teacher_agreement))
    if p.max_size_bytes is not None and c.size_bytes > p.max_size_bytes:
        fails.append(RuleFailure("max_size_bytes", "file", c.size_bytes, p.max_size_bytes))
    for name, limit in p.max_latency_ms.items():
        for r in c.rows:
            if (r.get("target") or r.get("runner")) == name and "failed" not in r:
                v = r.get("latency_ms_p50")
                if v is None or v > limit:
                    fails.append(RuleFailure("max_latency_ms", name, v, limit))
    for name, limit in p.min_accelerator_residency.items():
        for r in c.rows:
            if r.get("target") == name and "failed" not in r:
                v = (r.get("accelerator_residency") or {}).get("ops")
                if v is None or v < limit:
                    fails.append(RuleFailure("min_accelerator_residency", name, v, limit))
    if p.max_regression is not None and baseline is not None:
        fails += _regressions(c, p, baseline)
    return fails


def _regressions(c: Candidate, p: Policy, baseline: dict) -> list[RuleFailure]:
    lim, base = p.max_regression, baseline["metrics"]
    fails = []
    m = c.measured()
    if lim.retention is not None and m and base.get("retention") is not None:
        floor = base["retention"] - lim.retention
        if (m.get("retention") or 0) < floor:
            fails.append(RuleFailure("max_regression.retention", "vs baseline", m.get("retention"), floor))
    if lim.size_pct is not None:
        cap = baseline["model"]["size_bytes"] * (1 + lim.size_pct / 100)
        if c.size_bytes > cap:
            fails.append(RuleFailure("max_regression.size_pct", "vs baseline", c.size_bytes, cap))
    if lim.latency_pct is not None:
        for r in c.rows:
            t = r.get("target")
            old = (base.get("simulated") or {}).get(t, {}).get("latency_ms") if t else None
            if old is not None and "failed" not in r and r["latency_ms_p50"] > old * (1 + lim.latency_pct / 100):
                fails.append(RuleFailure("max_regression.latency_pct", t, r["latency_ms_p50"],
                                         old * (1 + lim.latency_pct / 100)))
    return fails


def explain(v: Verdict) -> str:
    lines = [f"gate: {'PASS' if v.passed else 'FAIL'}"]
    for platform, c in v.chosen.items():
        mine = [x for x in v.candidates if x.platform == platform]
        if c is not None:
            m = c.measured() or {}
            lines.append(f"  {platform}: ships {c.model}/{c.artifact} ({c.size_bytes} B, retention "
                         f"{m.get('retention', float('nan')):.4f})")
        elif mine:
            lines.append(f"  {platform}: no file passes the policy")
            for x in mine:
                lines.append(f"    {x.model}/{x.artifact}: " + "; ".join(str(f) for f in x.failures))
    lines += [f"  note: {n}" for n in v.notes]
    return "\n".join(lines)
