"""The layering docs/ARCHITECTURE.md promises, read from the source rather than trusted: models never import the
engine (or anything above it), and the engine knows no method or stage name -- it trains whatever a method hands
it. Both are checked on the syntax tree, so a lazy import inside a function counts as much as one at the top."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from hetseg.methods import METHODS, get_method

SRC = Path(__file__).resolve().parents[1] / "src"
ABOVE_MODELS = ("hetseg.engine", "hetseg.methods", "hetseg.bench", "hetseg.cli", "hetseg.demo")
ABOVE_ENGINE = ("hetseg.methods", "hetseg.bench", "hetseg.cli", "hetseg.demo")


def _imported_modules(source: str, package: str) -> list[str]:
    """Absolute names of every module ``source`` imports, relative imports resolved against ``package``."""
    parts = package.split(".")
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = parts[:len(parts) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            # "from hetseg import engine" imports hetseg.engine: the names may be modules too
            names += [mod] + [f"{mod}.{a.name}" for a in node.names]
    return names


@pytest.mark.parametrize("layer,banned", [("models", ABOVE_MODELS), ("engine", ABOVE_ENGINE)])
def test_a_layer_imports_nothing_above_it(layer: str, banned: tuple[str, ...]) -> None:
    files = sorted((SRC / "hetseg" / layer).glob("*.py"))
    assert len(files) > 5, layer  # the glob found the package
    bad = [(f.name, m) for f in files for m in _imported_modules(f.read_text(), f"hetseg.{layer}")
           if m.startswith(banned)]
    assert not bad, bad


def test_the_import_reader_sees_relative_and_lazy_imports() -> None:
    """The check above would pass vacuously if the reader missed these forms."""
    source = ("from ..engine import train\nfrom . import base\nfrom .. import methods\n\n"
              "def f():\n    import hetseg.bench.table1\n")
    assert _imported_modules(source, "hetseg.models") == [
        "hetseg.engine", "hetseg.engine.train", "hetseg.models", "hetseg.models.base", "hetseg", "hetseg.methods",
        "hetseg.bench.table1"]


def test_the_engine_names_no_method_or_stage() -> None:
    """No string in the engine's code (docstrings included) names a registered method or one of their stages."""
    names = set(METHODS)
    for m in METHODS:
        method = get_method(m)
        names |= set(method.stages) | set(method.extra_stages)
    assert {"decouplednet", "cls", "seg", "labelmap"} <= names  # the registry was read
    found = []
    for path in sorted((SRC / "hetseg" / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                words = set(re.findall(r"[A-Za-z_]+", node.value))
                found += [(path.name, node.lineno, w) for w in sorted(words & names)]
    assert not found, found
