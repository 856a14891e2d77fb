"""The package's floors: library modules never import a command module; docs/ARCHITECTURE.md names every module."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hms"


def commands() -> set[str]:
    """The modules the README and the docs run with `python -m`, read from the pages themselves."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = set(re.findall(r"python -m (hms(?:\.\w+)+)", "\n".join(p.read_text() for p in pages)))
    assert {"hms.train", "hms.sweep", "hms.predict", "hms.synth", "hms.data"} <= found, found
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_lines(path: Path) -> list[tuple[str, list[str]]]:
    """Each import of a file, at any level (inside functions too), relative imports resolved: (module, names taken
    from it); `import a.b` is ("a.b", [])."""
    inside = ROOT in path.resolve().parents
    package = [] if not inside else module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            out.append((".".join([*base, *(node.module.split(".") if node.module else [])]), [a.name for a in node.names]))
    return out


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any level (inside functions too), relative imports resolved."""
    out = set()
    for stem, names in import_lines(path):
        out.add(stem)
        out.update(f"{stem}.{name}" for name in names)  # `from . import train` imports hms.train
    return out


def reaches(name: str, command: str) -> bool:
    """Importing `name` runs `command`: the command itself, or a module inside a command package."""
    return name == command or name.startswith(command + ".")


def test_no_library_module_imports_a_command():
    commands_ = commands()
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = module_name(path)
        for name in imported(path):
            for command in commands_:
                if reaches(name, command) and not reaches(own, command):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name} (run as `python -m {command}`)")
    assert not offenders, "\n".join(offenders)


def test_the_import_checker_sees_relative_and_nested_imports(tmp_path):
    # The checker itself: a relative import inside a function is found and resolved.
    fake = PACKAGE / "features" / "cache.py"
    names = imported(fake)
    assert "hms.dataset.layout" in names and "hms.features.eeg" in names
    nested = tmp_path / "x.py"
    nested.write_text("def f():\n    from hms.train import main\n")
    assert "hms.train" in imported(nested)


def test_architecture_page_names_every_module():
    page = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    missing = [module_name(p) for p in sorted(PACKAGE.rglob("*.py"))
               if p.name != "__init__.py" or p.parent != PACKAGE
               if module_name(p) not in page]
    assert not missing, f"docs/ARCHITECTURE.md does not name: {missing}"


def library_graph() -> dict[str, set[str]]:
    """hms module -> the hms modules it imports (any level, inside functions too). `from P import m`, where P.m is a
    module, is an edge to P.m alone (P's __init__ has already run, it is not what the line asks for)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = {f"{stem}.{n}" if f"{stem}.{n}" in modules else stem for stem, names in import_lines(path) for n in names or [None]}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a set of modules that import each other."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_no_import_circle_between_modules():
    found = cycles(library_graph())
    assert not found, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_circle_checker_finds_a_planted_circle():
    graph = library_graph()
    graph["hms.features.files"] = graph["hms.features.files"] | {"hms.features.signals"}  # the circle issue 24 removed
    assert ["hms.features.files", "hms.features.signals"] in cycles(graph)


def floors() -> dict[str, int]:
    """Module -> floor number, read from docs/ARCHITECTURE.md's floors table (a package row covers its modules)."""
    page = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    table = page.split("## Library floors", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in table.splitlines():
        match = re.match(r"\|\s*(\d+)\. [^|]*\|([^|]*)\|", line)
        if match:
            for name in re.findall(r"`(hms(?:\.\w+)*)`", match.group(2)):
                out[name] = int(match.group(1))
    return out


def floor_of(module: str, table: dict[str, int]) -> int | None:
    parts = module.split(".")
    for k in range(len(parts), 1, -1):
        if ".".join(parts[:k]) in table:
            return table[".".join(parts[:k])]
    return None


def test_every_library_module_imports_only_its_own_floor_or_below():
    table, commands_ = floors(), commands()
    offenders, unplaced = [], []
    for module, targets in library_graph().items():
        if any(reaches(module, c) for c in commands_) or module == "hms":
            continue
        own = floor_of(module, table)
        if own is None:
            unplaced.append(module)
            continue
        for target in targets:
            there = floor_of(target, table)
            if there is not None and there > own:
                offenders.append(f"{module} (floor {own}) imports {target} (floor {there})")
    assert not unplaced, f"docs/ARCHITECTURE.md's floors table does not place: {unplaced}"
    assert not offenders, "\n".join(offenders)


NO_STATE = """
import importlib, logging, os, pkgutil, sys, warnings
# What the libraries hms uses do to the process when imported (TensorFlow sets environment variables, some add
# warning filters) happens first: what changes after that is hms's own doing.
for library in ("tensorflow", "keras", "cv2", "mlflow", "mlflow.entities", "optuna", "optuna.visualization.matplotlib",
                "hydra", "hydra.core.config_store", "omegaconf", "albumentations", "matplotlib", "matplotlib.figure", "pandas",
                "pyarrow", "pyarrow.parquet", "scipy.signal", "scipy.optimize", "sklearn", "efficientnet.tfkeras", "tqdm", "yaml"):
    importlib.import_module(library)
import hms
before = {"env": dict(os.environ), "filters": list(warnings.filters), "handlers": list(logging.getLogger("hms").handlers),
          "root": list(logging.getLogger().handlers)}
import optuna
verbosity = optuna.logging.get_verbosity()
for info in pkgutil.walk_packages(hms.__path__, "hms."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
from hydra.core.config_store import ConfigStore
import keras
changed = []
if "_hms_schema.yaml" in ConfigStore.instance().repo:
    changed.append("hms.schema's schemas are in Hydra's ConfigStore")
if logging.getLogger("hms").handlers != before["handlers"] or logging.getLogger().handlers != before["root"]:
    changed.append("a log handler was installed")
if list(warnings.filters) != before["filters"]:
    changed.append("warning filters changed")
if dict(os.environ) != before["env"]:
    changed.append("environment changed: " + str(set(os.environ.items()) ^ set(before["env"].items())))
if optuna.logging.get_verbosity() != verbosity:
    changed.append("optuna's verbosity changed")
if keras.mixed_precision.global_policy().name != "float32":
    changed.append("keras' dtype policy changed")
print(changed)
"""


def test_importing_every_module_sets_no_global_state():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", NO_STATE], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


RELATIVE_DEFAULT = re.compile(r"^(sqlite:///[^/].*|[\w.-]+\.db|(\./)?(data|mlruns|sweeps|cache)/.*)$")


def working_directory_defaults(path: Path, root: Path = ROOT) -> list[str]:
    """String constants in a module that name a place relative to the working directory, and Path.cwd()/os.getcwd() calls."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and RELATIVE_DEFAULT.match(node.value):
            found.append(f"{path.relative_to(root)}:{node.lineno} {node.value!r}")
        if isinstance(node, ast.Attribute) and node.attr in ("cwd", "getcwd"):
            found.append(f"{path.relative_to(root)}:{node.lineno} .{node.attr}()")
        if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Path" and node.args
                and isinstance(node.args[0], ast.Constant) and not str(node.args[0].value).startswith("/")):
            found.append(f"{path.relative_to(root)}:{node.lineno} Path({node.args[0].value!r})")
    return found


def test_no_library_module_keeps_a_working_directory_default(tmp_path):
    commands_ = commands()
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) if not any(reaches(module_name(path), c) for c in commands_)
             for hit in working_directory_defaults(path)]
    assert not found, "working-directory defaults in library modules (use the paths group):\n" + "\n".join(found)
    planted = tmp_path / "planted.py"
    planted.write_text('from pathlib import Path\nSWEEPS = Path("sweeps")\nURI = "sqlite:///mlflow.db"\nHERE = Path.cwd()\n'
                       'CACHE = "data/cache"\nGROUP = ("data", "_schema")\n')
    assert sorted(hit.split(" ", 1)[1] for hit in working_directory_defaults(planted, tmp_path)) == sorted([
        "Path('sweeps')", "'sqlite:///mlflow.db'", ".cwd()", "'data/cache'"])
