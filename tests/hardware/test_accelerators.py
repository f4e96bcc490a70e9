"""The same model on an accelerator: the platform seam picks it, and greedy answers agree.

Skipped where the hardware is absent (see ``pytest_collection_modifyitems`` in conftest).
"""

from __future__ import annotations

import pytest

from common.forward import forward_tokens, new_cache
from common.messages import SamplingParams
from common.model import load_model
from common.platform import select_platform
from common.sampling import sample_token

PROMPT = "Explain in one sentence what a prefill is."


def _greedy(lm, num_tokens: int) -> list[int]:
    ids = lm.encode(PROMPT)
    cache = new_cache(lm.model)
    logits = forward_tokens(lm.model, ids, list(range(len(ids))), cache)
    out = []
    for i in range(num_tokens):
        out.append(sample_token(logits, SamplingParams(), i))
        logits = forward_tokens(lm.model, [out[-1]], [len(ids) + i], cache)
    return out


@pytest.mark.parametrize(
    "kind",
    [pytest.param("cuda", marks=pytest.mark.cuda), pytest.param("npu", marks=pytest.mark.npu)],
)
def test_accelerator_answers_like_the_cpu(kind, loaded_model):
    platform = select_platform(kind)
    assert platform.name == kind and platform.device.type == kind
    assert select_platform("auto").name == kind, "auto prefers an accelerator"
    lm = load_model(platform=platform)
    assert lm.fingerprint == loaded_model.fingerprint
    # fp32 on both: the first tokens of a greedy answer agree.
    assert _greedy(lm, 8) == _greedy(loaded_model, 8)
