"""Every bad input exits 2 with one message naming the file and the field, and leaves nothing behind."""

import subprocess
import sys

import numpy as np
import pytest

from bad_inputs import CASES, _recipe, _signals, tree
from helpers import mounted_tmpfs, run_main


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.heavy] if c.heavy else [])
                                  for c in CASES])
def test_bad_input_exits_2_naming_file_and_field_and_leaves_nothing(case, tmp_path, capsys):
    argv, file, field = case.make(tmp_path)
    before = tree(tmp_path)
    code, err = run_main(argv, capsys)
    assert code == 2, err
    assert err.startswith("edgekd: error:") and "Traceback" not in err, err
    assert file in err and field in err, err
    assert tree(tmp_path) == before, "the failed command left files behind"


def test_a_second_run_on_a_locked_folder_is_refused_with_the_holders_pid(tmp_path, capsys):
    from edgekd.runfolder import locked

    x, y = _signals()
    np.savez(tmp_path / "data.npz", x=x, y=y)
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from edgekd.runfolder import locked\n"
                               f"with locked({str(out)!r}):\n print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        recipe = _recipe(tmp_path, tmp_path / "data.npz")
        code, err = run_main(["distill", str(recipe), "--out", str(out)], capsys)
        assert code == 2 and f"pid {holder.pid}" in err and str(out) in err, err
    finally:
        holder.kill()
        holder.wait()
    with locked(out):  # the lock dies with its holder: a killed run never blocks the next one
        pass


def test_temporaries_a_killed_run_left_are_swept_and_resume_states_kept(tmp_path):
    from edgekd.runfolder import locked

    out = tmp_path / "out"
    (out / "export" / "s" / ".s-fp16.1a2b3c4d.tmp.mlpackage").mkdir(parents=True)
    (out / "export" / "s" / ".artifacts.json.x1y2z3w4.tmp").write_text("{")
    (out / ".git").mkdir()
    (out / ".git" / ".index.abcdefgh.tmp").write_text("not edgekd's")
    (out / ".teacher.0123456789ab.state.pt").write_bytes(b"resume")
    (out / "metrics.json").write_text("{}")
    with locked(out):
        left = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                      if p.is_file() and ".edgekd" not in p.parts)
    assert left == [".git/.index.abcdefgh.tmp", ".teacher.0123456789ab.state.pt", "metrics.json"]


def test_a_read_only_out_folder_exits_2(tmp_path, capsys):
    with mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        x, y = _signals()
        np.savez(tmp_path / "data.npz", x=x, y=y)
        code, err = run_main(["distill", str(_recipe(tmp_path, tmp_path / "data.npz")), "--out",
                              str(ro / "out")], capsys)
        assert code == 2 and "read-only" in err.lower() and "--out" in err, err


def test_only_measured_parity_misses_count_as_a_finished_export():
    """A converter crash (or anything else unmeasured) leaves the export stage not done: the next run
    retries it. Measured parity misses are final: the same inputs would miss again."""
    from edgekd.export.stage import ExportMisses, Failure

    parity = Failure("onnx", "static-int8", "agreement 0.98 < 0.99", top1_agreement=0.98, required=0.99)
    crash = Failure("coreml", "w8a8", "RuntimeError: converter crashed")
    assert ExportMisses([parity], kept=3, student="s").final
    assert not ExportMisses([parity, crash], kept=2, student="s").final
    table = str(ExportMisses([parity, crash], kept=2, student="s"))
    assert "2 file(s) of s were not kept (2 kept)" in table
    assert "onnx/static-int8  0.9800     0.99" in table and "coreml/w8a8" in table
