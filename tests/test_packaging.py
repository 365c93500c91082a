"""What `pip install edgekd` gets: every package and every data file, not just what a checkout has."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def test_every_package_folder_is_declared():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "edgekd").rglob("__init__.py")}
    assert found - declared == set(), "add these packages to [tool.setuptools] packages in pyproject.toml"


@pytest.mark.heavy
def test_the_wheel_ships_target_profiles_recipes_and_policies(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    str(ROOT), "-w", str(tmp_path)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("edgekd-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    profiles = {f"edgekd/targets/{p.name}" for p in (ROOT / "targets").glob("*.yaml")}
    assert profiles and profiles <= names
    assert {"edgekd/recipes/mnist1d.yaml", "edgekd/policies/default.yaml"} <= names
    # installed (unpacked) and imported outside the checkout, it finds its own profiles
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    out = subprocess.run([sys.executable, "-c", "from edgekd.bench.targets import all_targets, targets_dir;"
                          "print(targets_dir()); print(len(all_targets()))"],
                         capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(site)},
                         check=True)
    where, count = out.stdout.split()
    assert Path(where) == site / "edgekd" / "targets" and int(count) == len(profiles)
