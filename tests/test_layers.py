"""The house rules a reader of the tree relies on: imports go one way down the layers, with no circles, the
project's own imports sit at module top, `import realness` and `realness --help` stay light, and ruff is clean."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("realness", "describe")
# Where the project's own imports may stay inside functions: the command line imports each command's modules
# when that command runs (they pull torch), and the packages' lazy `__getattr__` keeps `import realness` light.
LAZY_ALLOWED = {"realness/cli.py", "realness/__init__.py", "realness/dream/__init__.py"}


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_the_layer_and_no_circle_contracts_hold():
    """import-linter's layers contract (nothing imports a layer above it) and acyclic-siblings contract
    (no import circle between the modules of one package), over every import, also those in functions. In its
    own process: import-linter's logging setup disables every logger that exists (the project's too)."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True, no_logo=True))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-4000:]


def test_every_module_sits_in_a_layer():
    """A new module the layers do not name would escape the contract."""
    named = {name.strip() for layer in _contracts()[0]["layers"] for name in layer.split(":")}
    modules = {f"realness.{p.stem if p.is_file() else p.name}" for p in (ROOT / "realness").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert modules - named == set(), f"add these to a layer in pyproject.toml: {sorted(modules - named)}"
    assert {"describe"} <= named


def test_the_projects_own_imports_are_at_module_top():
    """The graph is readable from each file's head: realness / describe imports inside functions only where
    LAZY_ALLOWED says why."""
    inside = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in LAZY_ALLOWED:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    for sub in ast.walk(node):
                        if isinstance(sub, ast.ImportFrom) and (sub.module or "").split(".")[0] in PACKAGES:
                            inside.append(f"{rel}:{sub.lineno} from {sub.module}")
    assert inside == []


@pytest.mark.parametrize("code", ["import realness", "import describe",
                                  "from realness.cli import main; main(['--help'])"])
def test_import_and_help_stay_light(code):
    """No torch, transformers or numpy behind `import realness` or `realness --help` (they take seconds)."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in ('torch', 'transformers', 'numpy', 'vllm', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_ruff_is_clean():
    """The linter (configured in pyproject.toml) finds nothing in the project's code."""
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "realness", "describe", "training",
                          "eval", "tests"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-4000:]


def test_every_command_explains_itself():
    """`realness COMMAND --help` works for every command of the table (a stray % in a help text once broke
    `realness eval --help`) and documents --config and --verbose."""
    import contextlib
    import io

    from realness.cli import COMMANDS, main

    for name in COMMANDS:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0, name
        assert "--config" in out.getvalue() and "--verbose" in out.getvalue(), name
