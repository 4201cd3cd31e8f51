"""The package's layout: its folders are the pipeline, and imports point one way, down it."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import vidtempo
from vidtempo._imports import MOVED_INTO_PACKAGE, MOVED_MODULES

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "vidtempo"

# Each stage may import the stages listed for it (and itself). "base" is the modules directly in the package
# (configuration, checkpoints, runtime, files, errors, progress): every stage uses them, they use no stage.
STAGES_BELOW = {
    "base": set(),
    "features": {"base"},
    "model": {"base"},
    "ensemble": {"base", "features", "model"},
    "training": {"base", "features", "model", "ensemble"},
    "inference": {"base", "features", "model", "ensemble", "training"},
    "demo": {"base", "features", "model", "ensemble", "training", "inference"},
    "serve": {"base", "features", "model", "ensemble", "inference"},
    "cli": {"base", "features", "model", "ensemble", "training", "inference", "demo", "serve"},
}
# The package's own __init__ (the public API) and __main__ sit on top of everything.
TOP = {"vidtempo", "vidtempo.__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_modules(name: str) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file (type-only and deferred imports
    included), with the packages an import runs on the way (``a.b.c`` runs ``a.b``'s ``__init__``)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_LAZY" for t in node.targets):
            # Names a package exports on first use (_imports.lazy_exports): {name: relative module}.
            for relative in set(ast.literal_eval(node.value).values()):
                level = len(relative) - len(relative.lstrip("."))
                base = package.split(".")[: len(package.split(".")) - level + 1]
                found.add(".".join(base + [relative.lstrip(".")]))
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            candidates = [f"{target}.{alias.name}" for alias in node.names] + [target]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            if candidate in MODULES:
                found.add(candidate)
                break
    # An import runs the __init__ of the packages on the way, but not of the importer's own packages (running
    # already) nor of the top package (the public API, which imports every stage).
    own = {name.rsplit(".", i)[0] for i in range(name.count(".") + 1)}
    implied = {".".join(module.split(".")[:i]) for module in found for i in range(2, module.count(".") + 1)}
    return (found | implied - own) - {name}


GRAPH = {name: imported_modules(name) for name in MODULES}


def stage(name: str) -> str:
    parts = name.split(".")
    return "base" if len(parts) == 2 and not (PACKAGE / parts[1]).is_dir() else parts[1]


def test_no_module_imports_one_that_imports_it_back():
    """No cycle, direct or through others (depth-first search; a module met again on the path closes one)."""
    state: dict[str, str] = {}
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [name, target] if target in path else [name, target])
            elif target not in state:
                visit(target, path + [name])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [])
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_imports_point_down_the_pipeline():
    broken = [f"{name} ({stage(name)}) imports {target} ({stage(target)})"
              for name, targets in sorted(GRAPH.items()) if name not in TOP
              for target in sorted(targets)
              if target not in TOP | {"vidtempo._imports"} and stage(target) != stage(name)
              and stage(target) not in STAGES_BELOW[stage(name)]]
    broken += [f"{name} imports the package's public API (vidtempo): import the module it needs"
               for name, targets in sorted(GRAPH.items()) if name not in TOP and "vidtempo" in targets]
    assert not broken, "\n".join(broken)


def test_every_subpackage_is_a_stage_with_a_docstring():
    subpackages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert sorted(set(STAGES_BELOW) - {"base"}) == subpackages
    for name in subpackages:
        docstring = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        assert docstring and len(docstring) > 80, f"vidtempo.{name}: say what the stage does and exports"


def test_at_most_ten_modules_beside_the_stages():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 10, modules


def test_no_function_is_longer_than_sixty_lines():
    long = [f"{module}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for module, path in sorted(MODULES.items())
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]
    assert not long, "\n".join(long)


@pytest.mark.slow  # a fresh interpreter per command
def test_help_of_every_command_loads_no_torch():
    """``--help`` answers at once: nothing heavy is imported until a command runs."""
    from vidtempo.cli.commands import build_parser

    commands = list(build_parser()._subparsers._group_actions[0].choices)
    assert {"extract", "train", "predict", "serve", "export", "split", "demo"} <= set(commands)
    for argv in [["--help"], ["--version"]] + [[command, "--help"] for command in commands]:
        code = ("import runpy, sys\n"
                f"sys.argv = ['vidtempo', *{argv!r}]\n"
                "try:\n    runpy.run_module('vidtempo', run_name='__main__')\nexcept SystemExit as exc:\n"
                "    assert exc.code in (0, None), exc.code\n"
                "print(sorted(m for m in ('torch', 'torch._dynamo', 'onnxruntime') if m in sys.modules))\n")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == "[]", (argv, result.stdout[-200:])


def test_importing_the_package_loads_no_torch():
    code = "import sys, vidtempo; print('torch' in sys.modules); vidtempo.Ensemble; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "True"], result.stderr


def test_the_public_api_is_where_it_was():
    for name in vidtempo.__all__:
        assert getattr(vidtempo, name) is not None
    import model_train_new

    for name in ("EnhancedTemporalModelTrainer", "SuperEnhancedTemporalModel", "FocalLoss", "collate_features",
                 "FeatureDataset", "Ensemble", "ModelConfig", "TrainingConfig"):
        assert getattr(model_train_new, name) is getattr(vidtempo, name)


@pytest.mark.slow
def test_each_old_module_path_imports_with_a_warning_naming_the_new_one():
    """In a fresh interpreter, where each old path's first import (the one that warns) happens here."""
    code = ("import importlib, json, sys, warnings\n"
            "from vidtempo._imports import MOVED_MODULES\n"
            "seen = {}\n"
            "for old, new in MOVED_MODULES.items():\n"
            "    with warnings.catch_warnings(record=True) as caught:\n"
            "        warnings.simplefilter('always')\n"
            "        module = importlib.import_module(old)\n"
            "    assert module is importlib.import_module(new), (old, module)\n"
            "    seen[old] = [str(w.message) for w in caught if w.category is DeprecationWarning]\n"
            "print(json.dumps(seen))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert set(seen) == set(MOVED_MODULES)
    for old, messages in seen.items():
        assert any(old in m and MOVED_MODULES[old] in m for m in messages), (old, messages)


def test_old_module_paths_alias_the_moved_module_in_process():
    for old, new in MOVED_MODULES.items():
        with pytest.warns(DeprecationWarning, match=re.escape(new)):
            sys.modules.pop(old, None)
            module = importlib.import_module(old)
        assert module is importlib.import_module(new)


@pytest.mark.parametrize("package", sorted(MOVED_INTO_PACKAGE))
def test_a_module_that_became_a_package_keeps_its_names_with_a_warning(package):
    source = importlib.import_module(MOVED_INTO_PACKAGE[package])
    exported = set(importlib.import_module(package).__all__)
    public = [name for name, value in vars(source).items() if not name.startswith("_") and name not in exported
              and (getattr(value, "__module__", None) == source.__name__ or name.isupper())]
    assert public, f"{source.__name__} defines no other names"
    for name in public:
        with pytest.warns(DeprecationWarning, match=re.escape(f"import it from {source.__name__}")):
            assert getattr(importlib.import_module(package), name) is getattr(source, name)
    with pytest.raises(AttributeError):
        getattr(importlib.import_module(package), "no_such_name")


def test_the_readme_table_names_folders_that_exist():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    named = {match for row in rows for match in re.findall(r"`(src/vidtempo/[\w/.]*)`", row)}
    assert {f"src/vidtempo/{name}/" for name in set(STAGES_BELOW) - {"base"}} <= named
    for path in named:
        assert (ROOT / path).exists(), path
