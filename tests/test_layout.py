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
    # analysis/ by family: the floor every family shares (stats, records), then the families, each importing the
    # floor and the families below it (test_analysis_is_split_by_family keeps new modules out of the floor).
    ("analysis", ("goalscope.analysis",)),
    ("analysis.effects", ("goalscope.analysis.effects",)),
    ("analysis.validate", ("goalscope.analysis.validate",)),
    ("analysis.edits", ("goalscope.analysis.edits",)),
    ("analysis.steering", ("goalscope.analysis.steering",)),
    ("analysis (top)", ("goalscope.analysis.pointers", "goalscope.analysis.pointer_reference",
                        "goalscope.analysis.experiment")),
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


# The modules directly under analysis/ (the rest live in a family's subpackage): the shared floor, pointers (and its
# cue-blind reference), and the old path of run_experiment (an alias of goalscope.analysis.effects.experiment).
ANALYSIS_FLOOR = {"goalscope.analysis", "goalscope.analysis.records", "goalscope.analysis.stats"}
ANALYSIS_TOP = {"goalscope.analysis.pointers", "goalscope.analysis.pointer_reference", "goalscope.analysis.experiment"}


def test_analysis_is_split_by_family():
    families = {p for _, prefixes in LAYERS for p in prefixes if p.startswith("goalscope.analysis.")} - ANALYSIS_TOP
    stray = []
    for name, path in _modules():
        if not name.startswith("goalscope.analysis"):
            continue
        if path.name == "__init__.py" and name != "goalscope.analysis" and name not in families:
            stray.append(f"{name}: a subpackage of analysis/ with no layer in LAYERS")
        elif name.count(".") == 2 and name not in ANALYSIS_FLOOR | ANALYSIS_TOP and name not in families:
            stray.append(f"{name}: a module on analysis/'s floor; put it in a family (or in ANALYSIS_FLOOR if every "
                         "family shares it)")
    assert not stray, "\n".join(stray)
    floor = [t for name in ANALYSIS_FLOOR for _, t in _imports(name, _path(name)) if t.startswith("goalscope.analysis.")]
    assert not floor, f"the analysis floor imports a family: {floor}"


def _path(name: str) -> Path:
    return dict(_modules())[name]


def _graph(modules) -> dict[str, set[str]]:
    """``{module: the goalscope modules it imports}`` (lazy imports too) for ``(name, path)`` pairs."""
    return {name: {t for _, t in _imports(name, path) if t != name} for name, path in modules}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: its strongly connected components of more than one module, each sorted
    (Tarjan's algorithm, iterative so a deep chain cannot overflow the stack)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue  # a name outside the modules given (a package's re-exported name, a third party)
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def test_no_import_circles():
    # A circle works only while every import in it stays lazy or in the right order; the layers above allow one
    # inside a layer, so this is checked on its own: the whole package, lazy imports included.
    circles = _circles(_graph(_modules()))
    assert not circles, "import circles (each line: modules that import each other, directly or round a loop):\n" + \
        "\n".join(", ".join(c) for c in circles)


def test_the_circle_check_sees_a_circle(tmp_path):
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"a", "e"}}
    assert _circles(graph) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    # and from source files, with one import inside a function (entry -> planted -> grafts -> entry, as it once was)
    files = {"entry": "from goalscope.x.planted import md_name\n",
             "planted": "def score():\n    from goalscope.x.grafts import auroc\n",
             "grafts": "def localisation():\n    import goalscope.x.entry\n"}
    modules = []
    for stem, text in files.items():
        (tmp_path / f"{stem}.py").write_text(text)
        modules.append((f"goalscope.x.{stem}", tmp_path / f"{stem}.py"))
    assert _circles(_graph(modules)) == [["goalscope.x.entry", "goalscope.x.grafts", "goalscope.x.planted"]]


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
