"""The layer contracts of ARCHITECTURE §1, checked by import-linter as part of the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The domain is pure" in result.stdout
    assert "0 broken" in result.stdout


def test_domain_imports_only_the_standard_library_and_errors() -> None:
    # A second, independent look: parse every domain module's imports.
    import ast

    allowed_roots = set(sys.stdlib_module_names) | {"coffer"}
    for path in (ROOT / "src" / "coffer" / "domain").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed_roots, f"{path.name} imports {name}"
                if name.startswith("coffer."):
                    assert name.startswith(("coffer.domain", "coffer.errors")), (path.name, name)
