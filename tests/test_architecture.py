"""Which package may import which, checked on the source text (nothing is imported).

Why: an import cycle between packages is invisible until a refactor trips over it, and a
lazy import inside a function body slips past any check that only imports modules.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, at any depth (function bodies too)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_web_service_never_imports_the_cli() -> None:
    """The CLI starts the web service (``tiefvision serve``), so the web service importing
    the CLI would make the two packages import each other; what both need from Prefect is
    in ``deployments.client``."""
    files = sorted((ROOT / "tiefvision_web").rglob("*.py"))
    assert files, "no tiefvision_web sources found"
    offending = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in files
        for line, module in _imported_modules(path)
        if module == "tiefvision_cli" or module.startswith("tiefvision_cli.")
    ]
    assert not offending, "\n".join(offending)


# -- the project's module import graph ------------------------------------------------------

#: The project's importable packages (tests and scripts are not imported by anything).
_PACKAGES = ("tiefvision_core", "tiefvision_web", "tiefvision_cli", "tasks", "flows", "deployments")


def _module_files() -> dict[str, Path]:
    """Dotted module name → source file, for every module of the project's packages."""
    modules: dict[str, Path] = {}
    for package in _PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import that can run, with whether it sits in a function body; imports under
    ``if TYPE_CHECKING:`` never run and are left out."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for orelse in child.orelse:
                    visit(orelse, in_function)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, in_function))
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, inner)

    visit(tree, False)
    return found


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict[str, Path]
) -> set[str]:
    """The project modules an import statement loads: the named module (a relative one
    resolved against ``module``), a submodule named in ``from X import name``, and the
    packages above them (their ``__init__`` runs first) — except the importer's own
    packages, which are always initialised before any of their modules runs."""
    if isinstance(node, ast.Import):
        named = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".")
            anchor = anchor if is_package else anchor[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        named = [base, *(f"{base}.{alias.name}" for alias in node.names)]
    own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
    loaded: set[str] = set()
    for name in named:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in modules and prefix not in own:
                loaded.add(prefix)
    return loaded


def _import_graph() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """Module → the project modules it imports at run time (top level and in functions),
    and every function-level import as (importer, line, imported)."""
    modules = _module_files()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    in_functions: list[tuple[str, int, str]] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, in_function in _runtime_imports(tree):
            targets = _targets(node, name, path.name == "__init__.py", modules)
            graph[name] |= targets
            in_functions += [(name, node.lineno, t) for t in targets if in_function]
    return graph, in_functions


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def _stage(module: str) -> str:
    """A core module's stage: its subpackage, or the top-level module itself."""
    return module.split(".")[1] if module.count(".") else ""


def test_the_graph_sees_what_python_imports() -> None:
    """The checks below are only as good as the graph: it resolves relative imports, sees
    function bodies, skips TYPE_CHECKING blocks, and adds the package of a submodule."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "from . import layout\n"
        "from ..vector_index.versions import open_index\n"
        "if TYPE_CHECKING:\n"
        "    from tiefvision_core.locator.model_files import LocatorModel\n"
        "def f():\n"
        "    import tiefvision_core.encoders\n"
    )
    modules = _module_files()
    name = "tiefvision_core.storage.lock"
    seen = [
        (sorted(_targets(node, name, False, modules)), in_function)
        for node, in_function in _runtime_imports(tree)
    ]
    assert seen == [
        ([], False),  # typing is not a project module
        (["tiefvision_core.storage.layout"], False),
        (["tiefvision_core.vector_index", "tiefvision_core.vector_index.versions"], False),
        (["tiefvision_core.encoders"], True),
    ]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_project_modules() -> None:
    """A cycle makes import order matter (a half-initialised module, an ImportError on a
    refactor): each module may only import what sits below it."""
    graph, _ = _import_graph()
    assert "tiefvision_core.encoders._api" in graph
    assert not _cycles(graph), "\n".join(" ↔ ".join(c) for c in _cycles(graph))


def test_no_function_level_import_between_core_stages() -> None:
    """A stage reaching into another from inside a function hides a dependency the module's
    imports should state: what one stage needs from another is passed in, or lives below
    both (a function-level import inside one stage, for cold start, is fine)."""
    _, in_functions = _import_graph()
    offending = [
        f"{importer}:{line} imports {imported}"
        for importer, line, imported in in_functions
        if importer.startswith("tiefvision_core.")
        and imported.startswith("tiefvision_core.")
        and _stage(importer) != _stage(imported)
    ]
    assert not offending, "\n".join(offending)


# -- child processes --------------------------------------------------------------------------

#: The modules that start child processes; each ties them to the command's life through
#: ``tiefvision_core.processes``, so a SIGKILLed command leaves none behind.
_PROCESS_STARTERS = {"tiefvision_core.encoding.runtime", "tiefvision_cli.prefect_server"}
_PROCESS_MODULES = ("multiprocessing", "subprocess")
_PROCESS_NAMES = {"ProcessPoolExecutor", "DataLoader"}
_OS_SPAWNS = {"fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "popen", "spawnv"}


def _starts_processes(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, what) for each way the module could start a process: importing
    multiprocessing or subprocess, a process pool or a DataLoader (its workers), or
    calling one of ``os``'s spawning functions."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            modules += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
            found += [
                (node.lineno, module)
                for module in modules
                if module.split(".")[0] in _PROCESS_MODULES
            ]
            found += [(node.lineno, name) for name in names if name in _PROCESS_NAMES]
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in _OS_SPAWNS
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            found.append((node.lineno, f"os.{node.attr}"))
    return found


def test_the_process_check_sees_each_way_to_start_one() -> None:
    tree = ast.parse(
        "import subprocess\n"
        "from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor\n"
        "from torch.utils.data import DataLoader\n"
        "import multiprocessing.pool\n"
        "def f():\n"
        "    os.fork()\n"
    )
    assert [what for _, what in _starts_processes(tree)] == [
        "subprocess",
        "ProcessPoolExecutor",
        "DataLoader",
        "multiprocessing.pool",
        "os.fork",
    ]


def test_child_processes_start_only_where_they_die_with_the_command() -> None:
    """Every command that encodes (encode, train-locator, locate, search, reindex) does it
    through ``EncodingRuntime``, whose processes exit with the command, SIGKILL included
    (tests/flows/test_encode_flow.py kills one); a module starting processes of its own
    would need the same care (``tiefvision_core.processes``) and a place in this list."""
    starters = {
        name: found
        for name, path in _module_files().items()
        if (found := _starts_processes(ast.parse(path.read_text(), filename=str(path))))
    }
    assert set(starters) == _PROCESS_STARTERS, starters


# -- the command line -------------------------------------------------------------------------

#: What the CLI may not hand on through the environment: our own settings, which a command
#: passes to what it calls as arguments (Prefect's own settings, read by its threads and
#: child processes, are the documented exception in tiefvision_cli/prefect_server.py).
_HANDED_OFF = "TIEFVISION_"
_ENVIRON_WRITES = {"setdefault", "update", "__setitem__"}


def _is_environ(node: ast.expr) -> bool:
    """``os.environ`` (or ``environ`` imported from os)."""
    return (isinstance(node, ast.Name) and node.id == "environ") or (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _written_keys(node: ast.AST) -> list[str | None]:
    """The environment variables a node writes: their names, None where the name is not
    a literal (it cannot be checked, so it counts as a hand-off)."""

    def name(key: ast.expr | None) -> str | None:
        return key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else None

    if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [
            name(target.slice)
            for target in targets
            if isinstance(target, ast.Subscript) and _is_environ(target.value)
        ]
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return []
    if node.func.attr == "putenv" or (
        node.func.attr in _ENVIRON_WRITES and _is_environ(node.func.value)
    ):
        if node.func.attr == "update":
            mappings = [arg for arg in node.args if isinstance(arg, ast.Dict)]
            keys = [name(key) for mapping in mappings for key in mapping.keys]
            unknown = len(mappings) < len(node.args)  # a mapping built elsewhere
            return [*keys, *[kw.arg for kw in node.keywords], *([None] if unknown else [])]
        return [name(node.args[0]) if node.args else None]
    return []


def _environment_hand_offs(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, variable) for each write of a TIEFVISION_* variable (or of one whose name is
    not a literal) to the process environment."""
    return sorted(
        (getattr(node, "lineno", 0), key or "<not a literal>")
        for node in ast.walk(tree)
        for key in _written_keys(node)
        if key is None or key.startswith(_HANDED_OFF)
    )


def test_the_hand_off_check_sees_each_way_to_write_the_environment() -> None:
    tree = ast.parse(
        "import os\n"
        "from os import environ\n"
        "def f(database, name):\n"
        "    if database:\n"
        "        os.environ['TIEFVISION_DATABASE_URL'] = database\n"
        "    environ['TIEFVISION_STORE_URL'] = 's3://b/p'\n"
        "    os.environ.setdefault('TIEFVISION_DEVICE', 'cpu')\n"
        "    os.environ.update({'TIEFVISION_ENCODER': 'x', 'PREFECT_HOME': '/tmp'})\n"
        "    os.environ.update(TIEFVISION_BACKEND='torch')\n"
        "    os.putenv('TIEFVISION_RETENTION', '3')\n"
        "    os.environ[name] = '1'\n"
        "    os.environ['PREFECT_API_URL'] = 'http://127.0.0.1:1/api'\n"
        "    os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')\n"
        "    value = os.environ.get('TIEFVISION_DEVICE')\n"
    )
    assert _environment_hand_offs(tree) == [
        (5, "TIEFVISION_DATABASE_URL"),
        (6, "TIEFVISION_STORE_URL"),
        (7, "TIEFVISION_DEVICE"),
        (8, "TIEFVISION_ENCODER"),
        (9, "TIEFVISION_BACKEND"),
        (10, "TIEFVISION_RETENTION"),
        (11, "<not a literal>"),
    ]


def test_the_cli_hands_no_setting_to_flows_through_the_environment() -> None:
    """A value the CLI puts in ``os.environ`` for a flow to find is a parameter nobody can
    see: it outlives the call, leaks into every later flow of the process and into child
    processes, and the flow's signature does not say it reads it. ``--database`` reaches
    the training flows as an argument (a ``SecretStr``, masked in the run's parameters)."""
    files = sorted((ROOT / "tiefvision_cli").rglob("*.py"))
    assert files, "no tiefvision_cli sources found"
    offending = [
        f"{path.relative_to(ROOT)}:{line} writes {key} to os.environ"
        for path in files
        for line, key in _environment_hand_offs(ast.parse(path.read_text(), filename=str(path)))
    ]
    assert not offending, "\n".join(offending)


#: The most lines a module of the command line may have (issue 31: no module over 600).
_CLI_MODULE_LINES = 600


def test_no_cli_module_over_600_lines() -> None:
    """The command line is one small module per command group (tiefvision_cli/commands/),
    not one file of every command: a module past this size is two groups in one."""
    files = sorted((ROOT / "tiefvision_cli").rglob("*.py"))
    assert files, "no tiefvision_cli sources found"
    too_long = {
        str(path.relative_to(ROOT)): lines
        for path in files
        if (lines := len(path.read_text().splitlines())) > _CLI_MODULE_LINES
    }
    assert not too_long, too_long


# -- size and layering of the packages ----------------------------------------------------------

#: The most lines one module may have (issue 31): past it, a module holds two things.
_MODULE_LINES = 600
#: Every package of the project whose modules count, the benches included.
_SIZED_PACKAGES = (*_PACKAGES, "bench")
#: Modules over the limit while they are being split in another change; each must still be
#: over it (a stale entry fails), so the list only ever shrinks.
_KNOWN_OVER: frozenset[str] = frozenset()


def test_no_module_over_600_lines() -> None:
    """A module past 600 lines is two responsibilities in one file: split it by what it
    does (see how storage/stores, annotations/store, now annotations/repository, or
    encoding/runtime were split)."""
    files = [path for package in _SIZED_PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    assert files, "no project sources found"
    lines = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in files}
    too_long = {name: n for name, n in lines.items() if n > _MODULE_LINES}
    assert set(too_long) <= _KNOWN_OVER, {n: too_long[n] for n in set(too_long) - _KNOWN_OVER}
    stale = sorted(name for name in _KNOWN_OVER if lines.get(name, 0) <= _MODULE_LINES)
    assert not stale, f"no longer over {_MODULE_LINES} lines: remove from _KNOWN_OVER: {stale}"


#: How many modules ``tiefvision_core`` may hold beside its stage packages (issue 31).
_CORE_TOP_LEVEL_MODULES = 8


def test_core_holds_few_top_level_modules() -> None:
    """What belongs to a stage lives in that stage's package; the top level keeps only what
    every stage shares (settings, errors, paths, processes …)."""
    top = sorted(p.name for p in (ROOT / "tiefvision_core").glob("*.py") if p.name != "__init__.py")
    assert top, "no tiefvision_core modules found"
    assert len(top) <= _CORE_TOP_LEVEL_MODULES, top


#: The storage-level index: FAISS kinds and vectors, versions on storage, the CURRENT pointer.
_LOW_INDEX = "tiefvision_core.vector_index"
#: What builds on it and so must never be imported by it: the index stage (gate, spaces,
#: updates, search), evaluation (which the gate uses), similarity, and the cross-stage runs.
_ABOVE_LOW_INDEX = (
    "tiefvision_core.index",
    "tiefvision_core.evaluation",
    "tiefvision_core.similarity",
    "tiefvision_core.pipeline",
)


def _all_imports(path: Path, module: str, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, project module) of every import in the file, TYPE_CHECKING blocks and function
    bodies included: a type-only import still draws the arrow a reader follows."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    return [
        (node.lineno, target)
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for target in sorted(_targets(node, module, is_package, modules))
    ]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def test_the_low_level_index_imports_nothing_above_it() -> None:
    """Evaluation and similarity read index versions; the index stage's gate scores a
    version as evaluation does. With the versions in ``tiefvision_core.vector_index`` every
    one of those arrows points down: an import from it back up into the index stage,
    evaluation or similarity would close the loop again."""
    modules = _module_files()
    low = {name: path for name, path in modules.items() if _within(name, _LOW_INDEX)}
    assert f"{_LOW_INDEX}.versions" in low, "the storage-level index package moved"
    offending = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for name, path in sorted(low.items())
        for line, target in _all_imports(path, name, modules)
        if any(_within(target, above) for above in _ABOVE_LOW_INDEX)
    ]
    assert not offending, "\n".join(offending)


def test_evaluation_and_similarity_import_nothing_from_the_index_stage() -> None:
    """The index stage (its regression gate) uses evaluation and similarity, so they sit
    below it: what they need of an index is the storage-level ``vector_index``."""
    modules = _module_files()
    below = ("tiefvision_core.evaluation", "tiefvision_core.similarity")
    checked = {name: path for name, path in modules.items() if any(_within(name, b) for b in below)}
    assert "tiefvision_core.evaluation.spaces" in checked, "evaluation moved"
    offending = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for name, path in sorted(checked.items())
        for line, target in _all_imports(path, name, modules)
        if _within(target, "tiefvision_core.index")
    ]
    assert not offending, "\n".join(offending)


# -- only the surface that is used ----------------------------------------------------------------

#: Where no module may reach into another's private names or rename what it imports: the
#: project's packages and the benches. The tests rename nothing either, and have a rule of
#: their own for private names: a test may use those of the module it tests, no others
#: (see :func:`_test_private_imports`).
_SURFACE_CHECKED = (*_PACKAGES, "bench")


def _project_modules() -> set[str]:
    """Every importable name of a project module: dotted from the repository root (tests
    and benches included), and bare for the benches, which put ``bench/`` on ``sys.path``
    and import each other by file name (``from _common import …``)."""
    names: set[str] = set()
    for package in (*_PACKAGES, "bench", "tests"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names.add(".".join(parts))
            if package == "bench" and len(parts) == 2:
                names.add(parts[1])
    return names


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _from_module(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a ``from … import`` reads, a relative one resolved against ``module``."""
    if not node.level:
        return node.module or ""
    anchor = module.split(".")
    anchor = anchor if is_package else anchor[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, *([node.module] if node.module else [])])


def _private_imports(
    tree: ast.Module, module: str, is_package: bool, known: set[str]
) -> list[tuple[int, str]]:
    """(line, what) for each private name of another project module the file uses:
    ``from x import _y`` and ``x._y`` on an imported project module. A module whose file
    name starts with an underscore (``bench/_common.py``, ``encoders/_api.py``) is a
    module, not a private name: importing it is fine, its private names are not."""
    found: list[tuple[int, str]] = []
    bound: dict[str, str] = {}  # a name the file binds → the project module it names
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known or alias.name.split(".")[0] in known:
                    top = alias.name if alias.asname else alias.name.split(".")[0]
                    bound[alias.asname or top] = top
        elif isinstance(node, ast.ImportFrom):
            base = _from_module(node, module, is_package)
            if base not in known:
                continue
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    bound[alias.asname or alias.name] = f"{base}.{alias.name}"
                elif _is_private(alias.name):
                    found.append((node.lineno, f"from {base} import {alias.name}"))

    def named(node: ast.expr) -> str | None:
        """The project module an expression names, if it is one."""
        if isinstance(node, ast.Name):
            return bound.get(node.id)
        if isinstance(node, ast.Attribute) and (outer := named(node.value)):
            inner = f"{outer}.{node.attr}"
            return inner if inner in known else None
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            owner = named(node.value)
            if owner and f"{owner}.{node.attr}" not in known:
                found.append((node.lineno, f"{owner}.{node.attr}"))
    return sorted(found)


def _surface_files(packages: tuple[str, ...] = _SURFACE_CHECKED) -> list[tuple[str, Path]]:
    """(dotted module, file) for every module of ``packages`` (by default, those the surface
    checks cover)."""
    files: list[tuple[str, Path]] = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files.append((".".join(parts), path))
    return files


def test_the_private_name_check_sees_each_way_in() -> None:
    tree = ast.parse(
        "import tiefvision_core.index.search\n"
        "import tiefvision_core.vector_index.vectors as vectors\n"
        "from tiefvision_core.index import models\n"
        "from tiefvision_core.vector_index.vectors import _compact, IndexConfig\n"
        "from . import _private_helper, layout\n"
        "from _common import _cached, ingest_once\n"
        "from tiefvision_core.encoders import _api\n"
        "from numpy import _core\n"
        "def f(box, x):\n"
        "    tiefvision_core.index.search._ints(box)\n"
        "    vectors._compact(x)\n"
        "    models._cache.clear()\n"
        "    layout.__all__\n"
        "    _api.Encoder\n"
        "    x._private\n"
    )
    found = _private_imports(tree, "tiefvision_core.storage.lock", False, _project_modules())
    assert found == [
        (4, "from tiefvision_core.vector_index.vectors import _compact"),
        (5, "from tiefvision_core.storage import _private_helper"),
        (6, "from _common import _cached"),
        (10, "tiefvision_core.index.search._ints"),
        (11, "tiefvision_core.vector_index.vectors._compact"),
        (12, "tiefvision_core.index.models._cache"),
    ]


def _surface_findings(
    check: Callable[[ast.Module, str, bool, set[str]], list[tuple[int, str]]],
    packages: tuple[str, ...] = _SURFACE_CHECKED,
) -> list[str]:
    """``path:line what`` for each finding of ``check`` (tree, module, is a package,
    project modules) over the modules of ``packages``."""
    known = _project_modules()
    return [
        f"{path.relative_to(ROOT)}:{line} {what}"
        for module, path in _surface_files(packages)
        for line, what in check(
            ast.parse(path.read_text(), filename=str(path)),
            module,
            path.name == "__init__.py",
            known,
        )
    ]


def test_no_private_name_imported_from_another_module() -> None:
    """A private name is free to change with its module: a second module using it (the web
    service, a bench) breaks silently when it does. What two modules share is public in one
    of them, or moves to where both can import it. The tests have their own rule (below): a
    test of one module's private helper may import it, though testing through the public
    API that uses it is preferred."""
    offending = _surface_findings(_private_imports)
    assert not offending, "\n".join(offending)


#: Test modules that test a production module other than their namesake (or reach into one
#: for a piece nothing public shows), so may use its private names: (test module, production
#: module) → why. Each entry must still be used (a stale one fails): the list only shrinks.
_TESTS_REACHING_IN: dict[tuple[str, str], str] = {
    ("tests.core.encoders.test_geometry_cache", "tiefvision_core.encoders.geometry"): (
        "the geometry module's own tests, named for its disk cache: that the one-channel "
        "shortcut refuses a layer mixing channels (_single_channel of _linearise raising "
        "_NeedsChannels) is invisible from measure_geometry, which then measures at full width"
    ),
    ("tests.core.storage.test_store_lock", "tiefvision_core.storage.lock"): (
        "the lock module's own tests, named for StoreLock: a dead holder's record carries this "
        "machine's process space (_process_space), which only acquire writes, so that it is "
        "taken over at once; tests/flows/test_store_lock_flows.py uses its dead_holder"
    ),
    ("tests.core.locator.test_training", "tiefvision_core.locator.crops"): (
        "training's inputs are the window labels and targets the crops stage stores; "
        "_windows_for builds them for one hand-made photo, where the public finish_crops "
        "needs an encoder and a store of encoded maps"
    ),
    ("tests.web.test_search_path", "tiefvision_core.catalog.imaging"): (
        "counts how often an upload is opened and decoded by spying on _open (the header "
        "look, with its pixel limit) and _load (the decode): nothing public tells a second "
        "decode from the first"
    ),
}


def _tested_module(module: str) -> str | None:
    """The production module a test module tests, by its name: ``tests.core.x.test_y`` tests
    ``tiefvision_core.x.y``; None for the other tests (flows, web, command line)."""
    parts = module.split(".")
    if parts[:2] != ["tests", "core"] or not parts[-1].startswith("test_"):
        return None
    return ".".join(["tiefvision_core", *parts[2:-1], parts[-1].removeprefix("test_")])


def _private_owner(what: str) -> str:
    """The module whose private name a finding of :func:`_private_imports` names."""
    return what.split()[1] if what.startswith("from ") else what.rsplit(".", 1)[0]


def _test_private_imports(
    tree: ast.Module, module: str, is_package: bool, known: set[str]
) -> list[tuple[int, str]]:
    """:func:`_private_imports` of a test module, less the private names of the production
    module it tests (:func:`_tested_module`, or an entry of :data:`_TESTS_REACHING_IN`).
    Another test module's private names are never its to use."""
    tested = {_tested_module(module)} | {m for t, m in _TESTS_REACHING_IN if t == module}
    return [
        (line, what)
        for line, what in _private_imports(tree, module, is_package, known)
        if _private_owner(what) not in tested
    ]


def test_the_test_private_name_check_sees_a_test_reaching_into_another() -> None:
    tree = ast.parse(
        "import tests.core.locator.test_locator\n"
        "import tiefvision_core.catalog.imaging\n"
        "from tests.test_cli import _run, CLI\n"
        "from tests.cli import run_cli\n"
        "from tiefvision_core.storage.layout import _private\n"
        "from tiefvision_core.storage.lock import _process_space\n"
        "def f():\n"
        "    tests.core.locator.test_locator._saved_locator()\n"
        "    tiefvision_core.catalog.imaging._load\n"
    )
    assert _tested_module("tests.core.storage.test_layout") == "tiefvision_core.storage.layout"
    assert _tested_module("tests.core.test_processes") == "tiefvision_core.processes"
    assert _tested_module("tests.web.test_search_path") is None
    known = _project_modules()
    assert _test_private_imports(tree, "tests.core.storage.test_layout", False, known) == [
        (3, "from tests.test_cli import _run"),
        (6, "from tiefvision_core.storage.lock import _process_space"),
        (8, "tests.core.locator.test_locator._saved_locator"),
        (9, "tiefvision_core.catalog.imaging._load"),
    ]
    assert _test_private_imports(tree, "tests.web.test_search_path", False, known) == [
        (3, "from tests.test_cli import _run"),
        (5, "from tiefvision_core.storage.layout import _private"),
        (6, "from tiefvision_core.storage.lock import _process_space"),
        (8, "tests.core.locator.test_locator._saved_locator"),
    ]


def test_no_test_uses_private_names_but_those_of_what_it_tests() -> None:
    """A unit test of a module may test its private helpers (``tests/core/x/test_y.py`` those
    of ``tiefvision_core.x.y``); anything else a test needs of another module goes through
    that module's public API, or is listed in :data:`_TESTS_REACHING_IN` with its reason. A
    helper two test modules share is public, in a helper module (``tests/cli.py``,
    ``tests/locators.py``) or under a public name where it is defined."""
    offending = _surface_findings(_test_private_imports, ("tests",))
    assert not offending, "\n".join(offending)
    known = _project_modules()
    used = {
        (test, _private_owner(what))
        for test in {test for test, _ in _TESTS_REACHING_IN}
        for _, what in _private_imports(
            ast.parse(ROOT.joinpath(*test.split(".")).with_suffix(".py").read_text()),
            test,
            False,
            known,
        )
    }
    stale = sorted(set(_TESTS_REACHING_IN) - used)
    assert not stale, f"no private name used any more: remove from _TESTS_REACHING_IN: {stale}"


def _renaming_imports(
    tree: ast.Module, module: str, is_package: bool, known: set[str]
) -> list[tuple[int, str]]:
    """(line, what) for each import that gives a project module or name another name
    (``import a.b as c``, ``from a import b as c``); ``as`` repeating the name is no
    renaming, and third-party aliases (``numpy as np``) are left alone."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, f"import {alias.name} as {alias.asname}")
                for alias in node.names
                if alias.asname
                and alias.asname != alias.name.split(".")[-1]
                and (alias.name in known or alias.name.split(".")[0] in known)
            ]
        elif isinstance(node, ast.ImportFrom):
            base = _from_module(node, module, is_package)
            if base in known:
                found += [
                    (node.lineno, f"from {base} import {alias.name} as {alias.asname}")
                    for alias in node.names
                    if alias.asname and alias.asname != alias.name
                ]
    return sorted(found)


def test_the_renaming_check_sees_each_way_to_rename() -> None:
    tree = ast.parse(
        "import numpy as np\n"
        "import tiefvision_core.index.spaces as spaces\n"
        "import tiefvision_core.index.spaces as index_spaces\n"
        "from tiefvision_core.encoding import shards as encoding_store\n"
        "from tiefvision_core.catalog.ingest import ingest_catalog as ingest\n"
        "from . import layout as keys\n"
        "from generalisation import pick as choose\n"
        "from pyarrow import parquet as pq\n"
        "import commands\n"
    )
    found = _renaming_imports(tree, "tiefvision_core.storage.lock", False, _project_modules())
    assert found == [
        (3, "import tiefvision_core.index.spaces as index_spaces"),
        (4, "from tiefvision_core.encoding import shards as encoding_store"),
        (5, "from tiefvision_core.catalog.ingest import ingest_catalog as ingest"),
        (6, "from tiefvision_core.storage import layout as keys"),
        (7, "from generalisation import pick as choose"),
    ]


def test_no_import_renames_a_project_module_or_name() -> None:
    """One thing, one name: ``shards as encoding_store`` makes a reader look for a module
    that does not exist, and a grep for the real name miss the caller. Where a name would
    clash, import the module and write ``module.name``. The tests too: a monkeypatch names
    the module it patches (``monkeypatch.setattr(flows.reindex, "encode", …)``)."""
    offending = _surface_findings(_renaming_imports, (*_SURFACE_CHECKED, "tests"))
    assert not offending, "\n".join(offending)


# -- the catalog a run reads --------------------------------------------------------------------


def _manifest_fallbacks(tree: ast.Module) -> list[int]:
    """Lines of ``X if manifest is None else manifest``: a manifest handed from call to call
    and read again wherever it was not handed on."""
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.IfExp)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "manifest"
        and len(node.test.ops) == 1
        and isinstance(node.test.ops[0], ast.Is)
        and isinstance(node.test.comparators[0], ast.Constant)
        and node.test.comparators[0].value is None
        and isinstance(node.orelse, ast.Name)
        and node.orelse.id == "manifest"
    ]


def test_the_fallback_check_sees_the_pattern() -> None:
    tree = ast.parse(
        "manifest = read_manifest(store) if manifest is None else manifest\n"
        "table = manifest if manifest is not None else None\n"
        "x = catalog.manifest\n"
    )
    assert _manifest_fallbacks(tree) == [1]


def test_no_stage_reads_the_manifest_a_run_did_not_hand_on() -> None:
    """The stages of a run share its catalog snapshot (``tiefvision_core.catalog.snapshot``:
    one manifest version, read once, with the located boxes derived from it), passed as
    ``catalog=`` or found by the run's key (``tiefvision_core.run``) — not a manifest table
    threaded by hand and re-read, each in its own way, where a caller did not pass it."""
    offending = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _module_files().values()
        for line in _manifest_fallbacks(ast.parse(path.read_text(), filename=str(path)))
    ]
    assert not offending, "\n".join(offending)


#: The one package whose ``__init__`` is its way in: importing it registers the encoder
#: families (as torchvision's models do), and ``get_encoder`` is found there.
_REGISTRY_PACKAGES = {"tiefvision_core.encoders"}


def _only_a_docstring(tree: ast.Module) -> bool:
    return all(
        isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and i == 0
        for i, node in enumerate(tree.body)
    )


def test_core_packages_re_export_nothing() -> None:
    """A package's ``__init__`` says what the package holds and nothing else: callers import
    the module that defines a name (one way in, found by grep), and importing a package
    loads none of its modules (a search by id never imports torch)."""
    inits = {
        name: path
        for name, path in _module_files().items()
        if path.name == "__init__.py" and name.startswith("tiefvision_core.")
    }
    assert "tiefvision_core.index" in inits, "no tiefvision_core packages found"
    offending = sorted(
        str(path.relative_to(ROOT))
        for name, path in inits.items()
        if name not in _REGISTRY_PACKAGES
        and not _only_a_docstring(ast.parse(path.read_text(), filename=str(path)))
    )
    assert not offending, f"__init__ beyond a docstring: {offending}"


# -- each stage's parameters, declared once ----------------------------------------------------


def _decorator_name(node: ast.expr) -> str:
    """``flow`` for ``@flow(...)``, ``@flow`` and ``@prefect.flow(...)``."""
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Attribute):
        return target.attr
    return target.id if isinstance(target, ast.Name) else ""


def _stage_flows(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    """The module's flows built by ``stage_flow``, by name."""
    return {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any(_decorator_name(d) == "stage_flow" for d in node.decorator_list)
    }


def _parameter_findings(tree: ast.Module, flow_names: set[str]) -> list[tuple[int, str]]:
    """What spells a stage's parameters outside its model: a plain ``@flow`` (its signature
    declares them), a stage body taking more than the model, and a call of a flow with
    parameters written out by name instead of ``**parameters.arguments…()``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names = {_decorator_name(d) for d in node.decorator_list}
            if "flow" in names:
                found.append((node.lineno, f"@flow on {node.name}: use stage_flow(Model)"))
            if "stage_flow" in names and len(node.args.args) + len(node.args.kwonlyargs) != 1:
                found.append((node.lineno, f"{node.name} takes more than its parameters model"))
        elif isinstance(node, ast.Call) and _decorator_name(node) in flow_names:
            spelled = [k.arg for k in node.keywords if k.arg is not None]
            if spelled:
                found.append((node.lineno, f"{_decorator_name(node)}({', '.join(spelled)}=…)"))
    return found


def test_the_parameter_check_sees_each_way_to_spell_them_again() -> None:
    tree = ast.parse(
        "@flow(name='x')\ndef x(store=None): ...\n"
        "@stage_flow(M)\ndef y(parameters, extra): ...\n"
        "@stage_flow(M)\ndef z(parameters): ...\n"
        "flows.encode.encode(store=url, kind='box')\n"
        "encode(**given.arguments_for(EncodeParameters, kind='box'))\n"
    )
    assert sorted(_stage_flows(tree)) == ["y", "z"]
    assert [line for line, _ in _parameter_findings(tree, {"encode"})] == [2, 4, 7]


def test_each_stage_declares_its_parameters_once() -> None:
    """A stage's parameters are its model (``tiefvision_core.parameters.stages``): the
    flow's signature and the command's options are derived from it, and flows are started
    with the model's arguments, so a parameter is never written again in a flow, a subflow
    call or a command."""
    flow_files = sorted((ROOT / "flows").glob("*.py"))
    flow_names = {name for path in flow_files for name in _stage_flows(ast.parse(path.read_text()))}
    assert {"encode", "reindex", "rebuild_index"} <= flow_names, "no stage flows found"
    files = [*flow_files, *sorted((ROOT / "tiefvision_cli").rglob("*.py"))]
    offending = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in files
        for line, what in _parameter_findings(ast.parse(path.read_text()), flow_names)
    ]
    assert not offending, "\n".join(offending)
