"""The vLLM engine's model info is read from files; it must agree with the transformers load."""

from __future__ import annotations

from cloud_server.vllm_model import load_served_model


def test_fingerprint_eos_and_context_match_the_loaded_model(loaded_model):
    """A device is refused (or accepted) on vLLM exactly as on the builtin engine."""
    served = load_served_model("smollm2-135m", "vllm-cpu")
    assert served.fingerprint == loaded_model.fingerprint
    assert served.eos_token_ids == loaded_model.eos_token_ids
    assert served.max_context == loaded_model.max_context
    messages = [{"role": "user", "content": "Hi there"}]
    assert served.encode(messages=messages) == loaded_model.encode(messages=messages)
    assert served.encode(prompt="Once upon", raw=True) == loaded_model.encode(
        prompt="Once upon", raw=True
    )
