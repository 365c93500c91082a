"""The export stage as named steps, per file: trace -> convert -> quantise -> check parity -> save.

Every file is written under a temporary name and renamed only after its parity check passes, so a
file that computes something else never lands in the output directory.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgekd.checkpoint import extra_file, load_checkpoint, training_data
from edgekd.data import Dataset
from edgekd.errors import CheckFailed, InputError
from edgekd.export import coreml, onnx, tflite  # noqa: F401 - registers the exporters
from edgekd.export.common import EXPORTERS, ExportMeta, file_name
from edgekd.export.quiet import ConverterFailed, quiet
from edgekd.fileio import dir_size, relative_to, resolve_in, sha256_tree, write_json
from edgekd.inputs import named_inputs
from edgekd.models import export_graph, qat
from edgekd.parity import measure_parity, parity_failure
from edgekd.runtimes import load_runner
from edgekd.types import Artifact, Checkpoint


@dataclass(frozen=True)
class Failure:
    format: str
    quant: str
    reason: str
    top1_agreement: float | None = None  # None: the converter failed before parity could be measured
    required: float | None = None
    checked: bool = False  # a check found the file wrong without an agreement (a trained grid not kept)


class ExportMisses(CheckFailed):
    """Some files were not kept. `final` is False when a converter crashed (worth retrying), True when
    every miss is a measured parity failure (the same inputs would fail the same way)."""

    def __init__(self, failures: list[Failure], kept: int, student: str):
        self.failures, self.kept, self.student = failures, kept, student
        self.final = all(f.top1_agreement is not None or f.checked for f in failures)
        super().__init__(f"{len(failures)} file(s) of {student} were not kept ({kept} kept):\n"
                         + misses_table([(student, f) for f in failures]))

    def __reduce__(self):  # raised in an export job (another process) and read here
        return (type(self), (self.failures, self.kept, self.student))


def misses_table(misses: list[tuple[str, Failure]]) -> str:
    """student | format/mode | agreement vs required | why: one line per file that was not kept."""
    rows = [("student", "format/mode", "agreement", "required", "why")]
    for student, f in misses:
        agree = "-" if f.top1_agreement is None else f"{f.top1_agreement:.4f}"
        need = "-" if f.required is None else f"{f.required:g}"
        rows.append((student, f"{f.format}/{f.quant}", agree, need, f.reason.split("\n")[0]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows)


def plan_exports(formats: list[str], quants: list[str] | None) -> list[tuple[str, str]]:
    """(format, quant) pairs to export; every mode of each format when `quants` is None."""
    for f in formats:
        EXPORTERS.get(f, "--formats")
    if quants is None:
        return [(f, q) for f in formats for q in EXPORTERS.get(f).default_quants]
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
    ckpt, model = load_checkpoint(checkpoint)
    compression = ckpt.provenance.get("compression")
    for f, q in plan:
        if f == "coreml":
            coreml.check_target(q, coreml_target, compression)
    data = data or training_data(ckpt)
    check_fits(ckpt, data)
    plan = _text_plan(plan, quants) if data.is_text else plan
    meta = ExportMeta(name=ckpt.name, labels=ckpt.labels, mean=ckpt.mean, std=ckpt.std,
                      input_shape=ckpt.input_shape, compression=compression, text=data.is_text)
    held_out = data.x_test if parity_samples is None else data.x_test[:parity_samples]
    calib = data.x_train[np.random.default_rng(0).permutation(len(data.x_train))[:calibration_samples]]
    graphs = _graphs(ckpt, model, meta, [q for _, q in plan], data)
    references = {}
    with torch.no_grad():
        for kind, graph in graphs.items():
            references[kind] = graph(*(torch.from_numpy(v) for v in named_inputs(held_out).values())).numpy()
    sample = held_out[:1]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    artifacts, failures = [], []
    for fmt, quant in plan:
        dest = out_dir / file_name(meta, fmt, quant)
        options = {"target": coreml_target} if fmt == "coreml" else {}
        try:
            kind = quant if quant in graphs else "float"
            artifacts.append(_export_one(graphs[kind], sample, dest, fmt, quant, calib, meta, options,
                                         held_out, references[kind], min_top1_agreement, fp32_max_abs_diff,
                                         ckpt.params, threads))
        except _ParityMiss as e:
            failures.append(Failure(fmt, quant, str(e), e.parity.top1_agreement, e.required))
        except ConverterFailed as e:
            io_error = e.io_error()
            if io_error is not None:  # a full disk or a read-only folder is not the converter's fault
                raise OSError(io_error.errno, io_error.strerror,
                              str(out_dir / file_name(meta, fmt, quant))) from None
            if isinstance(e.cause, CheckFailed):  # the file was measured wrong (a trained grid not kept)
                failures.append(Failure(fmt, quant, f"{e.cause}", checked=True))
                continue
            failures.append(Failure(fmt, quant, str(e)))
    earlier = _listed(out_dir, ckpt.name)
    _write_manifest(out_dir, ckpt, artifacts, failures, coreml_target)
    # files an earlier export left here that this one does not list (another plan, a file that now missed
    # parity, another model): gone, so no stale file sits beside the manifest under a shippable name
    kept = {a.path.name for a in artifacts}
    for name in (earlier | {file_name(meta, f, q) for f, q in plan}) - kept:
        _remove(out_dir / name)
    if failures:
        raise ExportMisses(failures, len(artifacts), ckpt.name)
    return artifacts


def _graphs(ckpt: Checkpoint, model, meta: ExportMeta, quants: list[str], data: Dataset) -> dict:
    """The graphs the plan converts: "float" (the checkpoint's network, probabilities out) for every file,
    and for the mode a compress step trained int8 activations for, the program it trained
    (edgekd.models.qat): that file is converted from it as it is, and checked against it."""
    graphs = {"float": export_graph(model)}
    trained = meta.compression["mode"] if meta.compression else None
    if trained in qat.MODES and trained in quants:  # extra_file refuses a checkpoint without them
        program = qat.restore(model, data.x_train[:2], extra_file(ckpt, qat.STATE), trained)
        graphs[trained] = export_graph(program)
    return graphs


# Modes that quantise a graph's input, which token ids cannot take (edgekd.export.tflite says why)
NOT_FOR_TEXT = ("full-int8",)
# Written for text models only on request: Core ML W8A8 of BERT students agreed with PyTorch on 0.69
# (3 layers, hidden 384) and 0.82 (2 layers, 128) of 512 sentences (benchmarks/text_row.py): per-tensor
# int8 activations around attention and layer norm lose too much
TEXT_ON_REQUEST = ("w8a8",)


def _text_plan(plan: list[tuple[str, str]], quants: list[str] | None) -> list[tuple[str, str]]:
    """A text model's plan: the default plan without NOT_FOR_TEXT and TEXT_ON_REQUEST; asked for by name,
    the first are refused and the second written (and parity-checked like any file)."""
    refused = [f"{f} {q}" for f, q in plan if q in NOT_FOR_TEXT]
    if refused and quants is not None:
        raise InputError(f"text models cannot be exported as {', '.join(refused)} (it quantises the token "
                         "inputs); drop it from --quant / export.quants")
    skip = NOT_FOR_TEXT + (TEXT_ON_REQUEST if quants is None else ())
    return [(f, q) for f, q in plan if q not in skip]


def check_fits(ckpt: Checkpoint, data: Dataset) -> None:
    """The checkpoint's recorded input shape and labels must be those of its data (an edited model.json
    would ship wrong metadata on a graph of another shape)."""
    data.check_task(ckpt.path / "model.json", "the checkpoint", ckpt.input_shape, len(ckpt.labels),
                    "restore model.json or re-run the training that wrote it")


def required_agreement(min_top1: dict[str, float], quant: str) -> float:
    """The top-1 agreement a file of `quant` must reach (its own entry, else "default", else 0.99)."""
    return min_top1.get(quant, min_top1.get("default", 0.99))


class _ParityMiss(Exception):
    def __init__(self, message: str, parity, required: float):
        super().__init__(message)
        self.parity, self.required = parity, required


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
        threshold = 1.0 if quant == "fp32" else required_agreement(min_top1, quant)
        why = parity_failure(parity, threshold, fp32_max_abs_diff if quant == "fp32" else None)
        if why:
            raise _ParityMiss(f"{why}; {runner.name} vs PyTorch", parity, threshold)
        _remove(dest)
        os.replace(tmp_dest, dest)  # the file lands only after its parity check passed
    finally:
        _remove(tmp_dest)
    return Artifact(format=fmt, quant=quant, path=dest, size_bytes=dir_size(dest),
                    sha256=sha256_tree(dest), params=params, parity=parity,
                    convert_s=round(time.perf_counter() - t0, 3), model=meta.name)


def _listed(out_dir: Path, model: str) -> set[str]:
    """The file names an artifacts.json already in `out_dir` lists for `model` (none when there is none, it
    is another model's, or it is not readable: then nothing here is known to be this model's)."""
    try:
        manifest = json.loads((out_dir / "artifacts.json").read_text())
        if manifest.get("model") != model:
            return set()
        names = {str(a["path"]) for a in manifest["artifacts"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()
    suffixes = tuple(EXPORTERS.get(fmt).suffix for fmt in EXPORTERS.names())
    return {n for n in names if Path(n).name == n and n.endswith(suffixes)}


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists():
        p.unlink()


def _write_manifest(out_dir: Path, ckpt: Checkpoint, artifacts: list[Artifact], failures: list[Failure],
                    coreml_target: str) -> None:
    rows = [{**a.to_dict(), "path": a.path.name} for a in artifacts]  # paths relative to artifacts.json
    prov = ckpt.provenance
    teacher = resolve_in(ckpt.path, prov["teacher"]) if prov.get("teacher") else None
    write_json(out_dir / "artifacts.json", {
        "checkpoint": relative_to(ckpt.path, out_dir), "role": ckpt.role, "model": ckpt.name,
        "checkpoint_sha256": ckpt.weights_sha256,  # which weights the files were made from
        "params": ckpt.params, "labels": list(ckpt.labels), "mean": ckpt.mean, "std": ckpt.std,
        "input_shape": list(ckpt.input_shape),
        "teacher_accuracy": prov.get("teacher_accuracy"),
        "teacher": relative_to(teacher, out_dir) if teacher else None,
        "checkpoint_accuracy": ckpt.accuracy, "data": prov.get("data"),
        "coreml_target": coreml_target, "artifacts": rows,
        "failures": [f.__dict__ for f in failures]})
