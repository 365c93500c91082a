"""`edgekd verify` treats a bundle as a closed world: on a real bundle (a small trained student exported
to ONNX fp32 and bundled by write_bundle), every hostile or damaged variant is refused by name."""

import json
import re
import shutil
import stat
import tempfile
import zipfile

import numpy as np
import pytest

from edgekd.errors import CheckFailed, InputError
from edgekd.fileio import sha256_file
from edgekd.gate import verify
from edgekd.gate.bundle import load_baseline
from edgekd.gate.verify import read_bundle_manifest, verify_bundle
from helpers import run_cli

MODEL = "student-fp32.onnx"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from edgekd.config import ExportConfig
    from edgekd.data import load_dataset
    from edgekd.export import export_checkpoint
    from edgekd.gate.bundle import write_bundle
    from edgekd.gate.verdict import Candidate
    from factories import make_checkpoint

    root = tmp_path_factory.mktemp("verify")
    ckpt = make_checkpoint(root / "s", width=0.2, epochs=4)
    [a] = export_checkpoint(ckpt, root / "export", **{**ExportConfig().model_dump(), "formats": ["onnx"],
                                                       "quants": ["fp32"]})
    data = load_dataset("mnist1d")
    c = Candidate(platform="android", model="student", artifact=a.path.name, format=a.format, quant=a.quant,
                  size_bytes=a.size_bytes, path=str(a.path), rows=[])
    return write_bundle(c, "android", root / "bundles", validation_x=data.x_test[:8],
                        labels=list(data.labels), mean=data.mean, std=data.std,
                        input_shape=list(data.input_shape), params=a.params,
                        provenance={"recipe_name": "t", "teacher_sha256": "x", "data_fingerprint": "f"})


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """Where tempfile puts temporary directories during the test; it must be empty again afterwards."""
    d = tmp_path / "scratch"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    yield d
    assert list(d.iterdir()) == []


@pytest.fixture
def no_extraction(monkeypatch):
    """Fails the test if any zip entry is extracted."""
    def refuse(*args):
        raise AssertionError("an entry was extracted before the zip was refused")

    monkeypatch.setattr(verify, "_extract_one", refuse)


def _copy(bundle, tmp_path, name="android"):
    dest = tmp_path / name / "android"
    shutil.copytree(bundle[0], dest)
    return dest


def _edit_manifest(d, edit):
    manifest = json.loads((d / "manifest.json").read_text())
    edit(manifest)
    (d / "manifest.json").write_text(json.dumps(manifest))


def _forge_listing(d, rel):
    """Rewrite manifest.json's hash and size for `rel`, as a forger who changed `rel` would."""
    p = d / rel

    def edit(m):
        m["files"][rel] = {"sha256": sha256_file(p), "size_bytes": p.stat().st_size}

    _edit_manifest(d, edit)


def _zip(src, out, extra=(), compression=zipfile.ZIP_DEFLATED):
    """Zip bundle folder `src` as write_bundle does, plus `extra` (ZipInfo, bytes) entries."""
    with zipfile.ZipFile(out, "w", compression) as z:
        for p in sorted(q for q in src.rglob("*") if q.is_file()):
            z.write(p, f"android/{p.relative_to(src).as_posix()}")
        for info, data in extra:
            z.writestr(info, data)
    return out


def test_a_good_bundle_verifies_as_directory_and_zip(bundle, scratch):
    d, z = bundle
    for path in (d, z):
        summary = verify_bundle(path)
        assert summary["ok"] and summary["model"] == MODEL and summary["files"] == 5
        assert summary["parity"]["top1_agreement"] == 1.0 and summary["parity"]["max_abs_diff"] <= 1e-3
    manifest, root, tmp = read_bundle_manifest(z)
    assert manifest["labels"] == [str(i) for i in range(10)] and (root / MODEL).is_file()
    tmp.cleanup()
    from edgekd.gate import bundle as writer  # the old import path keeps working

    assert writer.verify_bundle is verify_bundle and writer.read_bundle_manifest is read_bundle_manifest


def test_symlinks_are_refused_not_followed(bundle, tmp_path):
    """labels.txt replaced by a link to an outside file with the same bytes: the hashes would match if
    the link were followed. A linked folder is refused too."""
    bad = _copy(bundle, tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_bytes((bad / "labels.txt").read_bytes())
    (bad / "labels.txt").unlink()
    (bad / "labels.txt").symlink_to(outside)
    (bad / "more").symlink_to(tmp_path)
    with pytest.raises(InputError) as e:
        verify_bundle(bad)
    msg = str(e.value)
    assert msg.startswith(str(bad)) and f"labels.txt -> {outside} (symlink)" in msg
    assert f"more -> {tmp_path} (symlink)" in msg and "replace each with the file" in msg


@pytest.mark.parametrize("where, value, why", [
    ("model.file", "ABS", "is an absolute path"),
    ("model.file", f"../good/android/{MODEL}", "climbs out with '..'"),
    ("model.file", f"validation/../{MODEL}", "climbs out with '..'"),
    ("files", "../outside.txt", "climbs out with '..'"),
    ("files", "/etc/hostname", "is an absolute path"),
])
def test_manifest_names_outside_the_bundle_are_refused(bundle, tmp_path, where, value, why):
    """The model named by an absolute path or through '..' is the same good file: only the name is bad."""
    good, bad = _copy(bundle, tmp_path, "good"), _copy(bundle, tmp_path, "bad")
    value = str(good / MODEL) if value == "ABS" else value

    def edit(m):
        if where == "model.file":
            m["model"]["file"] = value
        else:
            m["files"][value] = {"sha256": "0" * 64, "size_bytes": 1}

    _edit_manifest(bad, edit)
    with pytest.raises(InputError) as e:
        verify_bundle(bad)
    assert str(e.value).startswith(f"{bad}/manifest.json: invalid bundle manifest")
    assert where in str(e.value) and why in str(e.value)


def _swap_labels(d):
    (d / "labels.txt").write_text("1\n0\n" + "".join(f"{i}\n" for i in range(2, 10)))
    _forge_listing(d, "labels.txt")


def _wrong_model_sha(d):
    _edit_manifest(d, lambda m: m["model"].update(sha256="0" * 64))


def _wrong_model_size(d):
    _edit_manifest(d, lambda m: m["model"].update(size_bytes=m["model"]["size_bytes"] + 1))


def _wrong_input_shape(d):
    _edit_manifest(d, lambda m: m.update(input_shape=[1, 41]))


def _extra_label(d):
    _edit_manifest(d, lambda m: m.update(labels=m["labels"] + ["10"]))


def _no_model_card(d):
    (d / "MODEL_CARD.md").unlink()
    _edit_manifest(d, lambda m: m["files"].pop("MODEL_CARD.md"))


@pytest.mark.parametrize("damage, problem", [
    (_swap_labels, "labels.txt: line 1 is '1', manifest.json labels[0] is '0'"),
    (_wrong_model_sha, f"{MODEL}: sha256 differs from manifest.json model.sha256"),
    (_wrong_model_size, "manifest.json model.size_bytes says"),
    (_wrong_input_shape, "validation/inputs.npy: float32 (8, 1, 40), manifest.json input_shape asks "
                         "float32 (N, 1, 41)"),
    (_extra_label, "validation/expected.npy: float32 (8, 10), expected finite floats of shape (8, 11)"),
    (_no_model_card, "MODEL_CARD.md: missing (every bundle has it)"),
])
def test_every_file_agrees_with_what_the_manifest_says(bundle, tmp_path, damage, problem):
    """Each bundle's listing is consistent (hashes forged where a file changed), so only the cross-check
    between a file and the manifest's statement about it can catch the damage."""
    bad = _copy(bundle, tmp_path)
    damage(bad)
    with pytest.raises(CheckFailed) as e:
        verify_bundle(bad)
    assert problem in str(e.value)


@pytest.mark.parametrize("cap, value, why", [
    ("MAX_ENTRY_BYTES", 1000, r"'android/zeros.bin': declares 65536 bytes uncompressed \(cap 1000\)"),
    ("MAX_TOTAL_BYTES", 1000, r"entries total \d+ bytes uncompressed \(cap 1000\)"),
    ("RATIO_FLOOR_BYTES", 1024, r"'android/zeros.bin': expands \d+ bytes to 65536 \(over 200:1, a zip bomb"),
])
def test_zip_over_a_cap_is_refused_before_extracting(bundle, tmp_path, scratch, no_extraction, monkeypatch,
                                                     cap, value, why):
    """The caps are lowered so that a tiny zip exceeds them: 64 KiB of zeros deflate over 200:1."""
    zeros = zipfile.ZipInfo("android/zeros.bin")
    zeros.compress_type = zipfile.ZIP_DEFLATED
    z = _zip(bundle[0], tmp_path / "android.zip", [(zeros, bytes(1 << 16))])
    monkeypatch.setattr(verify, cap, value)
    with pytest.raises(InputError) as e:
        verify_bundle(z)
    assert str(e.value).startswith(f"{z}: refusing to extract this bundle zip")
    assert re.search(why, str(e.value))


def _symlink_entry():
    info = zipfile.ZipInfo("android/passwd")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("entry, why", [
    (zipfile.ZipInfo("../evil.txt"), "'../evil.txt': '../evil.txt' climbs out with '..'"),
    (zipfile.ZipInfo("android/../../evil.txt"), "climbs out with '..'"),
    (zipfile.ZipInfo("/evil.txt"), "'/evil.txt' is an absolute path"),
    (_symlink_entry(), "'android/passwd': is a symlink"),
    (zipfile.ZipInfo("evil.txt"), "'evil.txt': lies outside the bundle folder"),
])
def test_zip_with_unsafe_entry_is_refused_before_extracting(bundle, tmp_path, scratch, no_extraction,
                                                            entry, why):
    z = _zip(bundle[0], tmp_path / "android.zip", [(entry, b"/etc/passwd")])
    with pytest.raises(InputError) as e:
        verify_bundle(z)
    assert str(e.value).startswith(f"{z}: refusing to extract") and why in str(e.value)
    assert not (tmp_path / "evil.txt").exists()


def test_zip_with_bad_crc_is_a_clean_input_error(bundle, tmp_path, scratch):
    """One byte flipped inside the last stored entry's data: earlier entries are already extracted when
    the CRC check fails, and the temporary folder still goes away."""
    z = _zip(bundle[0], tmp_path / "android.zip", compression=zipfile.ZIP_STORED)
    with zipfile.ZipFile(z) as opened:
        last = opened.infolist()[-1]
    data = bytearray(z.read_bytes())
    name_len, extra_len = (int.from_bytes(data[last.header_offset + i:last.header_offset + i + 2], "little")
                           for i in (26, 28))
    data[last.header_offset + 30 + name_len + extra_len + 3] ^= 0xFF
    z.write_bytes(bytes(data))
    with pytest.raises(InputError) as e:
        verify_bundle(z)
    assert str(e.value).startswith(f"{z}: damaged bundle zip (Bad CRC-32 for file '{last.filename}')")


@pytest.mark.parametrize("content", ["text", "truncated zip"])
def test_a_file_that_is_not_a_zip_is_refused(bundle, tmp_path, scratch, content):
    p = tmp_path / "android.zip"
    p.write_bytes(b"not a bundle\n" if content == "text" else bundle[1].read_bytes()[:3000])
    with pytest.raises(InputError, match="not a bundle: neither a directory nor a readable zip file") as e:
        verify_bundle(p)
    assert str(e.value).startswith(str(p))


@pytest.mark.parametrize("field", ["labels", "model", "input_shape", "metrics"])
def test_manifest_missing_a_field_is_an_input_error(bundle, tmp_path, field):
    bad = _copy(bundle, tmp_path)
    _edit_manifest(bad, lambda m: m.pop(field))
    labels = [str(i) for i in range(10)]
    for call in (lambda: verify_bundle(bad), lambda: load_baseline(bad, labels, [1, 40])):
        with pytest.raises(InputError) as e:
            call()
        assert str(e.value).startswith(f"{bad}/manifest.json: invalid bundle manifest")
        assert f"  {field}: Field required" in str(e.value)


def test_manifest_errors_inside_a_zip_name_the_zip(bundle, tmp_path, scratch):
    bad = _copy(bundle, tmp_path)
    _edit_manifest(bad, lambda m: m.pop("labels"))
    z = _zip(bad, tmp_path / "bad.zip")
    with pytest.raises(InputError) as e:
        verify_bundle(z)
    assert str(e.value).startswith(f"{z}:android/manifest.json: invalid bundle manifest")


def test_cli_verify_refuses_bad_bundles_with_exit_2(bundle, tmp_path):
    bad = _copy(bundle, tmp_path)
    (bad / "extra").symlink_to("/etc/passwd")
    not_zip = tmp_path / "android.zip"
    not_zip.write_text("hello")
    for path, named in ((bad, "extra -> /etc/passwd (symlink)"), (not_zip, "not a bundle")):
        r = run_cli("verify", path)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith(f"edgekd: error: {path}") and named in r.stderr
    r = run_cli("verify", bundle[1])
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True


def test_rerun_outputs_use_the_parity_threshold(bundle, tmp_path):
    """Expected outputs nudged by 2e-3 (argmax unchanged) pass the listing but not max abs diff 1e-3."""
    bad = _copy(bundle, tmp_path)
    p = bad / "validation" / "expected.npy"
    np.save(p, np.load(p) + np.float32(2e-3))
    _forge_listing(bad, "validation/expected.npy")
    with pytest.raises(CheckFailed, match=r"validation outputs differ: max abs diff 0.002 > allowed 0.001"):
        verify_bundle(bad)
