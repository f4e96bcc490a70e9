"""Prompt refinement: what it saves on the device and what it costs in answer quality.

    pdd study refine-quality [--quick] [--save-result out.json]
    (or python -m benchmarks.studies.refine_quality, the same options)

For each prompt of ``benchmarks/data/prompts.json``: the cloud prefill runs once under
``Refiner.capture()``; the device then prefills all tokens (the reference answer) and, for each
refine ratio rho, the kept tokens of the attention keep-set and of the naive keep-last-(1-rho)L
baseline, with their true (gapped) positions, and decodes greedily. Metrics: device prefill time
saved, first-32-token agreement and ROUGE-L against the unrefined answer, the log-likelihood the
refined context gives to the unrefined answer's first 32 tokens, whether the needle fact was kept
and answered, and the handoff index / cloud tokens saved from the timing model.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.data.refine_prompts import Prompt, load_prompts, mixed_order
from cloud_server.refine import RefineConfig, Refiner, num_kept
from common.forward import cache_kwargs, forward_tokens, new_cache
from common.model import LoadedModel, load_model
from common.platform import set_threads
from common.timing_model import min_safe_budget

from .options import RefineStudyOptions, fail
from .refine_timing import (
    curve_time,
    prefill_curve,
    prefill_saving,
    scoring_overhead,
    timed_prefill,
)

NUM_COMPARED = 32  # first answer tokens compared / scored


# ---------------------------------------------------------------- metrics


def rouge_l(reference: list[int], candidate: list[int]) -> float:
    """ROUGE-L F1 over token ids (longest common subsequence)."""
    if not reference or not candidate:
        return float(reference == candidate)
    prev = [0] * (len(candidate) + 1)
    for r in reference:
        cur = [0]
        for j, c in enumerate(candidate):
            cur.append(prev[j] + 1 if r == c else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


def agreement(reference: list[int], candidate: list[int], num: int = NUM_COMPARED) -> float:
    """Share of the reference's first ``num`` tokens that the candidate has at the same index."""
    ref = reference[:num]
    if not ref:
        return 1.0
    return sum(i < len(candidate) and candidate[i] == t for i, t in enumerate(ref)) / len(ref)


# ---------------------------------------------------------------- device runs


@dataclass
class Run:
    tokens: list[int]
    prefill_s: float
    decode_s_per_token: float
    loglik: float = 0.0  # sum of log p(reference token) over the first NUM_COMPARED


@torch.inference_mode()
def _loglik(model, logits, cache, next_pos: int, reference: list[int]) -> float:
    """log p(reference[:32] | context) teacher-forced in one forward (consumes ``cache``)."""
    ref = reference[:NUM_COMPARED]
    total = float(torch.log_softmax(logits.float(), -1)[ref[0]])
    if len(ref) > 1:
        past = cache.get_seq_length()
        out = model(
            input_ids=torch.tensor([ref[:-1]]),  # [1, n-1]
            position_ids=torch.arange(next_pos, next_pos + len(ref) - 1)[None],  # [1, n-1]
            attention_mask=torch.ones(1, past + len(ref) - 1, dtype=torch.long),
            **cache_kwargs(model, cache),
            use_cache=True,
        )
        logp = torch.log_softmax(out.logits[0].float(), -1)  # [n-1, vocab]
        total += float(logp.gather(1, torch.tensor(ref[1:])[:, None]).sum())
    return total


def device_run(loaded: LoadedModel, ids, positions, num_prompt, max_new, reference=None) -> Run:
    """Prefill ``ids`` at ``positions``, decode greedily from position ``num_prompt`` on, then
    score ``reference`` (default: the own answer) teacher-forced on the same prefilled cache."""
    model = loaded.model
    first_logits, cache, prefill_s = timed_prefill(model, ids, positions)
    tokens = [int(torch.argmax(first_logits))]
    start = time.perf_counter()
    while len(tokens) < max_new and tokens[-1] not in loaded.eos_token_ids:
        logits = forward_tokens(model, [tokens[-1]], [num_prompt + len(tokens) - 1], cache)
        tokens.append(int(torch.argmax(logits)))
    decode_s = (time.perf_counter() - start) / max(len(tokens) - 1, 1)
    if cache.get_seq_length() > len(ids):  # back to the prefilled prompt
        cache.crop(len(ids) - cache.get_seq_length())  # negative: tokens to remove
    loglik = _loglik(model, first_logits, cache, num_prompt, reference or tokens)
    return Run(tokens, prefill_s, decode_s, loglik)


# ---------------------------------------------------------------- one prompt


@dataclass
class Row:
    prompt_id: str
    method: str  # "attention" | "last" | "full"
    refine_ratio: float
    num_prompt: int
    num_kept: int
    prefill_s: float  # wall-clock seconds (from the measured prefill curve)
    prefill_saved: float  # 1 - prefill_s / full prefill_s
    agreement_32: float
    rouge_l: float
    loglik_32: float
    loglik_delta: float  # against the full context's loglik of its own answer
    fact_kept: bool | None  # needle answer text survives in the kept tokens
    fact_answered: bool | None  # needle answer text appears in the answer
    handoff_index: int = 0
    cloud_tokens_saved: int = 0
    extra: dict = field(default_factory=dict)


def evaluate_prompt(loaded, refiner, prompt: Prompt, ratios, max_new) -> list[Row]:
    ids = loaded.encode(prompt.text)
    num_prompt = len(ids)
    with refiner.capture() as cap:  # the cloud's prefill
        forward_tokens(loaded.model, ids, list(range(num_prompt)), new_cache(loaded.model))
    all_positions = list(range(num_prompt))
    full = device_run(loaded, ids, all_positions, num_prompt, max_new)
    rows = [_row(loaded, prompt, "full", 0.0, all_positions, ids, full, full)]
    for rho in ratios:
        keep = num_kept(num_prompt, rho)
        plans = {
            "attention": cap.keep_set(ids, rho).kept_positions,
            "last": list(range(num_prompt - keep, num_prompt)),
        }
        for method, kept in plans.items():
            kept_ids = [ids[p] for p in kept]
            run = device_run(loaded, kept_ids, kept, num_prompt, max_new, full.tokens)
            rows.append(_row(loaded, prompt, method, rho, kept, ids, run, full))
    return rows


def _contains(loaded, token_ids: list[int], answer: str) -> bool | None:
    if not answer:
        return None
    return answer.lower() in loaded.tokenizer.decode(token_ids).lower()


def _row(loaded, prompt, method, rho, kept, ids, run: Run, full: Run) -> Row:
    return Row(
        prompt_id=prompt.id,
        method=method,
        refine_ratio=rho,
        num_prompt=len(ids),
        num_kept=len(kept),
        prefill_s=run.prefill_s,
        prefill_saved=1.0 - run.prefill_s / full.prefill_s,  # replaced by apply_prefill_curve
        agreement_32=agreement(full.tokens, run.tokens),
        rouge_l=rouge_l(full.tokens, run.tokens),
        loglik_32=run.loglik,
        loglik_delta=run.loglik - full.loglik,
        fact_kept=_contains(loaded, [ids[p] for p in kept], prompt.answer),
        fact_answered=_contains(loaded, run.tokens, prompt.answer),
        extra={
            "decode_s_per_token": run.decode_s_per_token,
            "answer_len": len(run.tokens),
            "prefill_saved_single_shot": 1.0 - run.prefill_s / full.prefill_s,
        },
    )


# ---------------------------------------------------------------- timing model


def apply_prefill_curve(rows: list[Row], curve: dict) -> None:
    """Prefill time saved per row from the measured curve: one prompt's single-shot timing is
    mostly noise on a shared machine (kept in ``extra``)."""
    for row in rows:
        full_s = curve_time(curve, row.num_prompt)
        row.prefill_s = curve_time(curve, row.num_kept)
        row.prefill_saved = 1.0 - row.prefill_s / full_s


def add_handoff_estimates(rows: list[Row], opts: RefineStudyOptions) -> None:
    """Handoff index m and cloud tokens saved, from the timing model on a nominal device.

    Tpd(n) = n / device_prefill_tok_s scaled by the measured saving, τd = device_decode_s,
    TTFT(pd) = RTT + Tpd(L) / cloud_speedup, and m = the cloud tokens shown τd apart until the
    device's first own token: ARCHITECTURE §2's no-stall budget at Δ = τd
    (``timing_model.min_safe_budget``); absorbing the m shown tokens is ignored.
    Cloud tokens saved = m(rho = 0) - m(rho): the device catches up sooner by the prefill time saved.
    """
    tau_d = opts.device_decode_s
    for row in rows:
        full_s = row.num_prompt / opts.device_prefill_tok_s  # [s] Tpd(L)
        kept_s = full_s * (1.0 - row.prefill_saved)  # [s] Tpd((1 - rho) L)
        ttft = opts.rtt_ms / 1000 + full_s / opts.cloud_speedup
        m_full = min_safe_budget(ttft, full_s, tau_d, tau_d)
        row.handoff_index = min_safe_budget(ttft, kept_s, tau_d, tau_d)
        row.cloud_tokens_saved = m_full - row.handoff_index


# ---------------------------------------------------------------- timings at a fixed length


def summarize(rows: list[Row]) -> list[dict]:
    groups: dict[tuple[str, float], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.method, row.refine_ratio), []).append(row)
    summary = []
    for (method, rho), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        needles = [r for r in group if r.fact_kept is not None]
        summary.append(
            {
                "method": method,
                "refine_ratio": rho,
                "num_prompts": len(group),
                "kept_share": statistics.mean(r.num_kept / r.num_prompt for r in group),
                "prefill_saved": statistics.mean(r.prefill_saved for r in group),
                "agreement_32": statistics.mean(r.agreement_32 for r in group),
                "rouge_l": statistics.mean(r.rouge_l for r in group),
                "loglik_delta_per_token": statistics.mean(
                    r.loglik_delta / NUM_COMPARED for r in group
                ),
                "fact_kept": statistics.mean(r.fact_kept for r in needles) if needles else None,
                "fact_answered": (
                    statistics.mean(r.fact_answered for r in needles) if needles else None
                ),
                "handoff_index": statistics.mean(r.handoff_index for r in group),
                "cloud_tokens_saved": statistics.mean(r.cloud_tokens_saved for r in group),
            }
        )
    return summary


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def print_report(console: Console, summary: list[dict], timing: dict, overhead: dict) -> None:
    table = Table(title="Prompt refinement: quality against the unrefined answer (means)")
    for name in (
        "method", "rho", "kept", "prefill saved", "agree@32", "ROUGE-L",
        "dlogp/tok", "fact kept", "fact answered", "handoff m", "cloud tok saved",
    ):  # fmt: skip
        table.add_column(name, justify="right")
    for s in summary:
        table.add_row(
            s["method"], f"{s['refine_ratio']:.2f}", _pct(s["kept_share"]),
            _pct(s["prefill_saved"]), _pct(s["agreement_32"]), f"{s['rouge_l']:.2f}",
            f"{s['loglik_delta_per_token']:+.3f}", _pct(s["fact_kept"]),
            _pct(s["fact_answered"]), f"{s['handoff_index']:.1f}",
            f"{s['cloud_tokens_saved']:.1f}",
        )  # fmt: skip
    console.print(table)
    saved = ", ".join(
        f"rho={rho}: {_pct(v['prefill_saved'])} ({v['num_kept']} kept)"
        for rho, v in timing["ratios"].items()
        if rho != "0.0"
    )
    console.print(f"Device prefill at {timing['num_tokens']} tokens, time saved: {saved}")
    console.print(
        f"Cloud scoring overhead at {overhead['num_tokens']} tokens: "
        f"{100 * overhead['overhead_share']:.1f}% of a {overhead['prefill_s']:.2f} s prefill "
        f"(keep_set alone {100 * overhead['keep_set_share']:.1f}%)"
    )


# ---------------------------------------------------------------- main


def refine_config(opts: RefineStudyOptions) -> RefineConfig:
    """The product's refinement config with the study's sweep overrides."""
    base = RefineConfig()
    return RefineConfig(
        opts.score_layers,
        window=base.window if opts.window is None else opts.window,
        pool_kernel=base.pool_kernel if opts.pool_kernel is None else opts.pool_kernel,
    )


def main(opts: RefineStudyOptions) -> dict:
    console = Console(width=150)  # the table stays readable in logs and pipes
    set_threads(opts.threads)
    loaded = load_model(opts.model)
    refiner = Refiner(loaded.model, loaded.tokenizer, refine_config(opts))
    prompts = mixed_order(load_prompts())[: opts.limit]
    overhead = scoring_overhead(loaded, refiner, 1024, max(opts.repeats, 3))
    timing = prefill_saving(loaded, refiner, 2048, opts.ratios, opts.repeats)
    curve = prefill_curve(loaded, repeats=opts.repeats)
    rows: list[Row] = []
    for i, prompt in enumerate(prompts):
        start = time.perf_counter()
        rows += evaluate_prompt(loaded, refiner, prompt, opts.ratios, opts.max_new_tokens)
        console.log(f"{i + 1}/{len(prompts)} {prompt.id}: {time.perf_counter() - start:.1f} s")
        result = _result(opts, rows, timing, overhead, curve)  # saved after every prompt
        if opts.save_result:
            opts.save_result.write_text(json.dumps({**result, "num_done": i + 1}, indent=1))
    print_report(console, result["summary"], timing, overhead)
    return result


def _result(opts, rows: list[Row], timing: dict, overhead: dict, curve: dict) -> dict:
    apply_prefill_curve(rows, curve)
    tau_d = statistics.median(r.extra["decode_s_per_token"] for r in rows if r.method == "full")
    add_handoff_estimates(rows, opts)
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "threads": torch.get_num_threads(),
        "measured_decode_s_per_token_wall": tau_d,
        "prompt_tokens": [r.num_prompt for r in rows if r.method == "full"],
        "scoring_overhead": overhead,
        "prefill_saving": timing,
        "prefill_curve_s": curve,
        "summary": summarize(rows),
        "rows": [asdict(r) for r in rows],
    }


if __name__ == "__main__":
    import typer

    from common.cli_options import command_from

    typer.run(command_from(RefineStudyOptions, on_error=fail)(lambda opts: main(opts.resolved())))
