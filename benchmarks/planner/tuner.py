"""``pdd tune``: profiles in, split settings out (one bucket per prompt-length class).

Per bucket (evaluated at its longest prompt, the worst case for catch-up):
1. a device slower per token than the TPOT SLO cannot take over: cloud-only;
2. the device alone meets the TTFT SLO: device-only (no cloud time at all);
3. otherwise pd: the least N with no stall at the handoff (timing model + margins), for each
   allowed refine ratio; keep the one with the least cloud busy seconds.
Each bucket's ``reason`` names the constraint that binds; ``predictions`` (typed as
``common.settings.Prediction``) hold the timing model's handoff index, TTFT, max TPOT and cloud
busy seconds per bucket.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import typer

from benchmarks.planner.chunk_plan import recommend_chunk
from benchmarks.planner.options import TuneOptions, fail
from benchmarks.planner.profiles import check_prompt_lens, load_named
from benchmarks.planner.sim_workload import trace_path
from benchmarks.planner.tuning_inputs import buckets_from_trace, load_quality, parse_slo
from cloud_server.config import EngineConfig
from common.cli_options import command_from, config_json
from common.messages import MAX_REFINE_RATIO
from common.profiles import (
    CloudProfile,
    DeviceProfile,
    NetworkProfile,
    ProfileError,
    with_speed_error,
)
from common.settings import Bucket, Prediction, SplitSettings
from common.timing_model import (
    catch_up_time,
    cloud_busy_s,
    display_interval,
    handoff_index,
    pacing_for,
    prompt_done_time,
    safe_budget,
    ttft_device_only,
    ttft_pd,
)

DEVICE_ONLY_TTFT_S = 1.0  # without a TTFT SLO: the device alone when it answers this fast


class InfeasibleError(ValueError):
    """No setting meets a constraint; ``constraint`` names it (ttft, tpot, quality)."""

    def __init__(self, constraint: str, message: str) -> None:
        super().__init__(f"infeasible {constraint} constraint: {message}")
        self.constraint = constraint


@dataclass(frozen=True)
class Slo:
    ttft_s: float | None = None  # None: device-only up to DEVICE_ONLY_TTFT_S, else pd
    tpot_s: float | None = None  # None: Δmax = τd + jitter (an invisible handoff)


@dataclass(frozen=True)
class TuneConfig:
    input_lens: list[int]
    output_len: int = 256
    network: NetworkProfile = NetworkProfile()
    slo: Slo = Slo()
    quality: dict[float, float] | None = None  # refine ratio -> measured agreement
    quality_floor: float | None = None
    cloud_can_score: bool = True  # False: the cloud engine gives no keep-sets (vllm): rho = 0
    cloud_slots: int = EngineConfig.max_concurrent_requests  # K, for the cloud-side setting


@dataclass(frozen=True)
class Plan:
    bucket: Bucket
    prediction: Prediction


def allowed_ratios(cfg: TuneConfig) -> tuple[list[float], str]:
    """Refine ratios up to the largest whose measured quality (and every smaller one's) meets Q."""
    if not cfg.cloud_can_score:
        return [0.0], "rho=0: the cloud engine cannot score prompts (no keep-sets)"
    if not cfg.quality or cfg.quality_floor is None:
        return [0.0], "rho=0: no refinement quality file"
    allowed = [0.0]
    for ratio in sorted(cfg.quality):
        if ratio <= 0 or ratio > MAX_REFINE_RATIO:
            continue
        if cfg.quality[ratio] < cfg.quality_floor:
            break
        allowed.append(ratio)
    if len(allowed) == 1:
        return allowed, f"rho=0: no measured ratio meets quality floor {cfg.quality_floor:g}"
    top = allowed[-1]
    return (
        allowed,
        f"rho<={top:g} allowed (quality {cfg.quality[top]:.3f} >= {cfg.quality_floor:g})",
    )


def _pacing(
    device: DeviceProfile, prompt_len: int, cfg: TuneConfig
) -> tuple[float, float, float, float]:
    """(τd, Δmin, Δplan, Δmax) by ``timing_model.pacing_for`` (the client's untuned rule too)."""
    tau_d = device.decode.mean_time(prompt_len, cfg.output_len)
    p = pacing_for(tau_d, cfg.network.jitter_s, cfg.slo.tpot_s)
    return p.tau_d, p.min_interval_s, p.plan_interval_s, p.max_interval_s


def _budget(
    prompt_len: int, ratio: float, t0: float, tau_d: float, plan: float, dev: DeviceProfile, cfg
) -> tuple[int, int]:
    """(N, margin tokens) by ``timing_model.safe_budget``, at most O (past it the device never
    takes over)."""
    return safe_budget(
        prompt_len, ratio, t0, tau_d, plan, dev, cfg.network.jitter_s, max_budget=cfg.output_len
    )


def predict(
    prompt_len: int, n: int, ratio: float, dev: DeviceProfile, cloud: CloudProfile, cfg
) -> Prediction:
    """What the timing model expects a live pd run of this bucket to show."""
    tau_d, lo, _, hi = _pacing(dev, prompt_len, cfg)
    t0 = ttft_pd(prompt_len, cloud, cfg.network)
    prompt_done = prompt_done_time(prompt_len, ratio, t0, dev)
    m = handoff_index(t0, prompt_done, cloud.tau(prompt_len), n + 1)
    own = catch_up_time(prompt_len, ratio, m, dev, keep_set_at_s=t0)
    delta = display_interval(t0, own, tau_d, m, lo, hi)
    last_cloud = t0 + max(m - 1, 0) * delta
    tail = dev.decode.time(prompt_len + cfg.output_len)
    return {
        "max_prompt_len": prompt_len,
        "handoff_index": m,
        "ttft_s": t0 if m else own,
        "catch_up_s": own,
        "display_interval_s": delta,
        "max_tpot_s": max(delta if m > 1 else 0.0, own - last_cloud if m else 0.0, tail),
        "cloud_busy_s": cloud_busy_s(prompt_len, 1 + n, cloud),
        "cloud_only_busy_s": cloud_busy_s(prompt_len, cfg.output_len, cloud),
    }


def _cloud_only(L: int, dev, cloud: CloudProfile, cfg: TuneConfig, tau_d: float) -> Plan:
    tpot = cfg.slo.tpot_s
    tau_c = cloud.tau(L)
    if tau_c > tpot:
        raise InfeasibleError(
            "tpot",
            f"prompt<={L}: device τd {tau_d * 1e3:.0f} ms and cloud τc {tau_c * 1e3:.0f} ms "
            f"both exceed the TPOT SLO {tpot * 1e3:.0f} ms",
        )
    n = cfg.output_len - 1  # 1 + N = O: the cloud sends the whole answer
    bucket = Bucket(
        max_prompt_len=L,
        use_cloud=True,
        use_device=False,
        cloud_tokens=n,
        min_interval_s=0.0,
        max_interval_s=tpot,
        reason=f"cloud-only: device τd {tau_d * 1e3:.0f} ms > TPOT SLO {tpot * 1e3:.0f} ms",
    )
    busy = cloud_busy_s(L, cfg.output_len, cloud)  # 1 + N = O tokens, as cloud-only counts
    pred = {
        "max_prompt_len": L,
        "handoff_index": n,
        "ttft_s": ttft_pd(L, cloud, cfg.network),
        "max_tpot_s": tau_c,
        "cloud_busy_s": busy,
        "cloud_only_busy_s": busy,  # the plan is cloud-only: the same request, the same cost
    }
    return Plan(bucket, pred)


def _device_only(L: int, dev: DeviceProfile, cloud, cfg, pacing, target: float) -> Plan:
    tau_d, lo, _, hi = pacing
    ttft = ttft_device_only(L, dev)
    what = "TTFT SLO" if cfg.slo.ttft_s is not None else "the no-SLO device-only limit"
    reason = (
        f"device-only: device TTFT {ttft * 1e3:.0f} ms meets {what} "
        f"{target * 1e3:.0f} ms, so no cloud time is needed"
    )
    bucket = Bucket(
        max_prompt_len=L,
        use_cloud=False,
        cloud_tokens=0,
        min_interval_s=lo,
        max_interval_s=hi,
        reason=reason,
    )
    pred = {
        "max_prompt_len": L,
        "handoff_index": 0,
        "ttft_s": ttft,
        "max_tpot_s": dev.decode.time(L + cfg.output_len),
        "cloud_busy_s": 0.0,
        "cloud_only_busy_s": cloud_busy_s(L, cfg.output_len, cloud),
    }
    return Plan(bucket, pred)


def plan_bucket(L: int, dev: DeviceProfile, cloud: CloudProfile, cfg: TuneConfig) -> Plan:
    pacing = _pacing(dev, L, cfg)
    tau_d, lo, plan, hi = pacing
    if cfg.slo.tpot_s is not None and tau_d > cfg.slo.tpot_s:
        return _cloud_only(L, dev, cloud, cfg, tau_d)
    device_ttft = ttft_device_only(L, dev)
    target = cfg.slo.ttft_s if cfg.slo.ttft_s is not None else DEVICE_ONLY_TTFT_S
    if device_ttft <= target:
        return _device_only(L, dev, cloud, cfg, pacing, target)
    t0 = ttft_pd(L, cloud, cfg.network)
    if cfg.slo.ttft_s is not None and t0 > cfg.slo.ttft_s:
        raise InfeasibleError(
            "ttft",
            f"prompt<={L}: TTFT SLO {cfg.slo.ttft_s * 1e3:.0f} ms is below both the device's "
            f"{device_ttft * 1e3:.0f} ms and the cloud's {t0 * 1e3:.0f} ms (RTT "
            f"{cfg.network.rtt_s * 1e3:.0f} ms + Tpc {cloud.prefill.time(L) * 1e3:.0f} ms)",
        )
    ratios, rho_reason = allowed_ratios(cfg)
    best = None
    for ratio in ratios:
        n, margin = _budget(L, ratio, t0, tau_d, plan, dev, cfg)
        busy = cloud_busy_s(L, 1 + n, cloud)
        if best is None or busy < best[0] - 1e-12:
            best = (busy, ratio, n, margin)
    busy, ratio, n, margin = best
    capped = n + 1 >= cfg.output_len
    n = min(n, cfg.output_len - 1)
    stall = (
        f"N covers it only by answering all {cfg.output_len} tokens (the device never takes over)"
        if capped
        else f"no-stall binds: N={n} spans Tcatch+τd-TTFT at Δ {plan * 1e3:.0f} ms "
        f"(+{margin} margin tokens)"
    )
    reason = (
        f"pd: TTFT target {target * 1e3:.0f} ms forces the cloud (device TTFT "
        f"{device_ttft * 1e3:.0f} ms); {stall}; {rho_reason}"
        + (f", rho={ratio:g} chosen (least cloud time)" if ratio > 0 else "")
    )
    bucket = Bucket(
        max_prompt_len=L,
        use_cloud=True,
        use_device=not capped,  # the cloud answers all: longer answers must not hand off late
        cloud_tokens=n,
        refine_ratio=ratio,
        min_interval_s=lo,
        max_interval_s=hi,
        reason=reason,
    )
    return Plan(bucket, predict(L, n, ratio, dev, cloud, cfg))


def tune(dev: DeviceProfile, cloud: CloudProfile, cfg: TuneConfig) -> SplitSettings:
    if not cfg.input_lens or min(cfg.input_lens) < 1 or cfg.output_len < 2:
        raise ValueError("need prompt lengths >= 1 and an output length >= 2")
    plans = [plan_bucket(L, dev, cloud, cfg) for L in sorted(set(cfg.input_lens))]
    provenance = {
        "cloud": cloud_setting(plans, cloud, cfg),
        "objective": "least cloud busy seconds per request s.t. no stall, TTFT/TPOT SLOs, quality",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "output_len": cfg.output_len,
        "slo": asdict(cfg.slo),
        "network": asdict(cfg.network),
        "quality_floor": cfg.quality_floor,
        "cloud_can_score": cfg.cloud_can_score,
        "device_profile": {"meta": dev.meta, "prefill": asdict(dev.prefill)},
        "cloud_profile": {"meta": cloud.meta, "prefill": asdict(cloud.prefill)},
    }
    return SplitSettings(
        buckets=[p.bucket for p in plans],
        tuner=provenance,
        predictions=[p.prediction for p in plans],
        cloud_can_score=cfg.cloud_can_score,
    )


def cloud_can_score(engine: str | None, cloud: CloudProfile) -> bool:
    """``--cloud-engine`` if given, else the cloud profile's ``meta.can_score_prompts`` (a profile
    measured on a running cloud says; others are the builtin engine's, which can)."""
    if engine is None:
        return bool(cloud.meta.get("can_score_prompts", True))
    if engine not in ("builtin", "vllm"):
        raise ValueError(f"--cloud-engine {engine!r}: choose builtin or vllm")
    return engine == "builtin"


def cloud_setting(plans: list[Plan], cloud: CloudProfile, cfg: TuneConfig) -> dict | None:
    """The prefill chunk for ``pdd serve`` that keeps every cloud stream's tokens within its
    Δmax under load (``chunk_plan``); None when no bucket uses the cloud."""
    caps = [p.bucket.max_interval_s for p in plans if p.bucket.use_cloud]
    if not caps:
        return None
    return recommend_chunk(cloud, cfg.cloud_slots, max(cfg.input_lens), min(caps))


@command_from(TuneOptions, on_error=fail)
def tune_command(opts: TuneOptions) -> None:
    """Choose N, refine ratio and pacing per prompt-length bucket from measured profiles."""
    try:
        dev = load_named(opts.device_profile, "device")  # a file, or a `pdd profile list` name
        dev = with_speed_error(dev, opts.device_error)
        cloud = load_named(opts.cloud_profile, "cloud")
        trace = opts.trace and trace_path(opts.trace)
        lens, out_len = buckets_from_trace(trace, opts.input_lens, opts.output_len)
        notes = [check_prompt_lens(p, max(lens)) for p in (dev, cloud)]  # refuses far past range
        quality = load_quality(opts.quality_file) if opts.quality_file else None
        if quality is not None and opts.quality_floor is None:
            raise ValueError("--quality-file needs --quality-floor")
        ttft_s, tpot_s = parse_slo(opts.slo)
        can_score = cloud_can_score(opts.cloud_engine, cloud)
        cfg = TuneConfig(
            input_lens=lens,
            output_len=out_len,
            network=NetworkProfile(rtt_s=opts.rtt_ms / 1e3, jitter_s=opts.jitter_ms / 1e3),
            slo=Slo(ttft_s=ttft_s, tpot_s=tpot_s),
            quality=quality,
            quality_floor=opts.quality_floor,
            cloud_can_score=can_score,
            cloud_slots=opts.cloud_slots,
        )
        settings = tune(dev, cloud, cfg)
    except (ProfileError, InfeasibleError, ValueError, OSError) as exc:
        fail(str(exc))
    provenance = {**(settings.tuner or {}), "options": config_json(opts)}
    settings = settings.model_copy(update={"tuner": provenance})
    settings.save(opts.output)
    for note in filter(None, notes):
        typer.echo(note)
    for bucket, pred in zip(settings.buckets, settings.predictions, strict=True):
        typer.echo(
            f"L<={bucket.max_prompt_len:5d} cloud={bucket.use_cloud!s:5} N={bucket.cloud_tokens:4d}"
            f" rho={bucket.refine_ratio:.2f} Δ=[{bucket.min_interval_s * 1e3:.0f},"
            f"{bucket.max_interval_s * 1e3:.0f}] ms  m={pred['handoff_index']}"
            f" TTFT={pred['ttft_s']:.2f}s cloud={pred['cloud_busy_s']:.2f}s"
            f" (cloud-only {pred['cloud_only_busy_s']:.2f}s)\n    {bucket.reason}"
        )
    cloud_rec = (settings.tuner or {}).get("cloud")
    if cloud_rec:
        chunk = cloud_rec["prefill_chunk_tokens"]
        flag = f"pdd serve --prefill-chunk-tokens {chunk} " if chunk else ""
        typer.echo(f"cloud: {flag}({cloud_rec['reason']})")
    typer.echo(f"settings -> {opts.output}")
