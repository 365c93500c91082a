"""The `edgekd` command: parse, load config, call one library function, print the result.

Heavy modules (torch, coremltools, litert) are imported inside the commands so `edgekd --help` is instant.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekd.fileio import read_json

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distill compact students from a teacher, export them for phones, measure, gate.")

RecipeArg = Annotated[Optional[Path],
                      typer.Argument(help="Recipe YAML (default: the built-in MNIST-1D recipe)")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory")]
NprocOpt = Annotated[int, typer.Option(
    "--nproc", help="Distill in N processes (DDP: gloo on CPU, NCCL on GPUs), at most one per CPU or GPU")]
DeviceOpt = Annotated[str, typer.Option(
    help="Train on cpu, cuda or auto (bf16 autocast on GPUs that have it)")]


@contextmanager
def _output_dir(out: Path):
    """Lock `out` for this command (a second edgekd on the same folder is refused), and remove it again
    if this command created it and then failed: no half-written folders. Kept: after an interrupt
    (Ctrl-C, or a killed rank: its resume states let the next run continue) and after a failed check
    (exit 1: the outputs are complete, e.g. the files that passed parity, and say what failed). Under
    torchrun, rank 0 alone holds the folder (the other ranks write nothing there)."""
    from edgekd.distill.distributed import launched_by_torchrun
    from edgekd.errors import CheckFailed, Stopped
    from edgekd.runfolder import check_writable, locked

    if launched_by_torchrun() and os.environ.get("RANK", "0") != "0":
        yield out
        return
    created = check_writable(out)
    try:
        with locked(out):
            yield out
    except (KeyboardInterrupt, CheckFailed, Stopped):
        raise
    except BaseException:
        if created and out.exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2))


@app.command()
def teacher(recipe: RecipeArg = None, out: OutOpt = Path("runs/teacher")) -> None:
    """Train the recipe's teacher (or load `teacher.checkpoint`) and report its accuracy."""
    from edgekd import pipeline
    from edgekd.config import load_recipe

    r, _ = load_recipe(recipe)
    data = pipeline.load_data(r)
    pipeline.validate(r, data)
    with _output_dir(out):
        ckpt, _ = pipeline.teacher_stage(r, data, out)
    _echo_json({"teacher": str(ckpt.path), "teacher_accuracy": ckpt.accuracy, "teacher_params": ckpt.params})


@app.command()
def distill(recipe: RecipeArg = None, out: OutOpt = Path("runs/distill"), nproc: NprocOpt = 1,
            device: DeviceOpt = "cpu") -> None:
    """Check (or train) the teacher, then distill every student of the recipe. Writes OUT/metrics.json.
    Also runs as `torchrun --nproc-per-node N -m edgekd distill ...` (any torchrun rendezvous)."""
    from edgekd import pipeline
    from edgekd.config import load_recipe

    r, _ = load_recipe(recipe)
    data = pipeline.load_data(r)
    specs = pipeline.validate(r, data)
    with _output_dir(out):
        metrics = pipeline.distill(r, out, data, specs, nproc=nproc, device=device)
    if metrics is not None:  # rank 0 (or a single process) reports
        _echo_json({k: v for k, v in metrics.items() if k != "students"})


@app.command()
def compress(recipe: RecipeArg = None, out: OutOpt = Path("runs/distill")) -> None:
    """Fine-tune each distilled student in OUT (from `edgekd distill`) on the grids of the recipe's
    `compress:` modes with the KD loss. Writes OUT/students/STUDENT.MODE-kd and OUT/compress.json."""
    from edgekd import pipeline
    from edgekd.config import load_recipe
    from edgekd.errors import InputError
    from edgekd.fileio import read_json

    r, path = load_recipe(recipe)
    if not r.compress.modes:
        raise InputError(f"{path}: the recipe's `compress:` names no mode; "
                         "add one, e.g. `compress: {coreml: [pal4]}`")
    metrics = read_json(out / "metrics.json", "distill metrics", f"run `edgekd distill --out {out}` first")
    data = pipeline.load_data(r)
    with _output_dir(out):
        results = pipeline.compress_stage(r, out, data, metrics)
    for c in results:
        typer.echo(f"{c.name:28s} accuracy {c.accuracy:.4f} (student {c.student_accuracy:.4f})  "
                   f"{c.average_bits:g} bits/weight  {c.train_s:.1f}s")


def _csv(value: Optional[str]) -> Optional[list[str]]:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(
        help="A checkpoint directory, or a model file (YAML: model + data) for a network of yours")],
    out: OutOpt = Path("runs/export"),
    formats: Annotated[Optional[str], typer.Option(help="Comma list of coreml, tflite, onnx")] = None,
    quant: Annotated[Optional[str], typer.Option(
        help="Comma list of modes (default: every mode of each format)")] = None,
    coreml_target: Annotated[Optional[str], typer.Option(
        help="Core ML minimum deployment target, e.g. iOS17")] = None,
    parity_samples: Annotated[Optional[int], typer.Option(
        help="Held-out inputs each file is checked on")] = None,
    recipe: Annotated[Optional[Path], typer.Option(
        help="Take export settings from this recipe's `export:`")] = None,
) -> None:
    """Convert a checkpoint to Core ML, TFLite and ONNX files, each checked against PyTorch. Writes OUT/artifacts.json."""  # noqa: E501
    from edgekd.config import ExportConfig, load_model_file, load_recipe, validate_config
    from edgekd.export import export_checkpoint

    cfg = load_recipe(recipe)[0].export if recipe else ExportConfig()
    overrides = {"formats": _csv(formats), "quants": _csv(quant), "coreml_target": coreml_target,
                 "parity_samples": parity_samples}
    cfg = validate_config(ExportConfig,
                          {**cfg.model_dump(), **{k: v for k, v in overrides.items() if v is not None}},
                          "export options")
    model_file = load_model_file(checkpoint) if checkpoint.suffix in (".yaml", ".yml") else None
    with _output_dir(out):
        if model_file is not None:  # a network of yours: imported as a checkpoint beside its files
            from edgekd.pipeline import import_model

            checkpoint, data = import_model(model_file, out / "model")
        else:
            data = None  # export reloads the data recorded in the checkpoint
        artifacts = export_checkpoint(checkpoint, out, **cfg.model_dump(), data=data)
    for a in artifacts:
        p = a.parity
        typer.echo(f"{a.format:7s} {a.quant:13s} {a.size_bytes:>10,d} B  top1 {p.top1_agreement:.4f}  "
                   f"max|d| {p.max_abs_diff:.2e}  {a.path.name}")


@app.command()
def bench(
    artifacts: Annotated[Path, typer.Argument(
        help="artifacts.json written by `edgekd export` (or its folder)")],
    out: OutOpt = Path("runs/bench"),
    targets: Annotated[Optional[str], typer.Option(
        help="Comma list of simulated targets (default: all in targets/)")] = None,
    data: Annotated[Optional[str], typer.Option(
        help="Dataset to measure accuracy on (default: the training data)")] = None,
    threads: Annotated[int, typer.Option(help="Runtime threads for measured rows")] = 1,
    android: Annotated[Optional[str], typer.Option(
        help="Also time .tflite files on an attached Android device: "
             "comma list of cpu, xnnpack, gpu, nnapi")] = None,
) -> None:
    """Measure every exported file here and simulate it on mobile targets. Writes OUT/bench.json."""
    from edgekd.bench.stage import bench_artifacts, dataset_for_manifest
    from edgekd.bench.targets import get_targets
    from edgekd.report import text_table
    from edgekd.types import Measurement

    manifest = artifacts / "artifacts.json" if artifacts.is_dir() else artifacts
    dataset = dataset_for_manifest(manifest, data)
    chosen = get_targets(_csv(targets))
    with _output_dir(out):
        result = bench_artifacts(manifest, out, targets=chosen, data=dataset, threads=threads,
                                 android=_csv(android))
    if result.get("host_profile"):
        typer.echo(result["host_profile"], err=True)
    typer.echo(text_table([Measurement.from_dict(r) for r in result["rows"]]))


@app.command()
def compare(bench_dir: Annotated[Path, typer.Argument(help="Directory holding bench.json")]) -> None:
    """Write report.md and a self-contained report.html (tables, Pareto plots); print the table."""
    from edgekd.gate.verdict import load_bench_rows
    from edgekd.report import text_table, write_report

    students = sorted(p.parent for p in bench_dir.glob("bench/*/bench.json")) if bench_dir.is_dir() else []
    if students and not (bench_dir / "bench.json").exists():
        from edgekd.errors import InputError

        raise InputError(f"{bench_dir}: a run folder; compare reads one student's bench folder, e.g. "
                         f"{students[0]} (`edgekd run` wrote the run's report in {bench_dir / 'report'})")
    from edgekd.artifacts import dropped_files
    from edgekd.fileio import resolve_in

    rows = [b.row for b in load_bench_rows([bench_dir], current=False)]  # a report of what bench measured
    path = bench_dir / "bench.json" if bench_dir.is_dir() else bench_dir
    bench = read_json(path, "bench.json")
    md, page = write_report(rows, path.parent, title=bench["model"],
                            teacher_accuracy=bench.get("teacher_accuracy"),
                            dropped=dropped_files(resolve_in(path.parent, bench["artifacts"]),
                                                  bench["model"]))
    typer.echo(text_table(rows))
    typer.echo(f"\nwrote {md} and {page}")


@app.command()
def run(
    recipe: RecipeArg = None,
    out: OutOpt = Path("runs/demo"),
    policy: Annotated[Optional[Path], typer.Option(
        help="Gate policy YAML (default: the recipe's, else built-in)")] = None,
    baseline: Annotated[Optional[Path], typer.Option(help="Baseline bundle for max_regression rules")] = None,
    nproc: NprocOpt = 1,
    device: DeviceOpt = "cpu",
) -> None:
    """Teacher, distill, export, bench, report, gate, bundles: one command. Exit 1 when the gate fails."""
    from edgekd import pipeline
    from edgekd.config import load_recipe
    from edgekd.distill.distributed import launched_by_torchrun
    from edgekd.gate.verdict import explain

    if launched_by_torchrun():
        from edgekd.errors import InputError

        raise InputError("`edgekd run` starts its own ranks: use `edgekd run --nproc N`, or distill under "
                         "torchrun (`torchrun ... -m edgekd distill RECIPE --out DIR`) and then "
                         "`edgekd run RECIPE --out DIR`, which reuses the distilled students")
    r, path = load_recipe(recipe)
    with _output_dir(out):
        verdict, _ = pipeline.run(r, path, out, policy_path=policy, baseline=baseline,
                                  progress=lambda m: typer.echo(m, err=True), nproc=nproc, device=device)
    typer.echo(explain(verdict))
    typer.echo(f"report: {out / 'report' / 'report.html'}  gate: {out / 'gate' / 'summary.md'}")
    if not verdict.passed:
        raise typer.Exit(1)


@app.command()
def gate(
    bench_or_run_dir: Annotated[Path, typer.Argument(
        help="A bench.json, its folder, or an `edgekd run` folder "
             "(then its recipe's students and platforms)")],
    policy: Annotated[Optional[Path], typer.Option(
        help="Policy YAML (default: on a run folder the policy its run used, else the built-in "
             "min_retention 0.97)")] = None,
    baseline: Annotated[Optional[Path], typer.Option(help="Baseline bundle (directory or zip)")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Where gate.json, junit.xml, summary.md go")] = None,
) -> None:
    """Pass or fail a release against a policy: prints every failed rule, exit 1 on failure, 0 on pass."""
    from edgekd.artifacts import load_artifacts
    from edgekd.config import BundleConfig, load_policy
    from edgekd.gate.bundle import load_baseline
    from edgekd.gate.reports import write_gate_outputs
    from edgekd.gate.verdict import evaluate, explain, load_bench_rows
    from edgekd.runfolder import read_record

    record = read_record(bench_or_run_dir) if bench_or_run_dir.is_dir() else None
    if policy is None and record is not None and record.policy is not None:  # the policy the run's gate read
        policy = Path(record.policy)
        typer.echo(f"policy: {policy} (the run's; --policy to gate against another)")
    pol = load_policy(policy)
    if record is not None:  # a run folder: this run's students and the recipe's platforms, nothing else
        rows, platforms = load_bench_rows(record.bench_files(bench_or_run_dir)), record.platforms
    else:
        rows, platforms = load_bench_rows([bench_or_run_dir]), BundleConfig().platforms
    base = None
    if baseline is not None and rows:
        art = load_artifacts(rows[0].files_dir)
        base = load_baseline(baseline, art["labels"], art["input_shape"])
    verdict = evaluate(rows, pol, platforms, base)
    dest = out or ((bench_or_run_dir if bench_or_run_dir.is_dir() else bench_or_run_dir.parent) / "gate")
    write_gate_outputs(verdict, dest)
    typer.echo(explain(verdict))
    typer.echo(f"wrote {dest / 'junit.xml'} and {dest / 'summary.md'}")
    if not verdict.passed:
        raise typer.Exit(1)


@app.command()
def verify(bundle: Annotated[Path, typer.Argument(help="Bundle directory or .zip")]) -> None:
    """Recheck a bundle's hashes and re-run its validation inputs. Exit 1 when anything differs."""
    from edgekd.gate.verify import verify_bundle

    _echo_json(verify_bundle(bundle))


BudgetOpt = Annotated[Optional[list[str]], typer.Option(
    "--budget", help="TARGET=MS: a latency budget on a target profile, or host (TFLite timed here); "
                     "repeat it")]
StorageOpt = Annotated[Optional[str], typer.Option(
    help="Optuna storage URL shared by workers, e.g. postgresql://user@host:5432/db "
         "(default: SQLite in --out)")]


@app.command()
def search(
    recipe: RecipeArg = None,
    out: OutOpt = Path("runs/search"),
    budget: BudgetOpt = None,
    max_size_bytes: Annotated[Optional[int], typer.Option(help="Every rung's file at most this size")] = None,
    trials: Annotated[int, typer.Option(help="Finished trials the study holds at the end (all budgets)")] \
            = 40,
    workers: Annotated[int, typer.Option(help="Local worker processes on the same storage")] = 1,
    storage: StorageOpt = None,
    heartbeat_s: Annotated[Optional[int], typer.Option(
        help="Seconds between a running trial's heartbeats; a trial silent for twice that is failed "
             "(default 30)")] = None,
    report: Annotated[Optional[Path], typer.Option(
        help="Redraw the ladder of the search in this folder from its study, without running trials")] = None,
) -> None:
    """Search students and KD settings under device budgets (Optuna; resumes a study it finds), then write
    the ladder: the best student per budget, the Pareto fronts and each rung's recipe."""
    from edgekd.config import load_recipe
    from edgekd.search import search as run_search
    from edgekd.search import write_ladder

    if report is not None:
        if recipe is not None or budget:
            from edgekd.errors import InputError

            raise InputError("--report redraws the ladder of a search already run and takes no RECIPE or "
                             "--budget; drop them, or use `edgekd ladder DIR --budget ...` for other budgets")
        from edgekd.runfolder import locked

        url = _stored_url(report, storage)  # refused before anything is written when it is no search
        with locked(report):  # a search still writing its ladder there holds it
            _echo_ladder(write_ladder(report, url))
        return
    from edgekd.bench.targets import all_targets
    from edgekd.search.budgets import parse_budgets

    r, _ = load_recipe(recipe)
    budgets = parse_budgets(budget or [], all_targets())
    with _output_dir(out):
        summary = run_search(r, out, budgets, trials=trials, workers=workers, storage_url=storage,
                             max_size_bytes=max_size_bytes,
                             **({"heartbeat_s": heartbeat_s} if heartbeat_s is not None else {}),
                             progress=lambda m: typer.echo(m, err=True))
    _echo_ladder(summary)


@app.command()
def ladder(
    search_dir: Annotated[Path, typer.Argument(help="The --out folder of an `edgekd search`")],
    budget: BudgetOpt = None,
    storage: StorageOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where the ladder goes "
                                                "(default: SEARCH_DIR/ladder)")] = None,
) -> None:
    """Budgets in, the best student per budget out, from a search's trials (default: its own budgets):
    a table, the Pareto front per target and each rung's recipe for `edgekd run`. Trains nothing."""
    from edgekd.bench.targets import all_targets
    from edgekd.runfolder import locked
    from edgekd.search import write_ladder
    from edgekd.search.budgets import parse_budgets

    budgets = parse_budgets(budget, all_targets()) if budget else None
    url = _stored_url(search_dir, storage)  # refused before anything is written when it is no search
    # into the search folder (the default): held as a search holds it; elsewhere: that folder, as any --out
    with locked(search_dir) if out is None else _output_dir(out):
        _echo_ladder(write_ladder(search_dir, url, budgets=budgets, dest=out))


def _stored_url(search_dir: Path, storage: Optional[str]) -> str:
    from edgekd.errors import InputError
    from edgekd.search.stage import read_search

    record = read_search(search_dir)
    url = storage or record.get("storage") or f"sqlite:///{(Path(search_dir) / 'study.db').resolve()}"
    if "***" in url:
        raise InputError(f"{search_dir}/search.json keeps the storage URL without its password; "
                         "give it with --storage")
    return url


def _echo_ladder(summary: dict) -> None:
    typer.echo((Path(summary["dir"]) / "ladder.md").read_text())
    if summary["monotone_problems"]:
        raise typer.Exit(1)


@app.command()
def simulate(
    network_or_file: Annotated[str, typer.Argument(
        metavar="NETWORK|FILE", help="A built-in standard network (mobilenet_v2, resnet18, efficientnet_b0, "
                                     "vit_b_16, distilbert, ...) or an exported .tflite / .mlpackage")],
    target: Annotated[str, typer.Option("--target", "-t", help="Target profile name (targets/*.yaml)")],
    precision: Annotated[Optional[str], typer.Option(
        help="fp32 | fp16 | int8 | w8a16 (networks, default fp16; a file has its own)")] = None,
    input_shape: Annotated[Optional[str], typer.Option(help="e.g. 1,3,224,224 (networks)")] = None,
    runtime: Annotated[Optional[str], typer.Option(
        help="The runtime on the phone (e.g. TFLite, QNN, 'ONNX Runtime'), where the profile says it uses "
             "fewer units than the others")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Predicted latency, accelerator residency and fallback ops of one network or file on one target."""
    from edgekd.bench.predict import describe, predict
    from edgekd.bench.targets import get_targets
    from edgekd.errors import InputError

    shape = None
    if input_shape is not None:
        try:
            shape = tuple(int(v) for v in input_shape.split(","))
        except ValueError:
            raise InputError(f"--input-shape {input_shape!r}: give integers separated by commas, "
                             "e.g. 1,3,224,224") from None
    (profile,) = get_targets([target])
    result = predict(network_or_file, profile, precision, shape, runtime)
    typer.echo(json.dumps(result, indent=2) if as_json else describe(result))


@app.command()
def calibrate(
    target: Annotated[str, typer.Argument(
        help="'host' (measure this machine: TFLite and ONNX Runtime), one host profile (host-cpu, "
             "host-cpu-onnxruntime), or a mobile target profile (fitted to published latencies)")],
    csv_file: Annotated[Optional[Path], typer.Option(
        "--csv", help="Mobile: published latencies (published_calibration.csv)")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Where the profile YAML goes (host default: your edgekd config folder)")] = None,
    threads: Annotated[int, typer.Option(help="Host: runtime threads to calibrate for")] = 1,
) -> None:
    """Fit a target profile: `host` on latencies measured here (written where bench finds it), or a mobile
    profile on published on-device latencies; prints the error on models the fit did not see."""
    from edgekd.bench.calibrate import calibrate as fit_profile
    from edgekd.bench.calibrate import write_profile
    from edgekd.bench.targets import get_targets, targets_dir, user_targets_dir
    from edgekd.errors import InputError
    from edgekd.hostprofile import HOST_PROFILES

    if target == "host" or target in HOST_PROFILES:
        from edgekd.hostprofile import calibrate_host

        names = list(HOST_PROFILES) if target == "host" else [target]
        if out is not None and len(names) > 1:
            raise InputError("calibrate host fits two profiles (host-cpu: TFLite, host-cpu-onnxruntime: ONNX "
                             "Runtime): name one (`calibrate host-cpu --out FILE`) to choose where it goes")
        for base in get_targets(names):
            data, _ = calibrate_host(base, threads, progress=lambda m: typer.echo(f"  {m}", err=True))
            dest = out or user_targets_dir() / f"{base.name}.yaml"
            write_profile(data, dest, targets_dir() / f"{base.name}.yaml")
            typer.echo(f"{base.name}: {data['calibration']['source']}; wrote {dest}")
        return
    if csv_file is None or out is None:
        raise InputError(f"calibrate {target}: a mobile profile needs --csv (the published latencies) and "
                         "--out (where the fitted profile goes)")
    (profile,) = get_targets([target])
    res = fit_profile(profile, csv_file, progress=lambda m: typer.echo(f"  {m}", err=True))
    write_profile(res.profile, out, targets_dir() / f"{target}.yaml")
    c = res.profile["calibration"]
    typer.echo(f"{target}: {c['rows']} rows, {c['networks']} networks; median error on networks left out "
               f"{c['median_abs_error']:.1%}, 80% band x{c['error_band'][0]}-x{c['error_band'][1]}; "
               f"{len(res.skipped)} rows left out; wrote {out}")


def main() -> None:
    from edgekd.console import quiet_backends
    from edgekd.errors import EdgekdError

    quiet_backends()
    try:
        app()
    except EdgekdError as e:
        typer.echo(f"edgekd: error: {e}", err=True)
        sys.exit(e.exit_code)
    except OSError as e:  # a full disk, a read-only folder, a name too long: the user's to fix, exit 2
        from edgekd.runfolder import io_fix

        where = e.filename or "a file"
        typer.echo(f"edgekd: error: {where}: {e.strerror or e}; {io_fix(e)}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
