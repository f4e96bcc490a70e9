from __future__ import annotations

import json

import pytest
from tuner_profiles import fast_cloud, slow_device

from common.profiles import (
    CloudProfile,
    DecodeCost,
    PrefillCost,
    ProfileError,
    fit_batch,
    fit_decode,
    fit_prefill,
    load_profile,
    profile_from_dict,
    profile_to_dict,
    save_profile,
)
from common.timing_model import (
    PLAN_FACTOR,
    STRETCH_FACTOR,
    catch_up_time,
    cloud_gain,
    handoff_index,
    min_safe_budget,
    pacing_for,
)


def test_prefill_fit_recovers_known_parameters():
    lengths = [16, 64, 256, 512, 1024, 2048]
    times = [0.03 + 0.002 * x + 4e-7 * x * x for x in lengths]
    cost = fit_prefill(lengths, times)
    assert cost.a == pytest.approx(0.03, rel=1e-6)
    assert cost.b == pytest.approx(0.002, rel=1e-6)
    assert cost.c == pytest.approx(4e-7, rel=1e-6)
    assert cost.max_rel_err < 1e-9


def test_fit_keeps_coefficients_non_negative_and_reports_error():
    # Concave data: an unconstrained quadratic would go negative in c.
    lengths = [100, 200, 400, 800]
    times = [0.10, 0.19, 0.33, 0.55]
    cost = fit_prefill(lengths, times)
    assert min(cost.a, cost.b, cost.c) >= 0
    assert 0 < cost.max_rel_err < 0.2


def test_decode_and_batch_fits_are_linear():
    dec = fit_decode([64, 512, 2048], [0.06 + 1e-5 * c for c in (64, 512, 2048)])
    assert dec.d1 == pytest.approx(1e-5, rel=1e-6)
    batch = fit_batch([1, 2, 4, 8], [0.03 + 0.01 * b for b in (1, 2, 4, 8)])
    assert (batch.e0, batch.e1) == pytest.approx((0.03, 0.01), rel=1e-6)
    assert batch.share_per_token(8) == pytest.approx(0.11 / 8)
    assert batch.lone_s is None  # one line fits every level: no special case


def test_a_lone_request_round_that_no_line_fits_is_kept_apart():
    """This CPU's engine: 58 ms alone, 92 / 95 / 137 ms at B = 2 / 4 / 8 (the padded batch and
    its mask cost ~30 ms once). One line through all four put B = 2 at 75 ms."""
    levels, times = [1, 2, 4, 8], [0.058, 0.092, 0.095, 0.137]
    batch = fit_batch(levels, times, split_lone=True)
    assert fit_batch(levels, times).lone_s is None  # only when asked (derived profiles: no)
    assert batch.lone_s == pytest.approx(0.058)
    assert batch.step_time(1) == pytest.approx(0.058)
    for b, t in zip(levels[1:], times[1:], strict=True):
        assert batch.step_time(b) == pytest.approx(t, rel=0.1)
    one_line = fit_batch(
        levels[1:], times[1:], split_lone=True
    )  # the batched levels alone: the same line
    assert (batch.e0, batch.e1) == pytest.approx((one_line.e0, one_line.e1))
    assert one_line.lone_s is None and one_line.step_time(1) > 0.07
    saved = profile_from_dict(
        profile_to_dict(CloudProfile(PrefillCost(0, 1e-3), DecodeCost(0.05), batch)), "cloud"
    )
    assert saved.batch == batch  # lone_s survives a save and a load (None too, as null)


def test_budget_and_handoff_follow_the_formulas():
    dev = slow_device()
    catch = catch_up_time(1000, 0.0, 20, dev)  # Tpd(1000) + absorb(20)
    assert catch == pytest.approx(0.02 + 10.0 + 0.02 + 0.2)
    assert min_safe_budget(ttft_s=1.0, catch_up_s=catch, tau_d=0.25, max_interval_s=0.25) == 38
    assert min_safe_budget(ttft_s=20.0, catch_up_s=catch, tau_d=0.25, max_interval_s=0.25) == 0
    # received at prompt end: first at 1.0 s, then every 0.1 s, at most 1 + N
    assert handoff_index(1.0, 2.05, 0.1, 50) == 11
    assert handoff_index(1.0, 9.0, 0.1, 21) == 21
    assert handoff_index(1.0, 0.5, 0.1, 21) == 0


def test_refinement_shortens_catch_up_after_the_keep_set():
    dev = slow_device()
    full = catch_up_time(1000, 0.0, 0, dev)
    early = catch_up_time(1000, 0.5, 0, dev, keep_set_at_s=0.0)
    late = catch_up_time(1000, 0.5, 0, dev, keep_set_at_s=2.0)
    assert early < late < full


def test_gain_is_the_busy_ratio():
    cloud = fast_cloud()
    assert cloud_gain(512, 20, 300, cloud) > cloud_gain(512, 60, 300, cloud) > 1.0


def test_profile_round_trip_and_clear_errors(tmp_path):
    path = tmp_path / "d.json"
    save_profile(slow_device(), path)
    assert load_profile(path, "device").prefill.b == 0.01
    with pytest.raises(ProfileError, match="expected a cloud profile"):
        load_profile(path, "cloud")
    with pytest.raises(ProfileError, match="file not found"):
        load_profile(tmp_path / "missing.json", "device")
    path.write_text("{not json")
    with pytest.raises(ProfileError, match="not readable JSON"):
        load_profile(path, "device")
    path.write_text(json.dumps({"kind": "device", "prefill": {"a": 0, "b": 0.01}}))
    with pytest.raises(ProfileError, match="missing object 'decode'"):
        load_profile(path, "device")
    path.write_text(
        json.dumps({"kind": "device", "prefill": {"a": 0, "b": -1}, "decode": {"d0": 1}})
    )
    with pytest.raises(ProfileError, match=">= 0"):
        load_profile(path, "device")


def test_refined_prompt_done_counts_the_kept_positions_in_the_part_not_yet_prefilled():
    """The cloud keeps L - floor(ρL) positions of the whole prompt, mostly at its recent end: a
    device a quarter through its prefill when the keep-set arrives still has all of them ahead
    (measured: 78-80% of a 512-token prompt prefilled at ρ = 0.5, not the 62% of a uniform
    share)."""
    from common.profiles import DeviceProfile
    from common.timing_model import prompt_done_time

    dev = DeviceProfile(PrefillCost(0.0, 0.01), DecodeCost(0.05))  # 1000 tokens: 10 s
    assert prompt_done_time(1000, 0.5, 2.5, dev) == pytest.approx(2.5 + 5.0)  # 500 kept ahead
    assert prompt_done_time(1000, 0.5, 8.0, dev) == pytest.approx(10.0)  # only 200 left: all
    assert prompt_done_time(1000, 0.0, 2.5, dev) == pytest.approx(10.0)  # no refinement


def test_pacing_keeps_the_device_rhythm_as_stretch_room_with_or_without_a_tpot_slo():
    tau_d, jitter = 0.021, 0.01
    plain = pacing_for(tau_d, jitter)
    assert plain.plan_interval_s == pytest.approx(PLAN_FACTOR * tau_d + jitter)
    assert plain.max_interval_s == pytest.approx(STRETCH_FACTOR * tau_d + jitter)
    # A 100 ms SLO allows gaps ~5 tau_d: N is sized for them, keeping the same 0.3 tau_d of
    # room per token (not 20% of the SLO, which sized N 17% larger than it needs).
    slo = pacing_for(tau_d, jitter, tpot_slo_s=0.1)
    assert slo.max_interval_s == 0.1
    room = (STRETCH_FACTOR - PLAN_FACTOR) * tau_d
    assert slo.plan_interval_s == pytest.approx(0.1 - room)
    assert slo.min_interval_s == tau_d
    # An SLO tighter than the device's own plan: the plan is never above the SLO.
    tight = pacing_for(tau_d, jitter, tpot_slo_s=0.03)
    assert tight.plan_interval_s == tight.max_interval_s == 0.03
