"""The vLLM-Ascend container file, read statically (no Docker engine or NPU here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile.ascend-vllm"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(maxsplit=1)) for line in lines if line and not line.startswith("#")]


def test_builds_on_vllm_ascend_and_keeps_its_stack():
    steps = instructions()
    assert any(ins == "FROM" and "VLLM_ASCEND_IMAGE" in rest for ins, rest in steps)
    runs = " ".join(rest for ins, rest in steps if ins == "RUN")
    assert "pip install --no-deps ." in runs, "our torch pin must not replace the image's torch-npu"
    assert "-c /tmp/image-constraints.txt" in runs and "pip check" in runs
    assert "torch==" not in runs
    assert "resolve_model_dir('smollm2-135m')" in runs and "TORCH_DEVICE_BACKEND_AUTOLOAD=0" in runs


def test_runs_pdd_serve_on_vllm_as_non_root():
    steps = instructions()
    users = [rest for ins, rest in steps if ins == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    last_user = max(i for i, (ins, _) in enumerate(steps) if ins == "USER")
    assert all(ins != "RUN" for ins, _ in steps[last_user:])
    entry = " ".join(json.loads(next(r for i, r in steps if i == "ENTRYPOINT")))
    assert "exec pdd serve" in entry
    cmd = json.loads([r for i, r in steps if i == "CMD"][-1])
    assert cmd[cmd.index("--engine") + 1] == "vllm" and cmd[cmd.index("--device") + 1] == "npu"
    (check,) = [r for i, r in steps if i == "HEALTHCHECK"]
    assert "/health" in check
