"""``pdd profile cloud`` times the decode round the engine runs, not a bare forward."""

from __future__ import annotations

from benchmarks.planner import profile
from cloud_server.model_runner import ModelRunner


def test_batch_decode_is_timed_through_the_engines_own_rounds(loaded_model, monkeypatch):
    widths: list[int] = []
    decode = ModelRunner.decode

    def spy(self, seqs):
        widths.append(len(seqs))
        return decode(self, seqs)

    monkeypatch.setattr(ModelRunner, "decode", spy)
    rows = profile.measure_batch_decode(loaded_model, [1, 3], context=8, num_steps=3, slowdown=2.0)
    assert [r["concurrency"] for r in rows] == [1, 3]
    # Every round of the engine over all B requests is one sample (no round with fewer).
    assert widths == [1] * 3 + [3] * 3
    assert [len(r["samples_s"]) for r in rows] == [3, 3]
    assert all(s > 0 for r in rows for s in r["samples_s"])
