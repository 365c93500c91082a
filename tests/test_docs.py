"""The README's recipe and policy examples are what users copy: they must load as written."""

import re
from pathlib import Path

import yaml

from edgekd.bench.targets import targets_dir
from edgekd.config import Policy, Recipe
from edgekd.models import MODELS

README = Path(__file__).parent.parent / "README.md"


def _yaml_blocks() -> list[dict]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)]


def test_readme_recipe_example_is_a_valid_recipe():
    (block,) = [b for b in _yaml_blocks() if "students" in b and b["data"]["name"] != "text"]
    recipe = Recipe.model_validate(block)
    assert all(s.arch in MODELS.names() for s in [*recipe.students, recipe.teacher])
    overridden = [s for s in recipe.students if s.train is not None]
    assert overridden and recipe.student_train(overridden[0]).batch_size == recipe.distill.train.batch_size


def test_readme_text_example_is_a_valid_recipe():
    (block,) = [b for b in _yaml_blocks() if "students" in b and b["data"]["name"] == "text"]
    recipe = Recipe.model_validate(block)
    assert recipe.teacher.spec().kind == "hf" and recipe.students[1].spec().kwargs["vocab"] == "task"


def test_readme_policy_example_is_a_valid_policy():
    (block,) = [b for b in _yaml_blocks() if "min_retention" in b]
    policy = Policy.model_validate(block)
    targets = {p.stem for p in targets_dir().glob("*.yaml")}
    runners = {"tflite", "onnxruntime", "torch-eager", "coreml", "coreml-exec"}
    named = {*policy.max_latency_ms, *policy.min_accelerator_residency} - runners
    assert named <= targets, f"README names targets that targets/ does not have: {named - targets}"
