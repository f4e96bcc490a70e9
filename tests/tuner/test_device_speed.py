"""Devices off their profiles: the simulator's speed spread, and the error the tuner pads by."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks.cli import app
from benchmarks.planner.profiles import load_named
from benchmarks.planner.sim_devices import speed_factors
from benchmarks.planner.sim_fleet import Fleet, simulate_mode
from benchmarks.planner.sim_workload import poisson_workload
from benchmarks.planner.simulator import tuned_settings
from benchmarks.planner.tuner import Slo
from common.profiles import NetworkProfile, ProfileError, slowed, with_speed_error
from common.settings import SplitSettings

runner = CliRunner()
NET = NetworkProfile(0.05, 0.01)


def test_speed_factors_are_a_repeatable_spread_around_the_profile():
    assert (speed_factors(0.0, 100) == 1.0).all()
    f = speed_factors(0.1, 20_000)
    assert np.array_equal(f, speed_factors(0.1, 20_000))  # the same requests, the same phones
    assert abs(np.median(f) - 1.0) < 0.01 and 0.09 < np.log(f).std() < 0.11
    with pytest.raises(ValueError):
        f[0] = 2.0  # shared between calls: read-only


def test_a_slowed_device_takes_that_much_longer_for_everything():
    phone = load_named("phone-llama1b-q4", "device")
    slow = slowed(phone, 1.3)
    assert slow.prefill.time(512) == pytest.approx(1.3 * phone.prefill.time(512))
    assert slow.decode.time(700) == pytest.approx(1.3 * phone.decode.time(700))
    assert slowed(phone, 1.0) is phone


def test_a_declared_error_keeps_the_larger_one_and_refuses_nonsense():
    phone = load_named("phone-llama1b-q4", "device")
    assert with_speed_error(phone, None) is phone
    assert with_speed_error(phone, 0.2).prefill.max_rel_err == 0.2
    fitted = replace(phone, prefill=replace(phone.prefill, max_rel_err=0.3))
    assert with_speed_error(fitted, 0.1).prefill.max_rel_err == 0.3
    with pytest.raises(ProfileError, match="fraction"):
        with_speed_error(phone, 1.5)


def _pd(settings, dev, cloud, work, sigma):
    fleet = Fleet(settings, [dev], cloud, NET, 64, 2.0, 0.1, 90.0, 512, sigma)
    return simulate_mode("pd", work, fleet, 400)


def test_phones_slower_than_their_profile_stall_and_a_declared_error_covers_them():
    # 1B phone, H100, chat prompts, O = 1024: N is sized to the profile with a 5% floor, so a
    # spread of phones (sigma 0.2: one in six at least 22% slower) runs out of cloud tokens.
    dev, cloud = load_named("phone-llama1b-q4", "device"), load_named("h100-llama8b", "cloud")
    work = poisson_workload(5.0, 1500, [128, 256, 512], 1024, 1)
    slo = Slo(2.0, 0.1)
    plain = tuned_settings([dev], cloud, work, NET, slo, slots=64)
    padded = tuned_settings([with_speed_error(dev, 0.3)], cloud, work, NET, slo, slots=64)
    assert _pd(plain, dev, cloud, work, 0.0).stall_rate == 0.0
    loose = _pd(plain, dev, cloud, work, 0.2).stall_rate
    assert loose > 0.03
    assert _pd(padded, dev, cloud, work, 0.2).stall_rate < loose / 2
    longest = [s[0].buckets[-1] for s in (plain, padded)]
    assert longest[0].use_cloud and longest[0].use_device
    assert longest[1].cloud_tokens > longest[0].cloud_tokens  # the padding: more cloud tokens


def test_the_commands_take_the_device_error_and_the_speed_spread(tmp_path):
    base = ["tune", "--device-profile", "phone-llama3b-q4", "--cloud-profile", "h100-llama8b"]
    ns = []
    for extra in ([], ["--device-error", "0.3"]):
        out = tmp_path / f"s{len(ns)}.json"
        result = runner.invoke(app, [*base, "--input-lens", "512", "-o", str(out), *extra])
        assert result.exit_code == 0, result.output
        ns.append(SplitSettings.load(out).buckets[0].cloud_tokens)
    assert ns[1] > ns[0]
    result = runner.invoke(app, [*base, "--device-error", "2", "-o", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and "fraction in [0, 1)" in result.output
    sim = ["simulate", "--request-rate", "0.05", "--num-requests", "100"]
    sim += ["--search-requests", "100", "--search-sample", "20"]
    result = runner.invoke(app, [*sim, "--device-speed-sigma", "0.1"])
    assert result.exit_code == 0, result.output
    assert "sigma 0.1" in result.output
    result = runner.invoke(app, [*sim, "--device-speed-sigma", "3"])
    assert result.exit_code == 2 and "--device-speed-sigma must be in [0, 1]" in result.output
