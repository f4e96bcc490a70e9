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


def test_the_kv_cache_reaches_the_model_on_this_transformers(loaded_model):
    """The vllm extra pins transformers 5.19, whose forward calls the cache ``past_key_values``
    (``cache`` later); a wrong name is swallowed by ``**kwargs`` and the cache is ignored."""
    import torch

    from common.forward import forward_tokens, new_cache

    ids = loaded_model.encode(prompt="Once upon a time there was", raw=True)
    cache = new_cache(loaded_model.model)
    forward_tokens(loaded_model.model, ids[:-2], list(range(len(ids) - 2)), cache)
    chunked = forward_tokens(loaded_model.model, ids[-2:], [len(ids) - 2, len(ids) - 1], cache)
    whole = forward_tokens(
        loaded_model.model, ids, list(range(len(ids))), new_cache(loaded_model.model)
    )
    assert cache.get_seq_length() == len(ids)
    assert torch.allclose(chunked, whole, atol=1e-4)
