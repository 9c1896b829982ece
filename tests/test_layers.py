"""The package's imports run one way, from the command line down to the shared helpers:

    cli  ->  api  ->  bench, serve, export, compare  ->  training, evaluate, inspect
         ->  textgen  ->  generate, scoring  ->  run  ->  data, model, sampling_rules
         ->  config  ->  errors, files, cpu

A module may import from its own package and from any lower layer, never from a higher
layer or a peer (data never imports model, training never imports generate)."""

from __future__ import annotations

import ast
from pathlib import Path

import charlm

LAYERS = [
    {"charlm", "charlm.errors", "charlm.files", "charlm.cpu"},
    {"charlm.config"},
    {
        "charlm.data",
        "charlm.model",
        "charlm.draws",
        "charlm.batching",
        "charlm.sampling_rules",
        "charlm.controls",
    },
    {"charlm.run", "charlm.reading"},
    {"charlm.generate", "charlm.scoring"},
    {"charlm.textgen"},
    {"charlm.training", "charlm.evaluate", "charlm.inspect"},
    {"charlm.bench", "charlm.serve", "charlm.export", "charlm.compare"},
    {"charlm.api"},
    {"charlm.cli"},
]
MAX_MODULE_LINES = 320  # "about 300": one module, one job


def modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package at `root`."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The package's own modules that `path` (module `name`) imports, wherever in it."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return {module for module in found if module in known}


def unit(module: str, package: str) -> str:
    """The layer unit a module belongs to: the package itself or its top-level part."""
    parts = module.split(".")
    return package if len(parts) == 1 else f"{package}.{parts[1]}"


def layer_of(name: str, layers: list[set[str]]) -> int | None:
    return next((index for index, units in enumerate(layers) if name in units), None)


def layering_violations(root: Path, package: str, layers: list[set[str]]) -> list[str]:
    found = modules(root, package)
    problems = []
    for module, path in found.items():
        own = unit(module, package)
        own_layer = layer_of(own, layers)
        if own_layer is None:
            problems.append(f"{module} is in no layer")
            continue
        for target in sorted(imports_of(path, module, set(found))):
            other = unit(target, package)
            other_layer = layer_of(other, layers)
            if other == own or other_layer is not None and other_layer < own_layer:
                continue
            if other == package:
                continue  # the package's own __init__ (version, log level)
            if module == package and other in (f"{package}.api", f"{package}.config"):
                continue  # the public face re-exports the API lazily (PEP 562)
            problems.append(f"{module} imports {target}: layer {other_layer} from {own_layer}")
    return problems


def test_charlm_imports_only_downwards():
    root = Path(charlm.__file__).parent
    assert layering_violations(root, "charlm", LAYERS) == []


def write(root: Path, relative: str, text: str = "") -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_an_upward_or_sideways_import_is_caught(tmp_path):
    root = tmp_path / "charlm"
    for part in (
        "__init__.py",
        "errors.py",
        "files.py",
        "config/__init__.py",
        "model/__init__.py",
        "run/__init__.py",
        "cli/__init__.py",
    ):
        write(root, part)
    write(root, "data/__init__.py")
    write(root, "data/tokens.py", "def f():\n    from charlm.model import build\n")  # a peer
    write(root, "model/build.py", "from charlm.config import x\n")  # downwards: fine
    write(root, "errors.py", "from charlm.cli import app\n")
    write(root, "run/load.py", "from ..training import loop\n")  # relative, upwards
    write(root, "training/__init__.py")
    write(root, "training/loop.py")
    problems = layering_violations(root, "charlm", LAYERS)
    assert problems == [
        "charlm.data.tokens imports charlm.model.build: layer 2 from 2",
        "charlm.errors imports charlm.cli: layer 9 from 0",
        "charlm.run.load imports charlm.training.loop: layer 6 from 3",
    ]


def test_every_module_says_its_job_and_fits_on_a_few_screens():
    for module, path in modules(Path(charlm.__file__).parent, "charlm").items():
        text = path.read_text(encoding="utf-8")
        assert ast.get_docstring(ast.parse(text)), f"{module} has no docstring"
        assert text.count("\n") <= MAX_MODULE_LINES, f"{module} is over {MAX_MODULE_LINES} lines"
