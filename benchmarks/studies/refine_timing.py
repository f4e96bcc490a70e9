"""Timing side of the refinement benchmark: device prefill curve, prefill saved, scoring overhead.

Each measurement takes the fastest of a few repeats (single timings on a shared 2-core machine are
mostly noise); ``benchmarks.studies.refine_quality`` calls these and reports them.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.data.refine_prompts import DATA
from common.forward import forward_tokens, new_cache
from common.model import LoadedModel


def timed_prefill(model, ids: list[int], positions: list[int]):
    cache = new_cache(model)
    start = time.perf_counter()
    logits = forward_tokens(model, ids, positions, cache)  # [vocab]
    return logits, cache, time.perf_counter() - start


def fixed_length_ids(loaded: LoadedModel, num_tokens: int) -> list[int]:
    """A chat prompt of exactly ``num_tokens`` tokens: corpus text, cut in the middle."""
    corpus = (DATA / "corpus.txt").read_text()
    ids = loaded.encode(corpus[: num_tokens * 6] + "\n\nSummarize the text above.")
    tail = 16  # keeps the task and the assistant header
    return ids[: num_tokens - tail] + ids[-tail:]


def _min_time(fn, repeats: int) -> float:
    """Fastest wall time of ``repeats`` calls: on a shared machine the least disturbed run."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def prefill_curve(loaded, lengths=(128, 256, 512, 1024, 1536, 2048), repeats: int = 3) -> dict:
    """Device prefill seconds by token count (fastest of ``repeats``), for ``curve_time``."""
    model, ids = loaded.model, fixed_length_ids(loaded, max(lengths))
    return {
        n: _min_time(lambda n=n: timed_prefill(model, ids[:n], list(range(n))), repeats)
        for n in lengths
    }


def curve_time(curve: dict, num_tokens: int) -> float:
    """Tpd(n), linear between the measured lengths (and through 0)."""
    return float(np.interp(num_tokens, [0, *curve], [0.0, *curve.values()]))


def scoring_overhead(loaded, refiner, num_tokens: int, repeats: int) -> dict:
    """Cloud prefill with capture + keep_set against the plain prefill, medians of ``repeats``."""
    model, ids = loaded.model, fixed_length_ids(loaded, num_tokens)
    positions = list(range(len(ids)))
    plain = _min_time(lambda: forward_tokens(model, ids, positions, new_cache(model)), repeats)
    captures = []

    def captured():
        with refiner.capture() as cap:
            forward_tokens(model, ids, positions, new_cache(model))
        captures.append(cap)

    forward_s = _min_time(captured, repeats)
    keep_s = _min_time(lambda: captures.pop().keep_set(ids, 0.5), repeats)
    return {
        "num_tokens": len(ids),
        "prefill_s": plain,
        "prefill_with_hooks_s": forward_s,
        "keep_set_s": keep_s,
        "keep_set_share": keep_s / plain,
        "overhead_share": (forward_s + keep_s - plain) / plain,
    }


def prefill_saving(loaded, refiner, num_tokens: int, ratios, repeats: int) -> dict:
    """Device prefill of the kept tokens against all of them, at exactly ``num_tokens``."""
    model, ids = loaded.model, fixed_length_ids(loaded, num_tokens)
    with refiner.capture() as cap:
        forward_tokens(model, ids, list(range(len(ids))), new_cache(model))
    plans = {0.0: list(range(len(ids)))}
    plans.update({rho: cap.keep_set(ids, rho).kept_positions for rho in ratios})
    result = {"num_tokens": len(ids), "ratios": {}}
    for rho, kept in plans.items():
        kept_ids = [ids[p] for p in kept]
        seconds = _min_time(lambda i=kept_ids, k=kept: timed_prefill(model, i, k), repeats)
        result["ratios"][str(rho)] = {"num_kept": len(kept), "prefill_s": seconds}
    full_s = result["ratios"]["0.0"]["prefill_s"]
    for entry in result["ratios"].values():
        entry["prefill_saved"] = 1.0 - entry["prefill_s"] / full_s
    return result
