"""The export stage as named steps, per file: trace -> convert -> quantise -> check parity -> save.

Every file is written under a temporary name and renamed only after its parity check passes, so a
file that computes something else never lands in the output directory.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgekd.checkpoint import load_checkpoint, training_data
from edgekd.data import Dataset
from edgekd.errors import CheckFailed, InputError
from edgekd.export import coreml, onnx, tflite  # noqa: F401 - registers the exporters
from edgekd.export.common import EXPORTERS, ExportMeta, file_name
from edgekd.export.parity import measure_parity, parity_failure
from edgekd.export.quiet import ConverterFailed, quiet
from edgekd.fileio import dir_size, sha256_tree, write_json
from edgekd.runtimes import load_runner
from edgekd.models import WithProbabilities
from edgekd.types import Artifact, Checkpoint


@dataclass(frozen=True)
class Failure:
    format: str
    quant: str
    reason: str


def plan_exports(formats: list[str], quants: list[str] | None) -> list[tuple[str, str]]:
    """(format, quant) pairs to export; every mode of each format when `quants` is None."""
    for f in formats:
        EXPORTERS.get(f, "--formats")
    if quants is None:
        return [(f, q) for f in formats for q in EXPORTERS.get(f).quants]
    known = {q for f in EXPORTERS.names() for q in EXPORTERS.get(f).quants}
    modes = "; ".join(f"{f}: {', '.join(EXPORTERS.get(f).quants)}" for f in formats)
    for q in quants:
        if q not in known:
            raise InputError(f"unknown quantisation {q!r} (--quant); known modes: {modes}")
    plan = [(f, q) for f in formats for q in quants if q in EXPORTERS.get(f).quants]
    for q in quants:
        if not any(q == pq for _, pq in plan):
            raise InputError(f"quantisation {q!r} (--quant) is not a mode of {', '.join(formats)}; {modes}")
    return plan


def export_checkpoint(checkpoint: Path, out_dir: Path, *, formats: list[str], quants: list[str] | None,
                      coreml_target: str, parity_samples: int, calibration_samples: int,
                      min_top1_agreement: dict[str, float], fp32_max_abs_diff: float,
                      data: Dataset | None = None, threads: int = 1) -> list[Artifact]:
    """Export one checkpoint in every planned (format, quant); writes `out_dir/artifacts.json`.
    Raises CheckFailed listing every file that missed its parity threshold (the others are kept)."""
    plan = plan_exports(formats, quants)
    for f, q in plan:
        if f == "coreml":
            coreml.check_target(q, coreml_target)
    ckpt, model = load_checkpoint(checkpoint)
    data = data or training_data(ckpt)
    wrapped = WithProbabilities(model).eval()
    meta = ExportMeta(name=ckpt.name, labels=ckpt.labels, mean=ckpt.mean, std=ckpt.std, input_shape=ckpt.input_shape)
    held_out = data.x_test[:parity_samples]
    calib = data.x_train[np.random.default_rng(0).permutation(len(data.x_train))[:calibration_samples]]
    with torch.no_grad():
        reference = wrapped(torch.from_numpy(held_out)).numpy()
    sample = held_out[:1]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    artifacts, failures = [], []
    for fmt, quant in plan:
        dest = out_dir / file_name(meta, fmt, quant)
        options = {"target": coreml_target} if fmt == "coreml" else {}
        try:
            artifacts.append(_export_one(wrapped, sample, dest, fmt, quant, calib, meta, options, held_out,
                                         reference, min_top1_agreement, fp32_max_abs_diff, ckpt.params, threads))
        except (_ParityMiss, ConverterFailed) as e:
            failures.append(Failure(fmt, quant, str(e)))
    _write_manifest(out_dir, ckpt, artifacts, failures, coreml_target)
    if failures:
        raise CheckFailed("export failed for:\n" + "\n".join(f"  {f.format}/{f.quant}: {f.reason}" for f in failures))
    return artifacts


class _ParityMiss(Exception):
    pass


def _export_one(wrapped, sample, dest: Path, fmt: str, quant: str, calib, meta, options, held_out, reference,
                min_top1: dict[str, float], fp32_max_abs_diff: float, params: int, threads: int) -> Artifact:
    """Convert, quantise, check parity, save; `convert_s` covers all four."""
    t0 = time.perf_counter()
    exporter = EXPORTERS.get(fmt)
    tmp_dest = dest.with_name(f".{dest.stem}.{uuid.uuid4().hex[:8]}.tmp{exporter.suffix}")
    try:
        with quiet():  # convert + quantise
            exporter.write(wrapped, sample, tmp_dest, quant, calib, meta, **options)
        with quiet():
            runner = load_runner(fmt, tmp_dest, threads)
            outputs = runner.predict(held_out)  # check parity
        parity = measure_parity(reference, outputs)
        threshold = 1.0 if quant == "fp32" else min_top1.get(quant, min_top1.get("default", 0.99))
        why = parity_failure(parity, threshold, fp32_max_abs_diff if quant == "fp32" else None)
        if why:
            raise _ParityMiss(f"{why}; {runner.name} vs PyTorch")
        _remove(dest)
        os.replace(tmp_dest, dest)  # the file lands only after its parity check passed
    finally:
        _remove(tmp_dest)
    return Artifact(format=fmt, quant=quant, path=dest, size_bytes=dir_size(dest),
                    sha256=sha256_tree(dest), params=params, parity=parity,
                    convert_s=round(time.perf_counter() - t0, 3), model=meta.name)


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists():
        p.unlink()


def _write_manifest(out_dir: Path, ckpt: Checkpoint, artifacts: list[Artifact], failures: list[Failure],
                    coreml_target: str) -> None:
    rows = [{**a.to_dict(), "path": a.path.name} for a in artifacts]  # paths relative to artifacts.json
    prov = ckpt.provenance
    write_json(out_dir / "artifacts.json", {
        "checkpoint": str(ckpt.path.resolve()), "role": ckpt.role, "model": ckpt.name, "params": ckpt.params,
        "labels": list(ckpt.labels), "mean": ckpt.mean, "std": ckpt.std, "input_shape": list(ckpt.input_shape),
        "teacher_accuracy": prov.get("teacher_accuracy"), "teacher": prov.get("teacher"),
        "checkpoint_accuracy": ckpt.accuracy, "data": prov.get("data"),
        "coreml_target": coreml_target, "artifacts": rows,
        "failures": [f.__dict__ for f in failures]})
