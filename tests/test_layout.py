"""The package's shape: imports only go down the stack, and everything public says what it is."""

from __future__ import annotations

import ast
from pathlib import Path

import goalscope

PACKAGE = Path(goalscope.__file__).parent

# Bottom to top. A module may import modules of its own layer or of a layer below it, never one above.
LAYERS = [
    ("core", ("goalscope", "goalscope.errors", "goalscope.inputs", "goalscope.outputs")),
    ("envs", ("goalscope.envs",)),
    ("agents", ("goalscope.agents",)),
    ("rl", ("goalscope.rl",)),
    ("signals", ("goalscope.signals",)),
    ("program", ("goalscope.program",)),
    ("analysis", ("goalscope.analysis",)),
    ("report", ("goalscope.report",)),
    ("cli", ("goalscope.cli",)),
]


def _layer(module: str) -> int:
    best, level = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, level = len(p), i
    assert level is not None, f"{module} is in no layer of the stack; add it to LAYERS"
    return level


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def _imports(name: str, path: Path):
    """Every goalscope module ``path`` imports, at top level or inside a function (lazy imports count too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from goalscope.signals import delta` imports the module goalscope.signals.delta
            targets = [f"{base}.{a.name}" if (PACKAGE.parent / f"{base}.{a.name}".replace(".", "/")).exists()
                       or (PACKAGE.parent / (f"{base}.{a.name}".replace(".", "/") + ".py")).exists() else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            if t == "goalscope" or t.startswith("goalscope."):
                yield node.lineno, t


def test_every_module_has_a_layer_and_imports_only_down_the_stack():
    wrong = []
    for name, path in _modules():
        if name == "goalscope":
            continue  # the façade: its lazy public names point at every layer by design
        mine = _layer(name)
        for line, target in _imports(name, path):
            if target == "goalscope":
                continue  # `from goalscope import __version__`
            if _layer(target) > mine:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({LAYERS[mine][0]}) imports {target} "
                             f"({LAYERS[_layer(target)][0]})")
    assert not wrong, "imports up the stack:\n" + "\n".join(wrong)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from goalscope.report.page import write_report\n")
    assert [t for _, t in _imports("goalscope.rl.bad", bad)] == ["goalscope.report.page"]
    assert _layer("goalscope.report.page") > _layer("goalscope.rl.bad")


def _public_modules():
    """Every module of the package whose dotted path has no part starting with ``_`` (``__init__`` counts)."""
    for name, path in _modules():
        if not any(part.startswith("_") for part in name.split(".")) and path.name != "__main__.py":
            yield name, path


def _undocumented(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    missing = [] if ast.get_docstring(tree) else ["(module)"]
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            if not ast.get_docstring(node):
                missing.append(f"{node.name} (line {node.lineno})")
    return missing


def test_every_public_function_and_class_has_a_docstring():
    missing = [f"{name}: {item}" for name, path in _public_modules() for item in _undocumented(path)]
    assert not missing, "public names without a docstring:\n" + "\n".join(missing)


def test_the_docstring_check_sees_a_missing_docstring(tmp_path):
    mod = tmp_path / "mod.py"
    mod.write_text('"""A module."""\n\ndef documented():\n    """Yes."""\n\ndef bare():\n    pass\n\ndef _private():\n    pass\n')
    assert _undocumented(mod) == ["bare (line 6)"]


def test_public_modules_stay_small():
    # The layout's promise: a module fits in one reading (about 400 lines).
    big = [f"{name}: {len(path.read_text().splitlines())} lines" for name, path in _modules()
           if len(path.read_text().splitlines()) > 420]
    assert not big, "modules over ~400 lines:\n" + "\n".join(big)
