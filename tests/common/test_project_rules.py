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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> our modules it imports, anywhere in the file (lazy imports in functions too)."""
    files = {
        _module_name(path): path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "proto" not in path.parts
    }
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    base = ".".join([*anchor, *([base] if base else [])])
                # ``from pkg import mod`` imports the module pkg.mod when there is one
                targets = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in files]
                targets = targets or [base]
            else:
                continue
            edges |= {t for t in targets if t in files and t != name}
        graph[name] = edges
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles_even_through_lazy_imports():
    graph = _import_graph()
    assert len(graph) > 50 and "benchmarks.bench.resources" in graph["benchmarks.bench.command"]
    cycle = _find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_lazy_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_type_ignores_without_a_type_checker():
    offenders = [
        f"{path.relative_to(ROOT)}:{i}"
        for package in (*PACKAGES, "tests")
        for path in (ROOT / package).rglob("*.py")
        if "proto" not in path.parts
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if "# type: " + "ignore" in line
    ]
    assert offenders == [], "no type checker runs here: drop the comment or fix the code"


def test_forward_passes_use_the_current_cache_argument():
    # transformers 5.24 deprecates ``past_key_values=`` (removed in 5.40): the argument is ``cache``
    offenders = [
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "past_key_values" + "=" in path.read_text()
    ]
    assert offenders == []


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
