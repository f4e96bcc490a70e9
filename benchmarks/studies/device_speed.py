"""Devices off their profiles: how much slower than its profile may a phone run before the tuned
settings stall, and what declaring that error to the tuner costs the cloud.

The fleet study's devices run exactly at their profiles; a real phone does not (thermal
throttling, other apps, another unit of the same model), and a derived profile has no fit error
to pad by. Here each request's device takes f x its profile's time, f lognormal with median 1
and sigma σ (``Fleet.device_speed_sigma``); the settings are tuned with the device error
declared as ``pdd tune --device-error E`` (the tuner pads the device prefill by max(5%, E)).
Per row: the chat workload of the fleet study on the H100 profile at cloud-only's largest rate,
pd's stall rate, SLO attainment and cloud busy seconds per request.

``pdd study device-speed [-o device_speed.json]`` (simulated time: a few minutes, any load).
"""

from __future__ import annotations

import json
from dataclasses import replace

import typer

from benchmarks.planner.profiles import load_named
from benchmarks.planner.sim_fleet import Fleet, max_rate, simulate_mode
from benchmarks.planner.sim_workload import poisson_workload, scaled
from benchmarks.planner.simulator import chunk_tokens, tuned_settings
from benchmarks.planner.tuner import Slo
from benchmarks.studies.fleet import SLO_TPOT_S, SLO_TTFT_S, SLOTS
from benchmarks.studies.options import DeviceSpeedOptions
from common.profiles import NetworkProfile, with_speed_error

SIGMAS = (0.0, 0.05, 0.1, 0.2)
ERRORS = (None, 0.1, 0.2, 0.3)  # None: the profile's own (0 for a derived phone: the 5% floor)
ROWS = (("phone-llama1b-q4", 1024), ("phone-llama3b-q4", 256), ("phone-llama3b-q4", 1024))
CLOUD = "h100-llama8b"


def run_row(device: str, output_len: int, num: int, sample: int) -> list[dict]:
    dev, cloud = load_named(device, "device"), load_named(CLOUD, "cloud")
    net = NetworkProfile(0.05, 0.01)
    work = poisson_workload(1.0, num, [128, 256, 512], output_len, 1)
    slo = Slo(SLO_TTFT_S, SLO_TPOT_S)
    out, at = [], None
    for error in ERRORS:
        settings = tuned_settings(
            [with_speed_error(dev, error)], cloud, work, net, slo, slots=SLOTS
        )
        fleet = Fleet(
            settings, [dev], cloud, net, SLOTS, SLO_TTFT_S, SLO_TPOT_S, 90.0,
            chunk_tokens(None, settings),
        )  # fmt: skip
        if at is None:  # one load for the whole row: cloud-only's largest rate
            at = scaled(work, max(max_rate("cloud-only", work, fleet, sample), 1e-3))
        for sigma in SIGMAS:
            res = simulate_mode("pd", at, replace(fleet, device_speed_sigma=sigma), sample)
            out.append({
                "device": device, "output_len": output_len, "rate": at.mean_rate,
                "declared_error": error, "sigma": sigma,
                "N": [b.cloud_tokens for b in settings[0].buckets if b.use_cloud and b.use_device],
                "stall_rate": res.stall_rate, "attainment": res.attainment,
                "cloud_busy_s": res.cloud_busy_s,
            })  # fmt: skip
    return out


def print_table(rows: list[dict]) -> None:
    typer.echo(
        "| device | O | declared error | pd N per bucket | "
        + " | ".join(f"σ = {s:g}: stalls / SLO met" for s in SIGMAS)
        + " | cloud busy s/req (σ = 0) |"
    )
    typer.echo("|" + "---|" * (5 + len(SIGMAS)))
    for i in range(0, len(rows), len(SIGMAS)):  # run_row's order: one line per declared error
        here = rows[i : i + len(SIGMAS)]
        first, error = here[0], here[0]["declared_error"]
        cells = " | ".join(f"{r['stall_rate']:.1%} / {r['attainment']:.1%}" for r in here)
        label = f"{error:.0%}" if error else "none (5% floor)"
        typer.echo(
            f"| {first['device'].removeprefix('phone-')} | {first['output_len']} | {label} | "
            f"{first['N']} | {cells} | {first['cloud_busy_s']:.4f} |"
        )


def main(options: DeviceSpeedOptions) -> None:
    """Print the table (markdown) and, with -o, save the rows as JSON."""
    rows = []
    for device, out in ROWS:
        rows += run_row(device, out, options.num_requests, options.sample)
        typer.echo(f"done: {device} O={out}", err=True)
    print_table(rows)
    if options.output:
        options.output.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    from common.cli_options import command_from

    from .options import fail

    typer.run(command_from(DeviceSpeedOptions, on_error=fail)(main))
