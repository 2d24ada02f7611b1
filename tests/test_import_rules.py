"""The import rules of erftools, read from the source (ast) of every module.

Layers, lowest first; a module may import its own layer or lower ones (imports inside functions count too):

    ops <- models <- erf, shapebias <- results <- figures <- report, dashboard <- study <- commands, cli (and the
    package)

* base modules, importable by all and importing only base modules: ``erftools._io``, ``_paths``, ``_lock``,
  ``_download`` and every other private top-level helper (``erftools._*``: ``_lazy``, ``_version``, ``_device``,
  ``_dist``), ``erftools.images`` and ``erftools.results.records`` (the record schema);
* the report and the dashboard never import each other, and read and draw only through ``erftools.results`` and
  ``erftools.figures`` (no engine, model or op directly);
* nothing imports ``erftools.commands`` except ``erftools.cli`` (and the commands themselves);
* ``erftools.shapebias`` never imports ``erftools.erf`` (the two measurements share only models, ops and the base
  modules: model preparation and identity are ``erftools.models.prepare``, the run-folder protocol
  ``erftools._runfolder``);
* ``erftools.models`` imports no measurement (the layers say so; the rule names it);
* ``erftools.erf.analysis`` and ``erftools.erf.statistics`` never import torch: they are numpy-only, and the results
  layer uses them. Importing them loads no torch (no module-level import of torch or of an erf module that is not
  numpy-only); ``erf_statistics(model=...)`` traces the theoretical field of a model the caller built with torch.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "erftools"

BASE_NAMED = {"erftools._io", "erftools._paths", "erftools._lock", "erftools._download", "erftools.images",
              "erftools.results.records"}


def is_base(module: str) -> bool:
    parts = module.split(".")
    return module in BASE_NAMED or (len(parts) == 2 and parts[1].startswith("_"))
LAYERS = {"ops": 0, "models": 1, "erf": 2, "shapebias": 2, "results": 3, "figures": 4, "report": 5,
          "dashboard": 5, "study": 6, "commands": 7, "cli": 7, "": 7}  # "": the package itself (__init__.py)
READERS = {"report", "dashboard"}  # read through results, draw through figures

# Imports the engines still make until they import ``erftools.results.records`` instead of ``erftools.results``
# (issue 10): the lead empties this list when erf/run.py and shapebias/run.py are switched. An entry that no longer
# occurs fails the test too, so the list cannot go stale.
ALLOWED: set[tuple[str, str]] = set()


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = modules()


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports(name: str, source: str, path: Path) -> set[str]:
    """The erftools modules ``name`` imports (absolute names; ``from pkg import sub`` counts as ``pkg.sub`` when
    ``sub`` is a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "erftools"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(name, path).split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "erftools":
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            out |= set(subs) if subs and len(subs) == len(node.names) else {target} | set(subs)
    out.discard(name)
    return out


def group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(name: str, imported: set[str]) -> list[str]:
    """What is wrong with ``name`` importing ``imported`` (one line each)."""
    out = []
    mine = group(name)
    for target in sorted(imported):
        theirs = group(target)
        if is_base(name):
            if not is_base(target):
                out.append(f"{name} is a base module but imports {target} (base modules import only base modules)")
            continue
        if is_base(target):
            continue
        if theirs not in LAYERS:
            out.append(f"{name} imports {target}, which is in no layer (add it to LAYERS or BASE_NAMED)")
            continue
        if LAYERS[theirs] > LAYERS[mine]:
            out.append(f"{name} (layer {mine or 'erftools'}) imports {target} from the higher layer {theirs}")
        if mine in READERS and theirs in READERS and mine != theirs:
            out.append(f"{name} imports {target}: the report and the dashboard never import each other")
        if mine in READERS and theirs not in READERS | {"results", "figures"}:
            out.append(f"{name} imports {target}: the {mine} reads only through erftools.results and draws only "
                       "through erftools.figures")
        if theirs == "commands" and mine not in ("commands", "cli"):
            out.append(f"{name} imports {target}: only erftools.cli imports the commands")
        if mine == "shapebias" and theirs == "erf":
            out.append(f"{name} imports {target}: the shape bias never imports the ERF engine")
        if mine == "models" and theirs in MEASUREMENTS:
            out.append(f"{name} imports {target}: models import no measurement")
    return out


MEASUREMENTS = {"erf", "shapebias"}
NUMPY_ONLY = {"erftools.erf.analysis", "erftools.erf.statistics", "erftools.erf.reference"}  # the results layer imports them without torch


def third_party(source: str, *, loading: bool = False) -> set[str]:
    """The top-level names of the packages ``source`` imports (inside functions too; with ``loading``, only what
    importing the module runs: module-level statements, ``if``/``try`` blocks included)."""
    out = set()
    tree = ast.parse(source)
    nodes = _loading_nodes(tree.body) if loading else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def _loading_nodes(body):
    """The statements importing a module runs: its body, and the bodies of its ``if``/``try``/``with`` blocks."""
    for node in body:
        yield node
        for block in ("body", "orelse", "finalbody", "handlers"):
            if isinstance(node, (ast.If, ast.Try, ast.With, ast.ExceptHandler)) and hasattr(node, block):
                yield from _loading_nodes(getattr(node, block))


def test_the_numpy_only_modules_never_import_torch():
    for name in NUMPY_ONLY:
        source = MODULES[name].read_text(encoding="utf-8")
        assert "torch" not in third_party(source, loading=True), f"{name} imports torch; it is numpy-only"
        module = ast.Module(body=[n for n in _loading_nodes(ast.parse(source).body)
                                  if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
        loaded = {m for m in imports(name, ast.unparse(module), MODULES[name]) if group(m) == "erf"}
        assert loaded <= NUMPY_ONLY, f"{name} imports {loaded - NUMPY_ONLY} when loaded, which imports torch"


def test_the_torch_checker_sees_imports_in_functions():
    assert "torch" in third_party("def f():\n    import torch.nn as nn\n")
    assert "torch" in third_party("def f():\n    from torch import nn\n")
    assert "torch" in third_party("try:\n    import torch\nexcept ImportError:\n    pass\n", loading=True)
    assert "torch" not in third_party("def f():\n    import torch\n", loading=True)


def test_every_module_is_in_a_layer():
    unknown = [m for m in MODULES if not is_base(m) and group(m) not in LAYERS]
    assert not unknown, f"modules in no layer (add them to LAYERS or BASE_NAMED): {unknown}"


def test_the_import_rules_hold():
    found, used = [], set()
    for name, path in MODULES.items():
        imported = imports(name, path.read_text(encoding="utf-8"), path)
        for line in violations(name, imported):
            pair = next(((name, t) for t in imported if line.startswith(f"{name} (layer") and f" {t} from" in line),
                        None)
            if pair in ALLOWED:
                used.add(pair)
                continue
            found.append(line)
    assert not found, "import rules broken:\n  " + "\n  ".join(found)
    stale = ALLOWED - used
    assert not stale, f"these allowed imports no longer occur; remove them from ALLOWED: {sorted(stale)}"


@pytest.mark.parametrize("name, source, expect", [
    ("erftools.models.x", "from ..erf import compute", "imports erftools.erf.compute from the higher layer erf"),
    ("erftools.report", "from .dashboard import app", "never import each other"),
    ("erftools.dashboard.app", "from ..erf.analysis import area_ratios", "reads only through erftools.results"),
    ("erftools.erf.run", "from ..results import store", "imports erftools.results.store from the higher layer"),
    ("erftools.results.views", "import erftools.commands.erf", "only erftools.cli imports the commands"),
    ("erftools._io", "from .models import create_model", "base modules import only base modules"),
    ("erftools.shapebias.run", "from ..erf.run import parameters_sha256", "never imports the ERF engine"),
    ("erftools.models.x", "from ..shapebias import run", "models import no measurement"),
])
def test_the_checker_finds_broken_rules(name, source, expect):
    path = PACKAGE / Path(*name.split(".")[1:]).with_suffix(".py")
    assert any(expect in v for v in violations(name, imports(name, source, path)))


def test_the_checker_allows_the_layering():
    ok = [("erftools.erf.run", "from ..results.records import base_record"),
          ("erftools.figures", "from .results import views\nfrom .erf.plots import plot_erf"),
          ("erftools.report", "from . import figures\nfrom .results import views"),
          ("erftools.cli", "from .commands import erf"),
          ("erftools.shapebias.run", "from ..models.prepare import parameters_sha256"),
          ("erftools.erf.run", "from .._runfolder import RunFolder")]
    for name, source in ok:
        path = PACKAGE / Path(*name.split(".")[1:]).with_suffix(".py")
        assert violations(name, imports(name, source, path)) == [], name
