"""The bench stage: every artifact on the runtimes here and on every simulated target that takes its
format. A row that fails says why; the others are still written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import torch

from edgekd.artifacts import load_artifacts, stale_export, verify_artifact
from edgekd.bench.graph import read_graph
from edgekd.bench.measure import measure, zip_size
from edgekd.bench.simulator import error_band, simulate
from edgekd.bench.targets import Target, host_profile_notes
from edgekd.checkpoint import load_checkpoint, read_checkpoint, training_data
from edgekd.data import Dataset
from edgekd.errors import InputError
from edgekd.fileio import relative_to, resolve_in, write_json
from edgekd.models import WithProbabilities
from edgekd.types import Measurement


def teacher_reference(manifest: dict, base: Path, data: Dataset) -> tuple[np.ndarray, float | None]:
    """The teacher's top-1 on the test split and its accuracy (for agreement and retention)."""
    teacher_path = manifest.get("teacher") or (
        manifest["checkpoint"] if manifest.get("role") == "teacher" else None)
    teacher_path = resolve_in(base, teacher_path) if teacher_path else None
    if teacher_path and teacher_path.exists():
        _, teacher = load_checkpoint(teacher_path)
        net, x = WithProbabilities(teacher).eval(), data.x_test
        with torch.no_grad():  # a batch at a time: a BERT teacher's attention over the whole split is GBs
            top1 = np.concatenate([net(torch.from_numpy(x[i:i + 256])).numpy().argmax(1)
                                   for i in range(0, len(x), 256)] or [np.zeros(0, np.int64)])
        return top1, float((top1 == data.y_test).mean())
    return np.full(len(data.y_test), -1), manifest.get("teacher_accuracy")


def device_rows(common: dict, path: Path, delegates: list[str], threads: int) -> list[Measurement]:
    """Rows from an attached Android device (TFLite's benchmark_model over adb), one per delegate; a
    delegate that failed to apply or a run that failed is a failed row quoting the tool's reason."""
    from edgekd.runtimes.android import run_on_device

    rows = []
    for delegate in delegates:
        where = {**common, "kind": "measured", "runner": f"android:{delegate}"}
        try:
            r = run_on_device(path, delegate, threads)
        except (subprocess.SubprocessError, ValueError) as e:
            rows.append(Measurement(**where, failed=str(e)))
            continue
        if r.failed:  # the delegate asked for did not run (or the run failed): say why, time nothing
            rows.append(Measurement(**where, failed=r.failed))
            continue
        residency = None if r.residency is None else {"ops": round(r.residency, 4), "time": None}
        rows.append(Measurement(**where, threads=threads, latency_ms_p50=r.latency_ms_p50 or r.latency_ms_avg,
                                latency_ms_p90=r.latency_ms_p90, latency_ms_avg=r.latency_ms_avg,
                                load_ms=r.init_ms, peak_memory_bytes=r.peak_memory_bytes,
                                delegated_nodes=r.delegated_nodes, accelerator=delegate in ("gpu", "nnapi"),
                                accelerator_residency=residency, timed_runs=r.runs))
    return rows


def simulated_row(common: dict, target: Target, graph, measured: Measurement) -> Measurement:
    sim = simulate(graph, target)
    has_accelerator = any(u.accelerator for u in target.units)
    band, no_band = error_band(sim, target)
    return Measurement(
        **common, kind="simulated", target=target.name, runner=f"sim:{target.name}",
        # one estimate, no distribution: no p90 (its spread is latency_band_ms)
        latency_ms_p50=sim.latency_ms, latency_ms_p90=None, accuracy=measured.accuracy,
        retention=measured.retention, teacher_agreement=measured.teacher_agreement,
        accelerator=has_accelerator,
        accelerator_residency={"ops": round(sim.residency_ops, 4), "time": round(sim.residency_time, 4)}
        if has_accelerator else None,
        fallback_ops=tuple(sim.fallbacks),
        latency_band_ms=(round(sim.latency_ms * band[0], 6), round(sim.latency_ms * band[1], 6))
        if band else None,
        no_band=no_band,
        per_op=tuple({"op": o.name, "unit": o.unit, "dtype": o.dtype, "time_us": round(o.time_us, 3)}
                     for o in sim.ops))


def bench_artifacts(manifest_path: Path, out_dir: Path, *, targets: list[Target], data: Dataset,
                    threads: int = 1, include_source: bool = True, android: list[str] | None = None) -> dict:
    """Measured and simulated rows for every artifact; `android` lists delegates to run on an attached
    device (raises NoDevice, before anything is written, when none is attached)."""
    if android:
        from edgekd.runtimes.android import NoDevice, attached_devices

        if not attached_devices():
            raise NoDevice("no Android device attached (adb devices lists none, or adb is not installed); "
                           "drop --android or attach a device with USB debugging on")
    manifest_path = Path(manifest_path)
    base = manifest_path.parent
    manifest = load_artifacts(manifest_path)
    check_data_fits(manifest, manifest_path, data)
    teacher_top1, teacher_acc = teacher_reference(manifest, base, data)
    torch.set_num_threads(threads)
    rows: list[Measurement] = []
    checkpoint = resolve_in(base, manifest["checkpoint"])
    stale = stale_export(manifest_path, manifest)
    if stale:
        raise InputError(f"{stale}; export again (or `edgekd run`) before bench")
    sources = [{"format": "torch", "quant": "fp32", "path": str(checkpoint), "size_bytes": None,
                "params": manifest["params"]}] if include_source and checkpoint.exists() else []
    for a in sources + manifest["artifacts"]:
        fmt, path = a["format"], (Path(a["path"]) if a["format"] == "torch" else base / a["path"])
        common = {"model": manifest["model"], "artifact": path.name, "format": fmt, "quant": a["quant"],
                  "params": a["params"]}
        problem = None if fmt == "torch" else verify_artifact(base, a)
        if problem:
            rows.append(Measurement(**common, kind="measured", failed=problem))
            continue
        size = a["size_bytes"] if fmt != "torch" else _weights_size(path)
        common.update(size_bytes=size,
                      zip_size_bytes=zip_size(path if fmt != "torch" else path / "model.safetensors"))
        try:
            measured = Measurement(**common, **measure(fmt, path, data.x_test, data.y_test, teacher_top1,
                                                       teacher_acc, threads))
        except Exception as e:  # noqa: BLE001 - one broken file must not stop the others
            rows.append(Measurement(**common, kind="measured", failed=f"{type(e).__name__}: {e}"))
            continue
        rows.append(measured)
        if android and fmt == "tflite":
            rows += device_rows(common, path, android, threads)
        sim_targets = [t for t in targets if fmt in t.formats]
        graph, graph_error = None, None
        if sim_targets:
            try:
                graph = read_graph(fmt, path)  # once per file, whatever the number of targets
            except Exception as e:  # noqa: BLE001
                graph_error = e
        for t in sim_targets:
            try:
                if graph_error is not None:
                    raise graph_error
                rows.append(simulated_row(common, t, graph, measured))
            except Exception as e:  # noqa: BLE001
                rows.append(Measurement(**common, kind="simulated", target=t.name, runner=f"sim:{t.name}",
                                        failed=f"{type(e).__name__}: {e}"))
    out_dir = Path(out_dir)
    result = {"artifacts": relative_to(manifest_path, out_dir), "model": manifest["model"],
              "teacher_accuracy": teacher_acc, "targets": [t.name for t in targets],
              "host_profile": "; ".join(host_profile_notes(targets)) or None,
              # the files measured, as artifacts.json listed them: the gate refuses rows of replaced files
              "files": {Path(a["path"]).name: a["sha256"] for a in manifest["artifacts"]},
              "rows": [r.to_dict() for r in rows]}
    write_json(out_dir / "bench.json", result)
    return result


def check_data_fits(manifest: dict, manifest_path: Path, data: Dataset) -> None:
    """The data must be the task the files were exported for: same input shape and label count."""
    fix = "bench on the data the model was trained for (--data)"
    data.check_task(manifest_path, "the exported model", manifest.get("input_shape"),
                    len(manifest.get("labels") or []), fix)
    labels = list(manifest.get("labels") or [])
    if labels and labels != list(data.labels):
        first = next(i for i, (a, b) in enumerate(zip(labels, data.labels)) if a != b)
        raise InputError(f"{manifest_path}: the exported model's class {first} is {labels[first]!r} (field "
                         f"'labels') but dataset {data.name!r} calls it {data.labels[first]!r}; {fix}")


def _weights_size(ckpt_dir: Path) -> int:
    return (Path(ckpt_dir) / "model.safetensors").stat().st_size


def dataset_for_manifest(manifest_path: Path, name: str | None = None) -> Dataset:
    from edgekd.data import load_dataset, load_recorded

    manifest = load_artifacts(manifest_path)
    ckpt = resolve_in(Path(manifest_path).parent, manifest["checkpoint"])
    if name is not None:
        src = manifest.get("data") or {}
        if src.get("name") == name:  # the data it was trained on: its path, split seed and options
            return load_recorded(src)
        if manifest.get("mean") is None or manifest.get("std") is None:
            raise InputError(f"{manifest_path}: records no input normalisation (fields 'mean', 'std'), so "
                             f"dataset {name!r} cannot be scaled as the model expects; export it again")
        # other data of the same task, scaled as the model was trained, not by its own statistics
        return load_dataset(name, normalization=(manifest["mean"], manifest["std"]))
    if ckpt.exists():
        return training_data(read_checkpoint(ckpt))
    src = manifest.get("data") or {}
    if not src:
        raise InputError(f"{manifest_path}: its checkpoint {ckpt} is gone and no dataset is recorded; "
                         "pass --data")
    return load_recorded(src)
