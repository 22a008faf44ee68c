"""The layer rules hold, and a wrong-way import breaks them.

The rules themselves are import-linter contracts in ``pyproject.toml``; CI runs
``lint-imports`` on the tree. Here the real linter runs on a copy of the
package with one wrong-way import added, and must refuse it.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return text[text.index("[tool.importlinter]"):]


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    (tree / "pyproject.toml").write_text(_contracts())
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "sidecar", tmp_path / "sidecar", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _add_import(tree: Path, module: str, line: str) -> None:
    path = tree / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{line}  # a wrong-way import\n")


def test_the_package_keeps_its_contracts(package_copy: Path) -> None:
    result = _lint(package_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


@pytest.mark.parametrize(("module", "line", "expected"), [
    ("sidecar.domain.errors", "from sidecar.transport import runtime", "sidecar.domain.errors -> sidecar.transport.runtime"),
    ("sidecar.service.usecases", "from sidecar.telemetry import metrics",
     "sidecar.service.usecases -> sidecar.telemetry.metrics"),
    ("sidecar.domain.identity", "import grpc", "sidecar.domain.identity -> grpc"),
    ("sidecar.ops.rotation", "import grpc", "sidecar.ops.rotation -> grpc"),
    ("sidecar.transport.admission", "import prometheus_client", "sidecar.transport.admission -> prometheus_client"),
    ("sidecar.telemetry.audit", "from sidecar.cli import config", "sidecar.telemetry.audit -> sidecar.cli.config"),
])
def test_a_wrong_way_import_breaks_the_build(package_copy: Path, module: str, line: str, expected: str) -> None:
    _add_import(package_copy, module, line)
    result = _lint(package_copy)
    assert result.returncode != 0
    assert expected in result.stdout, result.stdout


def _imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_only_the_fast_path_reaches_into_grpc_private_layer() -> None:
    """import-linter cannot name ``grpc._cython`` (a subpackage of an external package): checked here."""
    users = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "sidecar").rglob("*.py")
                   if any(name == "grpc._cython" or name.startswith("grpc._cython.") for name in _imports_of(p)))
    assert users == ["sidecar/transport/fastpath.py"]
