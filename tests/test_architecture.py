"""The layout's rule, checked: imports point one way down the layers, only rcmae/distributed and rcmae/serve import Ray,
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
    {"registry", "logs", "errors", "interrupts"},
    {"config_input", "stores"},
    {"sections"},
    {"config", "tracking"},
    {"losses", "features"},
    {"data", "models"},
    {"augment"},
    {"detect"},
    {"train", "evaluate", "edge"},
    {"distributed"},
    {"stages", "baseline"},
    {"api", "export"},
    {"mlflow_model"},
    {"ablation", "run", "sweep"},
    {"serve"},
    {"commands"},
    {"cli"},
]


RAY_PACKAGES = {"distributed", "serve"}  # serve: Ray Serve around the API, above it


def part(module: str) -> str:
    """rcmae.train.loops -> train; rcmae.config -> config."""
    return module.split(".")[1]


def layer(name: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if name in names)


def imports(path: Path, source: str | None = None) -> list[str]:
    """Every module `path` (or `source`, read as if it were `path`) imports, relative imports made absolute."""
    package = module_name(path).split(".")[:-1] if path.name != "__init__.py" else module_name(path).split(".")
    found = []
    for node in ast.walk(ast.parse(source if source is not None else path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "rcmae":
            found += [f"rcmae.{alias.name}" for alias in node.names]  # `from rcmae import tracking`
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - (node.level - 1)]
            names = [node.module] if node.module else [alias.name for alias in node.names]
            found += [".".join(base + [name]) for name in names]
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    check_layers(module_name(path), imports(path))


def check_layers(name: str, targets: list[str]) -> None:
    own = part(name)
    for target in targets:
        if target == "ray" or target.startswith("ray."):
            assert own in RAY_PACKAGES, f"{name} imports {target}: Ray belongs in rcmae/distributed (or serve)"
        if not target.startswith("rcmae.") or part(target) == own:
            continue
        other = part(target)
        assert layer(other) < layer(own), f"{name} imports {target}: {own} may not import {other}"


def test_relative_imports_are_resolved():
    """`from ..train import loops` in rcmae/evaluate is read as rcmae.train, so a relative import cannot slip past
    the layer rule."""
    source = "from ..train import loops\nfrom . import metrics\nfrom .maps import plot_map\nfrom rcmae import api\n"
    found = imports(PACKAGE / "evaluate" / "probe.py", source)
    assert found == ["rcmae.train", "rcmae.evaluate.metrics", "rcmae.evaluate.maps", "rcmae.api"]
    with pytest.raises(AssertionError, match="evaluate may not import train"):
        check_layers("rcmae.evaluate.probe", found)


# where the whole `Config` may travel: the commands and the drivers that split it into sections, the training
# stages (a checkpoint records all of it) and the API that hands a model's config back; every other module takes
# the sections it uses (`rcmae.sections`)
WHOLE_CONFIG = {"cli", "run", "ablation", "sweep", "api", "stages", "distributed", "train", "models.checkpoint"}


def takes_whole_config(path: Path) -> bool:
    return any(isinstance(node, ast.ImportFrom) and node.module == "rcmae.config" and
               any(alias.name == "Config" for alias in node.names) for node in ast.walk(ast.parse(path.read_text())))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_whole_config_travels_only_into_the_drivers(path):
    name = module_name(path).removeprefix("rcmae.")
    if takes_whole_config(path):
        assert name.split(".")[0] in WHOLE_CONFIG or name in WHOLE_CONFIG, (
            f"rcmae.{name} imports the whole Config: take the sections it uses (rcmae.sections) instead")


def whole_config_reads(path: Path) -> list[str]:
    """Where a module reaches a model's whole config: `made_with()` calls and `.config` of a checkpoint, its meta, a
    scorer or a detector."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "made_with":
            found.append(f"line {node.lineno}: made_with()")
        if isinstance(node, ast.Attribute) and node.attr == "config":
            owner = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", "")
            if any(word in owner.lower() for word in ("checkpoint", "meta", "scorer", "detector", "finetuned")):
                found.append(f"line {node.lineno}: {owner}.config")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_models_whole_config_is_read_only_by_the_drivers(path):
    """Below the drivers a model folder hands out the sections a module uses (`CheckpointMeta.audio`, `.features`,
    `.score`, ...; `Checkpoint.audio`, `.features`), never its whole config."""
    name = module_name(path).removeprefix("rcmae.")
    if name.split(".")[0] in WHOLE_CONFIG or name in WHOLE_CONFIG:
        return
    assert not whole_config_reads(path), f"rcmae.{name} reads a model's whole config: {whole_config_reads(path)}"


def test_the_whole_config_reads_are_found(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("a = read_meta(x).made_with().score\nb = encoder.checkpoint.config.features\nc = self.config\n")
    assert whole_config_reads(probe) == ["line 1: made_with()", "line 2: checkpoint.config"]


def registry_targets() -> list[str]:
    from rcmae import registry

    return [entry.target for table in (registry.AUGMENTERS, registry.SCORES, registry.REFERENCES)
            for entry in table.values()] + [entry.options for entry in registry.AUGMENTERS.values()]


@pytest.mark.parametrize("target", registry_targets())
def test_registry_targets_exist_and_sit_in_a_layer_without_ray(target):
    """The registry names implementations as "module:attribute" strings, which no import rule sees: each must
    load, live in a layered rcmae module and keep Ray out (the augmenters and scores run in plain processes too)."""
    from rcmae.registry import load

    module = target.partition(":")[0]
    assert callable(load(target)), target
    assert module.startswith("rcmae.") and part(module) != "distributed", target
    layer(part(module))


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
