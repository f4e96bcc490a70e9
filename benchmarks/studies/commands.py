"""``pdd study ...``: the studies as subcommands. Each study's module (torch, the model) loads
only when it runs, so ``pdd --help`` stays fast; ``python -m benchmarks.studies.<name>`` runs the
same study with the same options.
"""

from __future__ import annotations

import typer

from common.cli_options import command_from

from .fleet import main as fleet_main
from .options import (
    ChunkedPrefillOptions,
    DeviceSpeedOptions,
    EngineScalingOptions,
    RefineStudyOptions,
    SessionsStudyOptions,
    VllmPdOptions,
    fail,
)
from .sim_validation import main as sim_validation_main


@command_from(RefineStudyOptions, on_error=fail)
def refine_quality_command(options: RefineStudyOptions) -> None:
    """Prompt refinement: device prefill saved and answer quality, per refine ratio."""
    from .refine_quality import main

    main(options.resolved())


@command_from(EngineScalingOptions, on_error=fail)
def engine_scaling_command(options: EngineScalingOptions) -> None:
    """Batched decode throughput (N concurrent against 1) and TTFT under decode load."""
    import asyncio

    from .engine_scaling import main_async

    asyncio.run(main_async(options))


@command_from(ChunkedPrefillOptions, on_error=fail)
def chunked_prefill_command(options: ChunkedPrefillOptions) -> None:
    """Chunked prefill: the largest gap in decoding streams and the long prompt's TTFT."""
    import asyncio

    from .chunked_prefill import main_async

    asyncio.run(main_async(options))


@command_from(SessionsStudyOptions, on_error=fail)
def sessions_command(options: SessionsStudyOptions) -> None:
    """Multi-turn sessions: per turn with device sessions against the same turns without."""
    from .sessions import main

    main(options)


@command_from(DeviceSpeedOptions, on_error=fail)
def device_speed_command(options: DeviceSpeedOptions) -> None:
    """Stall rate and cloud cost of the tuned settings when devices run off their profiles."""
    from .device_speed import main

    main(options)


@command_from(VllmPdOptions, on_error=fail)
def vllm_pd_command(options: VllmPdOptions) -> None:
    """pd on a vLLM cloud against the builtin one: TTFT cut, max gap, cloud busy (pdd bench)."""
    from .vllm_pd import main

    main(options)


study_app = typer.Typer(
    help="Studies that measured the design (refinement, engine scaling, chunked prefill, fleet, "
    "sessions, pd on vLLM, devices off their profiles).",
    no_args_is_help=True,
    add_completion=False,
)
study_app.command("refine-quality")(refine_quality_command)
study_app.command("engine-scaling")(engine_scaling_command)
study_app.command("chunked-prefill")(chunked_prefill_command)
# The fleet study and the simulator's validation (no torch: the planner is already imported).
study_app.command("fleet")(fleet_main)
study_app.command("sim-validation")(sim_validation_main)
study_app.command("device-speed")(device_speed_command)
study_app.command("sessions")(sessions_command)
study_app.command("vllm-pd")(vllm_pd_command)
