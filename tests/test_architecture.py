"""The layout's rule, checked: imports point one way down the layers, only rcmae/distributed imports Ray,
train/ and evaluate/ never import each other, and the code passes ruff (lint and import order)."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rcmae"
# a module may import its own package and any lower layer, never a higher one or a sibling of its layer
LAYERS = [
    {"registry", "logs", "errors"},
    {"config"},
    {"losses", "features"},
    {"data", "models"},
    {"augment"},
    {"detect"},
    {"train", "evaluate"},
    {"distributed"},
    {"stages", "baseline"},
    {"ablation", "run", "api"},
    {"cli"},
]


def part(module: str) -> str:
    """rcmae.train.loops -> train; rcmae.config -> config."""
    return module.split(".")[1]


def layer(name: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if name in names)


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    own = part(module_name(path))
    for target in imports(path):
        if target == "ray" or target.startswith("ray."):
            assert own == "distributed", f"{module_name(path)} imports {target}: Ray belongs in rcmae/distributed"
        if not target.startswith("rcmae.") or part(target) == own:
            continue
        other = part(target)
        assert layer(other) < layer(own), f"{module_name(path)} imports {target}: {own} may not import {other}"


def test_every_module_has_a_layer():
    for path in MODULES:
        layer(part(module_name(path)))


@pytest.mark.skipif(shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
                    reason="ruff is installed with the test extras")
def test_ruff_passes():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    done = subprocess.run([ruff, "check", "rcmae", "tests", "benchmarks", "jobs"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-3000:]
