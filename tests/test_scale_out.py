"""Distillation beyond one process: side-by-side jobs (same numbers as one process), DDP ranks over
torchrun's launcher (gloo, real processes), the teacher-output cache built in shards, a killed rank."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_recipe
from edgekd.distill.batches import ShuffledBatches
from edgekd.distill.cache import shard_bounds
from helpers import run_cli, run_main


def test_training_max_pool_is_bit_identical_to_nn_maxpool1d():
    """The zoo's faster training max-pool must leave training exactly as nn.MaxPool1d(2) does (odd length
    included), and export the standard op."""
    from edgekd.models.zoo import MaxPool1d2, build_model

    def train(fast: bool, length: int):
        torch.manual_seed(0)
        m = build_model("cnn1d", (1, length), 10, width=0.25)
        if not fast:
            m.body = torch.nn.Sequential(*[torch.nn.MaxPool1d(2) if isinstance(x, MaxPool1d2) else x
                                           for x in m.body])
        opt = torch.optim.AdamW(m.parameters(), 3e-3)
        g = torch.Generator().manual_seed(1)
        for _ in range(15):
            x, y = torch.randn(32, 1, length, generator=g), torch.randint(0, 10, (32,), generator=g)
            loss = torch.nn.functional.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return m

    for length in (40, 37):
        fast, ref = train(True, length), train(False, length)
        assert any(isinstance(x, MaxPool1d2) for x in fast.body)
        for (name, a), b in zip(fast.state_dict().items(), ref.state_dict().values()):
            assert torch.equal(a, b), name
    pool = MaxPool1d2().eval()
    x = torch.randn(2, 3, 9)
    assert torch.equal(pool(x), torch.nn.functional.max_pool1d(x, 2))


def test_shards_cut_on_batch_boundaries_and_cover_every_row():
    for rows, shards, bs in [(10_000, 2, 1024), (10_000, 3, 1024), (500, 4, 1024), (0, 2, 8),
                             (2049, 2, 1024)]:
        b = shard_bounds(rows, shards, bs)
        assert len(b) == shards and b[0][0] == 0 and b[-1][1] == rows
        assert all(stop == nxt for (_, stop), (nxt, _) in zip(b, b[1:]))
        assert all(start % bs == 0 for start, stop in b if stop > start)
        batches = [-(-(stop - start) // bs) for start, stop in b]
        assert max(batches) - min(batches) <= 1


def test_ranks_split_the_single_process_batches():
    """Every rank draws the same permutation and takes its stride of each global batch: together the ranks
    see exactly the batches one process sees; a tail batch smaller than the world is padded."""
    def epoch(n, bs, rank=0, world=1):
        return list(ShuffledBatches(n, bs, torch.Generator().manual_seed(7), rank, world))

    single = epoch(1001, 100)
    ranks = [epoch(1001, 100, r, 3) for r in range(3)]
    assert all(len(r) == len(single) for r in ranks)
    for i, batch in enumerate(single):
        together = sorted(sum((r[i] for r in ranks), []))
        if len(batch) >= 3:
            assert together == sorted(batch)
        else:  # the last batch, 1 row: every rank takes it
            assert set(together) == set(batch) and all(len(r[i]) == 1 for r in ranks)


def test_bad_nproc_and_device_exit_2(tmp_path, capsys, write_recipe):
    from edgekd.distill.jobs import cpu_count

    recipe = write_recipe(tiny_recipe())
    out = str(tmp_path / "o")
    code, err = run_main(["distill", str(recipe), "--out", out, "--nproc", str(cpu_count() + 1)], capsys)
    assert code == 2 and "--nproc" in err and f"{cpu_count()} CPUs" in err, err
    assert not (tmp_path / "o").exists()
    if not torch.cuda.is_available():
        code, err = run_main(["distill", str(recipe), "--out", out, "--device", "cuda"], capsys)
        assert code == 2 and "--device cuda" in err and "no CUDA" in err, err
    code, err = run_main(["distill", str(recipe), "--out", out, "--device", "tpu"], capsys)
    assert code == 2 and "--device 'tpu'" in err, err


def test_run_under_torchrun_is_refused_with_the_fix(tmp_path, capsys, write_recipe, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    code, err = run_main(["run", str(write_recipe(tiny_recipe())), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "edgekd run --nproc N" in err and "-m edgekd distill" in err, err


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.heavy
def test_side_by_side_jobs_give_the_same_students_as_one_process(tmp_path, write_recipe):
    """recipe.jobs 2 (students in two processes, cache in two shards) vs 1: identical weights."""
    students = [{"name": "a", "arch": "cnn1d", "width": 0.125}, {"name": "b", "arch": "cnn1d", "width": 0.2}]
    outs = {}
    for jobs in (1, 2):
        r = tiny_recipe(students=students, jobs=jobs, cache_dir=str(tmp_path / f"cache{jobs}"))
        r["distill"]["train"]["epochs"] = 2
        r["teacher"]["threads"] = 2  # the teacher on two threads, alone: the same in both runs
        out = tmp_path / f"o{jobs}"
        p = run_cli("distill", write_recipe(r, f"r{jobs}.yaml"), "--out", out)
        assert p.returncode == 0, p.stderr
        outs[jobs] = out
        assert json.loads((out / "metrics.json").read_text())["jobs"] == jobs
    for name in ("teacher", "students/a", "students/b"):
        one, two = _weights(outs[1] / name), _weights(outs[2] / name)
        assert all(torch.equal(one[k], two[k]) for k in one), name
    for f in ("logits.npy", "features.npy"):  # the cache written in two shards is the same bytes
        one = sorted((tmp_path / "cache1" / "logits").glob(f"*/{f}"))
        two = sorted((tmp_path / "cache2" / "logits").glob(f"*/{f}"))
        assert len(one) == len(two) == 2
        assert {p.read_bytes() for p in one} == {p.read_bytes() for p in two}


@pytest.mark.heavy
def test_two_ranks_distill_and_build_the_same_cache_as_one(tmp_path, write_recipe):
    """2 gloo ranks through `--nproc 2`: rank 0 writes the checkpoints and metrics; given the same teacher
    checkpoint, the cache the 2 ranks build is byte-identical to one process's."""
    base = tiny_recipe()
    base["distill"]["train"]["epochs"] = 3
    one = tmp_path / "one"
    p = run_cli("distill", write_recipe({**base, "cache_dir": str(tmp_path / "c1"), "jobs": 1}, "a.yaml"),
                "--out", one)
    assert p.returncode == 0, p.stderr
    given = {**base, "teacher": {"checkpoint": str(one / "teacher"), "min_accuracy": 0.5},
             "cache_dir": str(tmp_path / "c2")}
    two = tmp_path / "two"
    p = run_cli("distill", write_recipe(given, "b.yaml"), "--out", two, "--nproc", "2")
    assert p.returncode == 0, p.stderr
    m = json.loads((two / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["students"][0]["world_size"] == 2
    s = m["students"][0]
    assert s["train_samples_per_s"] > s["train_samples_per_s_per_rank"] > 0
    assert (two / "students" / "s" / "model.safetensors").is_file()
    assert not list(two.rglob("*.state.pt")), "finished training leaves no resume state"
    for f in ("logits.npy", "features.npy"):
        a = {q.read_bytes() for q in (tmp_path / "c1" / "logits").glob(f"*/{f}")}
        b = {q.read_bytes() for q in (tmp_path / "c2" / "logits").glob(f"*/{f}")}
        assert a == b and len(a) == 2
    # the ranks trained one student together: its accuracy is a real distillation, not noise
    assert s["accuracy"] > 0.5


@pytest.mark.heavy
def test_a_killed_rank_stops_the_others_and_the_run_resumes_at_another_world_size(tmp_path, write_recipe):
    r = tiny_recipe(jobs=1)
    r["teacher"]["train"]["epochs"] = 200
    recipe, out = write_recipe(r), tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    launcher = subprocess.Popen([sys.executable, "-m", "edgekd", "distill", str(recipe), "--out", str(out),
                                 "--nproc", "2"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 180
        while not list(out.glob(".teacher.*.state.pt")) and time.time() < deadline:
            time.sleep(0.5)
        assert list(out.glob(".teacher.*.state.pt")), "no epoch finished"
        ranks = [int(p) for p in subprocess.run(["pgrep", "-P", str(launcher.pid), "-f", "spawn_main"],
                                                capture_output=True, text=True).stdout.split()]
        assert len(ranks) >= 2
        os.kill(ranks[-1], signal.SIGKILL)
        _, err = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert launcher.returncode == 1 and "was stopped by SIGKILL" in err and "resumes" in err, err
    assert not any(_alive(pid) for pid in ranks), "a rank outlived the launcher"
    states = list(out.glob(".teacher.*.state.pt"))
    assert states, "the resume state was lost"
    done = torch.load(states[0], weights_only=True)["epoch"]
    assert 1 <= done < 200
    p = run_cli("distill", recipe, "--out", out, "--nproc", "1")  # resumes with one process
    assert p.returncode == 0, p.stderr
    assert not list(out.glob(".teacher.*.state.pt"))
    assert json.loads((out / "metrics.json").read_text())["teacher_accuracy"] > 0.5


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by a dead parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_resume_state_from_another_world_size_is_the_same_epoch_state(tmp_path):
    """The resume state holds nothing that depends on the world size: the global batch order comes from the
    saved generator, so any world size continues the same sequence of global batches."""
    g = torch.Generator().manual_seed(3)
    list(ShuffledBatches(100, 10, g))  # one epoch done
    saved = g.get_state()
    nxt = [list(ShuffledBatches(100, 10, torch.Generator().set_state(saved), r, 2)) for r in range(2)]
    single = list(ShuffledBatches(100, 10, torch.Generator().set_state(saved)))
    assert [sorted(a + b) for a, b in zip(*nxt)] == [sorted(b) for b in single]
    assert np.array_equal(np.sort(np.concatenate([np.concatenate(x) for x in nxt])), np.arange(100))



def test_teacher_threads_apply_to_a_single_cpu_process_only():
    from edgekd.config import Recipe
    from edgekd.distill.distributed import World
    from edgekd.pipeline import teacher_threads

    r = Recipe.model_validate(tiny_recipe(teacher={**tiny_recipe()["teacher"], "threads": 2}))
    assert teacher_threads(r) == 2
    assert teacher_threads(r, World(rank=1, size=2)) is None  # ranks already share the cores: `threads`
    assert teacher_threads(r, World(device="cuda")) is None
    assert teacher_threads(Recipe.model_validate(tiny_recipe(threads=3))) is None  # unset: `threads`


@pytest.mark.heavy
def test_a_teacher_trained_on_more_threads_is_another_teacher(tmp_path):
    """Without `teacher.threads` the key is what it was before the option existed (finished teachers are
    not trained again); a given count is in the key (1 and 2 threads are other teachers: their weights
    differ); torch's threads are restored after."""
    from edgekd.data import load_dataset
    from edgekd.distill.stage import prepare_teacher
    from edgekd.types import ModelSpec

    data, before = load_dataset("mnist1d"), torch.get_num_threads()
    keys = {}
    for threads in (None, 1, 2):
        ckpt, _ = prepare_teacher(data, tmp_path / str(threads), spec=ModelSpec.zoo("cnn1d", 0.125, 2),
                                  checkpoint=None, min_accuracy=0.0, seed=0, epochs=1, batch_size=256,
                                  lr=3e-3, weight_decay=0.0, threads=threads)
        keys[threads] = ckpt.provenance["key"]
        assert torch.get_num_threads() == before
    assert len(set(keys.values())) == 3


@pytest.mark.heavy
def test_job_processes_end_when_the_run_that_started_them_is_killed():
    """A run killed with SIGKILL leaves its pool's processes to init; they must not live on (they went on
    training and saving into the folder the next run held)."""
    script = ("import time\nfrom edgekd.distill.jobs import Jobs\njobs = Jobs(2)\njobs.start()\n"
              "jobs.submit(time.sleep, 0).result()\n"
              "print(' '.join(map(str, jobs._pool._processes)), flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")  # a zombie is dead

    assert all(alive(p) for p in pids)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)


@pytest.mark.heavy
def test_an_interrupted_run_stops_its_side_by_side_students_and_keeps_their_resume_states(tmp_path):
    """Ctrl-C (SIGINT to edgekd) while two students train in job processes: the run stops (exit 130) and
    does not wait for the students' thousands of epochs; their resume states stay and no job lives on."""
    import yaml

    r = tiny_recipe(jobs=2, students=[{"name": n, "arch": "cnn1d", "width": w, "train": {"epochs": 5000}}
                                      for n, w in (("a", 0.125), ("b", 0.25))])
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
    env = {**os.environ, "EDGEKD_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "edgekd.cli", "run", str(tmp_path / "r.yaml"), "--out",
                             str(tmp_path / "o")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True,
                            # SIGINT handled as after a terminal's Ctrl-C, even where this test ignores it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    students = tmp_path / "o" / "students"
    deadline = time.monotonic() + 300
    while len(list(students.glob(".*.state.pt"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert len(list(students.glob(".*.state.pt"))) == 2, proc.stderr.read() if proc.poll() is not None else ""
    jobs = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                           text=True).stdout.split()]
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=120)  # the old code waited for both students to finish: hours
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the run kept waiting for its job processes after SIGINT") from None
    assert code == 130
    assert len(list(students.glob(".*.state.pt"))) == 2  # kept for the next run to resume from
    time.sleep(1)
    assert not [p for p in jobs if Path(f"/proc/{p}").exists()
                and ") Z" not in Path(f"/proc/{p}/stat").read_text()]
