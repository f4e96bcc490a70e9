"""The simulated cloud's per-stream gaps, slot-holding time and closed-loop arrivals, worked out
by hand on round-number profiles."""

from __future__ import annotations

import numpy as np
import pytest
from tuner_profiles import slow_device

from benchmarks.planner.sim_cloud import simulate_cloud
from benchmarks.planner.sim_fleet import Fleet, closed_loop, simulate_mode
from benchmarks.planner.sim_workload import poisson_workload
from common.profiles import BatchCost, CloudProfile, DecodeCost, NetworkProfile, PrefillCost
from common.settings import Bucket, SplitSettings

# Prefill 10 ms/token (no fixed part), decode round s(B) = 0.1 + 0.1·B s.
CLOUD = CloudProfile(PrefillCost(a=0.0, b=0.01), DecodeCost(d0=0.2), BatchCost(e0=0.1, e1=0.1))


def test_a_long_prefill_pauses_the_other_stream_by_exactly_its_length():
    # A: 10-token prompt (0.1 s), 6 tokens. B arrives at 0.25 s with a 100-token prompt (1 s,
    # whole: no chunking). A's rounds: 0.1-0.3 (token 2); B's prefill runs 0.3-1.3; then
    # rounds of B = 2 (0.3 s): A's next token is out at 1.6, 1.3 s after its previous one.
    run = simulate_cloud(
        np.array([0.0, 0.25]), np.array([10, 100]), np.array([6, 3]), CLOUD, slots=4
    )
    assert run.first_token_at.tolist() == pytest.approx([0.1, 1.3])
    dt = 1.0  # B's prefill
    assert run.max_gap_s[0] == pytest.approx(dt + 0.3)  # A: the pause, then a round of two
    assert run.max_gap_s[1] == pytest.approx(0.3)  # B: its first round right after its prefill
    times = run.token_times(0)
    assert times.tolist() == pytest.approx([0.1, 0.3, 1.6, 1.9, 2.1, 2.3])  # alone after B ends
    assert np.diff(times).max() == pytest.approx(run.max_gap_s[0])
    assert run.tokens.tolist() == [6, 3]


def test_slot_holding_time_runs_from_admission_to_release():
    # One slot: B waits for A. A: prefill 0.1 + 5 rounds of 0.2 = 1.1 s in its slot, all its
    # own engine time. B is admitted when A ends (1.1), not when it arrived (0), as the engine
    # sets admitted_s; it holds the slot 1.1 s too.
    run = simulate_cloud(np.zeros(2), np.array([10, 10]), np.array([6, 6]), CLOUD, slots=1)
    assert run.slot_s.tolist() == pytest.approx([1.1, 1.1])
    assert run.busy_s.tolist() == pytest.approx([1.1, 1.1])
    # Two slots: both in every round, so each holds its slot far longer than its engine share.
    run = simulate_cloud(np.zeros(2), np.array([10, 10]), np.array([6, 6]), CLOUD, slots=2)
    # A: prefill 0-0.1, B's prefill 0.1-0.2, then 5 rounds of 0.3 s together: both end at 1.7.
    assert run.slot_s.tolist() == pytest.approx([1.7, 1.7])
    assert run.busy_s.tolist() == pytest.approx([0.1 + 5 * 0.15, 0.1 + 5 * 0.15])


def test_a_stop_ends_the_request_after_the_step_in_flight():
    # The stop reaches the cloud at 0.45 s, during A's 2nd round (0.3-0.5): that round's token
    # is its last (3 tokens), and it ends at 0.5.
    run = simulate_cloud(
        np.zeros(1), np.array([10]), np.array([50]), CLOUD, slots=1,
        stop_at=lambda i, arrived, first: 0.45,
    )  # fmt: skip
    assert run.tokens.tolist() == [3]
    assert run.decode_end_at.tolist() == pytest.approx([0.5])


def _fleet(rtt_s: float) -> Fleet:
    bucket = Bucket(max_prompt_len=1 << 20, cloud_tokens=4, min_interval_s=0.2, max_interval_s=0.3)
    settings, net = SplitSettings(buckets=[bucket]), NetworkProfile(rtt_s, 0.0)
    return Fleet([settings], [slow_device()], CLOUD, net, 4, 1e9, 1e9)


def test_one_closed_loop_device_sends_each_request_when_the_last_one_ended():
    fleet = _fleet(rtt_s=0.05)
    work = poisson_workload(100.0, 5, [10, 20], 6, 1)  # its arrival times are ignored
    arrivals, hook, _ = closed_loop(work.output_lens, 1, fleet.network.rtt_s)
    run = simulate_cloud(arrivals, work.prompt_lens, work.output_lens, CLOUD, 4, next_arrival=hook)
    # Serial: each request reaches the cloud one RTT after the previous one ended there (its
    # End back to the device, the next request out), the first at RTT/2.
    assert run.arrival_at[0] == pytest.approx(0.025)
    assert run.arrival_at[1:].tolist() == pytest.approx((run.decode_end_at[:-1] + 0.05).tolist())
    # ...so nothing ever queues or shares a round: slot time = engine time = prefill + 5 rounds.
    assert run.slot_s.tolist() == pytest.approx((work.prompt_lens * 0.01 + 5 * 0.2).tolist())
    res = simulate_mode("cloud-only", work, fleet, closed_loop_devices=1)
    span = run.decode_end_at[-1] + 0.025  # the last End reaches its device
    assert res.sustained_rate == pytest.approx(5 / span)
    assert res.cloud_slot_s == pytest.approx(run.slot_s.mean())


def test_closed_loop_keeps_at_most_m_requests_in_flight():
    work = poisson_workload(1.0, 40, [50], 11, 1)
    arrivals, hook, _ = closed_loop(work.output_lens, 3, 0.0)
    run = simulate_cloud(arrivals, work.prompt_lens, work.output_lens, CLOUD, 8, next_arrival=hook)
    assert (run.arrival_at[:3] == 0).all()
    events = sorted([(t, 1) for t in run.arrival_at] + [(t, -1) for t in run.decode_end_at])
    in_flight = np.cumsum([d for _, d in events])  # an end before an arrival at equal times
    assert in_flight.max() == 3
    # A slot holds at least its own prefill and 10 rounds (0.2 s alone, 0.4 s with two others).
    assert (run.slot_s >= 0.5 + 10 * 0.2 - 1e-9).all()
    assert (run.slot_s > 0.5 + 10 * 0.4).sum() >= 30, "shared rounds and others' prefills"
    assert (run.max_gap_s > 0.4 + 0.5 - 1e-9).any(), "another prefill paused some stream"
