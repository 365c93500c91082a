"""The gate: every candidate file checked against every rule; for each platform the smallest (or
fastest) passing file is chosen; the verdict lists every failed rule with its numbers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgekd.artifacts import load_artifacts, stale_export, verify_artifact
from edgekd.config import Policy
from edgekd.errors import InputError
from edgekd.fileio import read_json, resolve_in
from edgekd.types import UNCALIBRATED, Measurement


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
    rows: list[Measurement] = field(repr=False)
    failures: list[RuleFailure] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def measured(self) -> Measurement | None:
        """The row retention and agreement come from: the file run by its runtime here."""
        return next((r for r in self.rows
                     if r.kind == "measured" and r.ok and not r.runner.startswith("android:")), None)

    def simulated_latency_ms(self) -> float | None:
        sims = [r.latency_ms_p50 for r in self.rows if r.kind == "simulated" and r.ok]
        return sum(sims) / len(sims) if sims else None

    def measured_latency_ms(self) -> float | None:
        m = self.measured()
        return m.latency_ms_p50 if m is not None else None


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


@dataclass(frozen=True)
class BenchRow:
    """A bench row with the folder of the artifacts.json that lists its file."""

    files_dir: Path
    row: Measurement


def load_bench_rows(paths: list[Path], current: bool = True) -> list[BenchRow]:
    """The rows of the given bench.json files (each a file or the folder holding one); `current`: refused
    unless they measured the files their artifacts.json lists now (what the gate ships from)."""
    out = []
    for p in paths:
        f = Path(p) / "bench.json" if Path(p).is_dir() else Path(p)
        bench = read_json(f, "bench.json", "re-run `edgekd bench`")
        if not isinstance(bench, dict) or not isinstance(bench.get("rows"), list) or "artifacts" not in bench:
            raise InputError(f"{f}: not an edgekd bench.json (needs an object with 'artifacts' and a 'rows' "
                             "list); re-run `edgekd bench`")
        manifest = resolve_in(f.parent, bench["artifacts"])
        rows = [Measurement.from_dict(r, f"{f}: rows[{i}]") for i, r in enumerate(bench["rows"])]
        if current:
            _check_current(f, bench, manifest, rows)
        out += [BenchRow(manifest.parent, r) for r in rows]
    return out


def _check_current(f: Path, bench: dict, manifest: Path, rows: list[Measurement]) -> None:
    """The files bench.json measured must be the ones artifacts.json lists now: a re-export (or a run
    stopped between export and bench) would otherwise let the gate judge, and ship, other files by
    numbers they never had. Checked by the hashes bench recorded, or by size for older bench.json."""
    fix = "re-run `edgekd bench` on the current export (or `edgekd run`)"
    if not manifest.is_file():
        raise InputError(f"{f}: the artifacts.json it measured ({manifest}) is gone; {fix}")
    exported = load_artifacts(manifest)
    _check_export(manifest, exported)
    listed = {Path(a["path"]).name: a for a in exported["artifacts"]}
    measured = bench.get("files")
    for r in rows:
        if r.format == "torch":
            continue
        a = listed.get(r.artifact)
        if a is None:
            raise InputError(f"{f}: measured {r.artifact}, which {manifest} no longer lists (exported again "
                             f"since); {fix}")
        same = (measured[r.artifact] == a["sha256"] if measured and r.artifact in measured else
                r.size_bytes is None or r.size_bytes == a["size_bytes"])
        if not same:
            raise InputError(f"{f}: measured another {r.artifact} than the one {manifest} lists now "
                             f"(exported again since); {fix}")


def _check_export(manifest: Path, exported: dict) -> None:
    """The files artifacts.json lists are on disk as exported, from the checkpoint there now: a run
    stopped part-way through a re-run (new student, old export) or a file written over since would let
    the gate ship, by its rows, a file that is not the one measured."""
    fix = "re-run `edgekd run` (or export and bench again)"
    stale = stale_export(manifest, exported)
    if stale:
        raise InputError(f"{stale}; {fix}")
    for a in exported["artifacts"]:
        if verify_artifact(manifest.parent, a):
            path = manifest.parent / a["path"]
            raise InputError(f"{path}: {'gone' if not path.exists() else 'not the file'} {manifest} lists "
                             f"(written over since its export); {fix}")


def check_policy_names(policy: Policy, known: set[str]) -> None:
    for rule in ("max_latency_ms", "min_accelerator_residency"):
        for name in getattr(policy, rule):
            if name not in known:
                raise InputError(f"policy rule {rule} names {name!r}, which no bench row has; "
                                 f"known runners and targets: {', '.join(sorted(known))}")


def evaluate(rows: list[BenchRow], policy: Policy, platforms: dict[str, str],
             baseline: dict | None = None) -> Verdict:
    check_policy_names(policy, {b.row.where for b in rows if b.row.ok})
    groups: dict[tuple[str, str], list[Measurement]] = {}
    dirs: dict[tuple[str, str], Path] = {}
    for b in rows:
        key = (b.row.model, b.row.artifact)
        groups.setdefault(key, []).append(b.row)
        dirs[key] = b.files_dir
    candidates, notes = [], []
    for platform, fmt in platforms.items():
        for (model, artifact), rs in groups.items():
            if rs[0].format != fmt:
                continue
            c = Candidate(platform, model, artifact, fmt, rs[0].quant, rs[0].size_bytes or 0,
                          str(dirs[(model, artifact)] / artifact), rs)
            platform_baseline = baseline if baseline and baseline.get("platform") == platform else None
            if baseline and platform_baseline is None and policy.max_regression is not None:
                note = (f"max_regression not checked for {platform}: the baseline bundle is for "
                        f"{baseline.get('platform')}")
                if note not in notes:
                    notes.append(note)
            c.failures.extend(_check(c, policy, platform_baseline))
            candidates.append(c)
    chosen = {}
    for platform in platforms:
        mine = [c for c in candidates if c.platform == platform]
        if not mine:
            notes.append(f"{platform}: no {platforms[platform]} files were benchmarked; nothing to ship")
            chosen[platform] = None
            continue
        ok = [c for c in mine if c.passed]
        # `prefer: latency` ranks one kind of latency per platform: the simulated targets' mean, else (no
        # passing file has a simulated row: a run benched on no target, as a host-budget rung recipe) the
        # time measured here
        simulated = any(c.simulated_latency_ms() is not None for c in ok)
        chosen[platform] = min(ok, key=lambda c: _preference(c, policy.prefer, simulated)) if ok else None
        if policy.prefer == "latency" and ok and all(_latency(c, simulated) is None for c in ok):
            notes.append(f"{platform}: prefer latency, but no file has a latency; chose the smallest")
    present = [p for p in platforms if any(c.platform == p for c in candidates)]
    passed = bool(present) and all(chosen[p] is not None for p in present)
    if not present:
        notes.append("no candidate files at all")
    return Verdict(passed, chosen, candidates, notes)


def _latency(c: Candidate, simulated: bool) -> float | None:
    return c.simulated_latency_ms() if simulated else c.measured_latency_ms()


def _preference(c: Candidate, prefer: str, simulated: bool = True):
    lat = _latency(c, simulated)
    lat = lat if lat is not None else float("inf")
    return (c.size_bytes, lat, c.artifact) if prefer == "size" else (lat, c.size_bytes, c.artifact)


def _check(c: Candidate, p: Policy, baseline: dict | None) -> list[RuleFailure]:
    fails: list[RuleFailure] = []
    for r in c.rows:
        if not r.ok:
            fails.append(RuleFailure(f"benchmark failed: {r.failed}", r.where, None, 0))
    m = c.measured()
    if p.min_retention is not None:
        v = m.retention if m else None
        if v is None or v < p.min_retention:
            fails.append(RuleFailure("min_retention", m.where if m else "file", v, p.min_retention))
    if p.min_teacher_agreement is not None:
        v = m.teacher_agreement if m else None
        if v is None or v < p.min_teacher_agreement:
            fails.append(RuleFailure("min_teacher_agreement", m.where if m else "file", v,
                                     p.min_teacher_agreement))
    if p.max_size_bytes is not None and c.size_bytes > p.max_size_bytes:
        fails.append(RuleFailure("max_size_bytes", "file", c.size_bytes, p.max_size_bytes))
    for name, limit in p.max_latency_ms.items():
        for r in c.rows:
            if r.where == name and r.ok:
                v = r.latency_ms_p50
                if p.latency_margin == "band" and r.kind == "simulated":
                    v = r.latency_band_ms[1] if r.latency_band_ms else None  # no band: no margin known
                if v is None or v > limit:
                    at_edge = p.latency_margin == "band" and r.kind == "simulated"
                    why = r.no_band or UNCALIBRATED
                    rule = ("max_latency_ms (band edge)" if at_edge and v is not None else
                            f"max_latency_ms (no error band: {why})" if at_edge else "max_latency_ms")
                    fails.append(RuleFailure(rule, name, v, limit))
    for name, limit in p.min_accelerator_residency.items():
        for r in c.rows:
            if r.target == name and r.ok:
                v = (r.accelerator_residency or {}).get("ops")
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
        if m.retention is None or m.retention < floor:
            fails.append(RuleFailure("max_regression.retention", "vs baseline", m.retention, floor))
    if lim.size_pct is not None:
        cap = baseline["model"]["size_bytes"] * (1 + lim.size_pct / 100)
        if c.size_bytes > cap:
            fails.append(RuleFailure("max_regression.size_pct", "vs baseline", c.size_bytes, cap))
    if lim.latency_pct is not None:
        why = latency_baseline_problem(baseline, {r.target for r in c.rows if r.kind == "simulated"})
        if why:
            raise InputError(f"{why}, and {c.artifact} has no simulated row on any of them (bundles keep no "
                             "wall-clock timings); bench both on a common target (bench.targets) or drop "
                             "latency_pct")
        for r in c.rows:
            old = (base.get("simulated") or {}).get(r.target, {}).get("latency_ms") if r.target else None
            cap = old * (1 + lim.latency_pct / 100) if old is not None else None
            if cap is not None and r.ok and r.latency_ms_p50 > cap:
                fails.append(RuleFailure("max_regression.latency_pct", r.target, r.latency_ms_p50, cap))
    return fails


def latency_baseline_problem(baseline: dict, targets: set[str]) -> str | None:
    """Why max_regression.latency_pct cannot compare files simulated on `targets` with `baseline` (a bundle
    manifest: it keeps the simulated latencies only), or None."""
    sims = baseline["metrics"].get("simulated") or {}
    if set(sims) & targets:
        return None
    return (f"policy rule max_regression.latency_pct compares simulated latency on the targets the baseline "
            f"bundle records ({', '.join(sorted(sims)) or 'none'})")


def explain(v: Verdict) -> str:
    lines = [f"gate: {'PASS' if v.passed else 'FAIL'}"]
    for platform, c in v.chosen.items():
        mine = [x for x in v.candidates if x.platform == platform]
        if c is not None:
            lines.append(f"  {platform}: ships {c.model}/{c.artifact} ({c.size_bytes} B, retention "
                         f"{_ratio(c.measured())})")
        elif mine:
            lines.append(f"  {platform}: no file passes the policy")
            for x in mine:
                lines.append(f"    {x.model}/{x.artifact}: " + "; ".join(str(f) for f in x.failures))
    lines += [f"  note: {n}" for n in v.notes]
    return "\n".join(lines)


def _ratio(m: Measurement | None) -> str:
    return "unknown" if m is None or m.retention is None else f"{m.retention:.4f}"
