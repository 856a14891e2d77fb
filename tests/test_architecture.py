"""The package's floors: library modules never import a command module; docs/ARCHITECTURE.md names every module."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hms"


def commands() -> set[str]:
    """The modules the README runs with `python -m`, read from the README itself."""
    found = set(re.findall(r"python -m (hms(?:\.\w+)+)", (ROOT / "README.md").read_text()))
    assert {"hms.train", "hms.sweep", "hms.predict", "hms.synth", "hms.data"} <= found, found
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any level (inside functions too), relative imports resolved."""
    inside = ROOT in path.resolve().parents
    package = [] if not inside else module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            stem = ".".join([*base, *(node.module.split(".") if node.module else [])])
            out.add(stem)
            out.update(f"{stem}.{alias.name}" for alias in node.names)  # `from . import train` imports hms.train
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
