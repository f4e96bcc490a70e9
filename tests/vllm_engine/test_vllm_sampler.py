"""PdSampler, vLLM's side of our seeded sampler, on hand-made batches (no engine needed)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm", reason="vllm is not installed (pip install -e '.[vllm]')")

from vllm import SamplingParams as VllmSamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402

from cloud_server.vllm_sampler import (  # noqa: E402
    FAULT_DIR_ENV,
    PdSampler,
    extra_args_for,
    fault_path,
)
from common.messages import SamplingParams  # noqa: E402
from common.sampling import sample_token  # noqa: E402

VOCAB = 1000
SEEDED = SamplingParams(temperature=0.9, top_p=0.95, top_k=50, seed=7)


def added(index: int, params: SamplingParams, output_ids: list[int], key: str = "", stop: int = 0):
    extra = extra_args_for(params, stop, key)
    vllm_params = VllmSamplingParams(temperature=0.0, extra_args=extra)
    return (index, vllm_params, [1, 2, 3], output_ids)


def update(batch_size: int, added=(), removed=(), moved=()) -> BatchUpdate:
    return BatchUpdate(batch_size=batch_size, removed=removed, added=added, moved=moved)


def test_greedy_rows_carry_nothing_and_are_left_alone():
    assert extra_args_for(SamplingParams()) is None
    sampler = PdSampler(None, torch.device("cpu"), False)
    sampler.update_state(update(1, added=[added(0, SamplingParams(), [])]))
    logits = torch.randn(1, VOCAB)
    assert torch.equal(sampler.apply(logits.clone()), logits)


def test_a_seeded_row_keeps_only_our_token_at_its_answer_index():
    """The row's argmax is then exactly ``sample_token(logits, params, index)``."""
    outputs: list[int] = [5, 6, 7]  # vLLM's live list: the next token is answer index 3
    sampler = PdSampler(None, torch.device("cpu"), False)
    sampler.update_state(
        update(2, added=[added(0, SamplingParams(), []), added(1, SEEDED, outputs)])
    )
    logits = torch.randn(2, VOCAB)
    out = sampler.apply(logits.clone())
    want = sample_token(logits[1], SEEDED, 3)
    assert int(out[1].argmax()) == want
    assert torch.isinf(out[1]).sum() == VOCAB - 1
    assert torch.equal(out[0], logits[0])
    outputs.append(want)  # vLLM appends; the next step draws index 4 from its own generator
    assert int(sampler.apply(logits.clone())[1].argmax()) == sample_token(logits[1], SEEDED, 4)


def test_rows_follow_moves_and_removals():
    sampler = PdSampler(None, torch.device("cpu"), False)
    sampler.update_state(update(2, added=[added(1, SEEDED, [])]))
    sampler.update_state(update(2, moved=[(1, 0, MoveDirectionality.UNIDIRECTIONAL)]))
    logits = torch.randn(2, VOCAB)
    out = sampler.apply(logits.clone())
    assert int(out[0].argmax()) == sample_token(logits[0], SEEDED, 0)
    assert torch.equal(out[1], logits[1])
    sampler.update_state(update(1, removed=[0]))
    assert torch.equal(sampler.apply(logits.clone()), logits)


def test_a_malformed_argument_is_refused():
    bad = VllmSamplingParams(extra_args={"pd_sampling": {"temperature": -1}})
    with pytest.raises(ValueError):
        PdSampler.validate_params(bad)


def test_the_vllm_engine_implements_the_engine_seam():
    from cloud_server.config import ServerConfig
    from cloud_server.engine_api import CloudEngine
    from cloud_server.vllm_engine import VllmEngine
    from cloud_server.vllm_model import load_served_model

    engine = VllmEngine(load_served_model("smollm2-135m", "vllm-cpu"), ServerConfig())
    assert isinstance(engine, CloudEngine)
    assert engine.can_score_prompts is False
    assert engine.num_active == 0


def test_a_failing_row_ends_alone_and_the_batch_goes_on(tmp_path, monkeypatch):
    """A fault injected in one row's draw: that row is forced to its stop token and its error
    is written where the engine reads it; the other row is sampled as usual, then and after."""
    monkeypatch.setenv(FAULT_DIR_ENV, str(tmp_path))
    bad = SamplingParams(temperature=0.9, seed=3)
    sampler = PdSampler(None, torch.device("cpu"), False)
    sampler.update_state(
        update(2, added=[added(0, SEEDED, [], key="ok"), added(1, bad, [], key="bad", stop=2)])
    )
    real_draw = PdSampler._draw

    def draw(logits, row_index, row):
        if row.params == bad:
            raise RuntimeError("injected fault")
        return real_draw(logits, row_index, row)

    monkeypatch.setattr(PdSampler, "_draw", staticmethod(draw))
    logits = torch.randn(2, VOCAB)
    for _ in range(2):  # the failed row stays on its stop token until vLLM drops it
        out = sampler.apply(logits.clone())
        assert int(out[0].argmax()) == sample_token(logits[0], SEEDED, 0)
        assert int(out[1].argmax()) == 2 and torch.isinf(out[1]).sum() == VOCAB - 1
    assert "injected fault" in fault_path("bad").read_text()
    assert fault_path("ok") is not None and not fault_path("ok").exists()


def test_serve_refuses_refining_settings_on_an_engine_that_cannot_score():
    from cloud_server.server import check_settings_for
    from common.settings import Bucket, SplitSettings

    class NoScores:
        can_score_prompts = False

    refined = Bucket(max_prompt_len=512, cloud_tokens=8, refine_ratio=0.5, min_interval_s=0.0,
                     max_interval_s=0.2)  # fmt: skip
    with pytest.raises(SystemExit, match="cannot score prompts"):
        check_settings_for(SplitSettings(buckets=[refined]), NoScores())
    plain = refined.model_copy(update={"refine_ratio": 0.0})
    check_settings_for(SplitSettings(buckets=[plain]), NoScores())
    check_settings_for(None, NoScores())


def test_a_fault_file_ends_the_request_with_its_error(tmp_path, monkeypatch):
    """What the engine reads after vLLM stopped a row PdSampler failed (once: then it is gone)."""
    from cloud_server.vllm_engine import _take_fault

    monkeypatch.setenv(FAULT_DIR_ENV, str(tmp_path))
    assert _take_fault("r1") is None
    fault_path("r1").write_text("cloud sampler error: RuntimeError: boom")
    assert _take_fault("r1") == "cloud sampler error: RuntimeError: boom"
    assert _take_fault("r1") is None
