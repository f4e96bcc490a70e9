"""Project rules that would silently rot: layout, hardware seam, generated code, lint."""

from __future__ import annotations

import ast
import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "cloud_server", "device_client", "benchmarks")


def _imports(package: str) -> set[str]:
    """Top-level names of our packages imported anywhere in ``package``."""
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        if "proto" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


def test_dependency_rule():
    assert _imports("common") == set(), "common imports nothing of ours"
    assert "device_client" not in _imports("cloud_server")
    assert "cloud_server" not in _imports("device_client")


def test_hardware_is_touched_only_in_the_platform_module():
    allowed = ROOT / "common" / "platform.py"
    offenders = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            if path != allowed and any(s in text for s in ("torch.cuda", "torch_npu", "torch.npu")):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_generated_grpc_code_is_current(tmp_path):
    pytest.importorskip("grpc_tools")
    from common.proto.generate import generate

    generate(tmp_path)
    for name in ("pd_pb2.py", "pd_pb2_grpc.py"):
        assert filecmp.cmp(tmp_path / name, ROOT / "common" / "proto" / name, shallow=False), (
            f"{name} is stale: run python -m common.proto.generate"
        )


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_ruff_lint_and_format_are_clean():
    check = subprocess.run(["ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run(
        ["ruff", "format", "--check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout


def test_pdd_cli_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.cli", "--help"], capture_output=True, text=True
    )
    for command in ("serve", "generate", "bench", "profile", "tune", "simulate", "gateway"):
        assert command in out.stdout, f"pdd {command} is not registered"
