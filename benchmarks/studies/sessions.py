"""Sessions study: a multi-turn conversation with device sessions against the same turns without.

    pdd study sessions [--device-slowdown 4] [--chapters 1,2,3] [--max-tokens 24] [--cloud-prefix-cache]
    (or python -m benchmarks.studies.sessions with the same options)

An embedded cloud on loopback and one device client. Each turn of the scripted conversation
(``benchmarks/data/conversation.py``: pasted chapters of Jonah, each followed by a short
question) runs twice, back to back: as a session turn (the device prefills only what its cache
lacks, and the settings bucket follows that work), then as a fresh request with the same prompt
ids (the device prefills the whole history). Per turn: TTFT, the device's prefill tokens and
(emulated) seconds, the handoff index, cloud busy and prefill seconds, cached tokens.
"""

from __future__ import annotations

import contextlib
import json

from benchmarks.data.conversation import jonah_turns
from benchmarks.studies.options import SessionsStudyOptions, fail
from common.platform import set_threads
from common.settings import Bucket, SplitSettings
from device_client.answer import Answer
from device_client.client import DeviceClient
from device_client.embedded import embedded_cloud


def study_settings(max_device_alone: int, cloud_tokens: int) -> SplitSettings:
    """Device-only up to ``max_device_alone`` tokens to prefill; pd with N cloud tokens above."""
    pd = Bucket(
        max_prompt_len=1 << 20, cloud_tokens=cloud_tokens, min_interval_s=0.0, max_interval_s=0.25
    )
    if max_device_alone <= 0:
        return SplitSettings(buckets=[pd])
    alone = Bucket(
        max_prompt_len=max_device_alone,
        use_cloud=False,
        cloud_tokens=0,
        min_interval_s=0.0,
        max_interval_s=0.25,
        reason="the device's cache holds the history: a short follow-up needs no cloud",
    )
    return SplitSettings(buckets=[alone, pd])


def turn_row(answer: Answer) -> dict:
    r, local = answer.result, answer.session
    end = answer.state.cloud_end
    usage = end.usage if end is not None else None
    return {
        "mode": r.mode.value,
        "prompt_tokens": r.prompt_tokens,
        "device_cached_tokens": r.cached_prompt_tokens,
        "device_prefill_tokens": local.prompt_done - local.num_cached,
        "device_prefill_s": local.prefill_s,
        "ttft_s": r.ttft_s,
        "handoff_index": r.handoff_index,
        "cloud_busy_s": r.cloud_busy_s,
        "cloud_prefill_s": usage.prefill_s if usage else None,
        "cloud_cached_tokens": r.cloud_cached_tokens,
        "fallback": r.fallback,
        "token_ids": r.token_ids,
    }


def run(args: SessionsStudyOptions) -> list[dict]:
    set_threads(args.threads)
    turns = jonah_turns(tuple(int(c) for c in args.chapters.split(",")))
    settings = study_settings(args.max_device_alone, args.cloud_tokens)
    rows = []
    device = {
        "threads": args.threads,
        "device_slowdown": args.device_slowdown,
        "settings": settings,
    }
    with contextlib.ExitStack() as stack:
        cloud = stack.enter_context(embedded_cloud(threads=args.cloud_threads))
        fresh_cloud = cloud
        if args.cloud_prefix_cache:  # the fresh turns go to a cloud without one
            off = ("--prefix-cache-mb", "0")
            fresh_cloud = stack.enter_context(embedded_cloud(*off, threads=args.cloud_threads))
        client = stack.enter_context(contextlib.closing(DeviceClient(cloud.http_url, **device)))
        fresh_client = client
        if fresh_cloud is not cloud:
            fresh_client = DeviceClient(fresh_cloud.http_url, model=client.model, **device)
            stack.callback(fresh_client.close)
        chat = client.session()
        for number, message in enumerate(turns, 1):
            chat.generate(message, max_tokens=args.max_tokens)
            with_session = turn_row(chat.last_answer)
            prompt = chat.token_ids[: chat.turns[-1].prompt_tokens]
            fresh = fresh_client.answer(prompt_ids=prompt, max_tokens=args.max_tokens)
            for _ in fresh_client.stream_answer(fresh):
                pass
            without = turn_row(fresh)
            same = with_session.pop("token_ids") == without.pop("token_ids")
            rows.append(
                {"turn": number, "same_answer": same, "session": with_session, "fresh": without}
            )
            print(_line(rows[-1]), flush=True)
    return rows


def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _line(row: dict) -> str:
    s, f = row["session"], row["fresh"]
    return (
        f"| {row['turn']} | {s['prompt_tokens']} | {s['device_cached_tokens']} | {s['mode']} / {f['mode']} "
        f"| {s['device_prefill_tokens']} / {f['device_prefill_tokens']} "
        f"| {_fmt(s['device_prefill_s'])} / {_fmt(f['device_prefill_s'])} "
        f"| {_fmt(s['ttft_s'])} / {_fmt(f['ttft_s'])} "
        f"| {_fmt(s['handoff_index'], 'd')} / {_fmt(f['handoff_index'], 'd')} "
        f"| {_fmt(s['cloud_busy_s'])} / {_fmt(f['cloud_busy_s'])} "
        f"| {_fmt(s['cloud_prefill_s'])} / {_fmt(f['cloud_prefill_s'])} "
        f"| {_fmt(s['cloud_cached_tokens'], 'd')} | {'yes' if row['same_answer'] else 'no'} |"
    )


HEADER = (
    "| turn | prompt | device cached | mode | device prefill tokens | device prefill s | TTFT s "
    "| handoff m | cloud busy s | cloud prefill s | cloud cached | same answer |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def summary(rows: list[dict]) -> str:
    later = rows[1:]
    tok = sum(r["fresh"]["device_prefill_tokens"] for r in later) / max(
        sum(r["session"]["device_prefill_tokens"] for r in later), 1
    )
    sec = sum(r["fresh"]["device_prefill_s"] for r in later) / max(
        sum(r["session"]["device_prefill_s"] for r in later), 1e-9
    )
    worst = min(
        r["fresh"]["device_prefill_tokens"] / max(r["session"]["device_prefill_tokens"], 1)
        for r in later
    )
    cloud_calls = sum(r["session"]["mode"] != "device" for r in rows)
    cached_1k = [
        r["fresh"]["cloud_prefill_s"] / max(r["session"]["cloud_prefill_s"], 1e-9)
        for r in rows
        if (r["session"]["cloud_cached_tokens"] or 0) >= 1000 and r["fresh"]["cloud_prefill_s"]
    ]
    cloud = (
        f"cloud prefill with a cached prefix of >= 1k tokens: {min(cached_1k):.1f}x faster "
        f"(worst of {len(cached_1k)} turns; target >= 3x); "
        if cached_1k
        else "no session turn had a cloud-cached prefix of >= 1k tokens; "
    )
    return cloud + (
        f"turns 2-{len(rows)}: device prefill work {tok:.1f}x fewer tokens, {sec:.1f}x fewer "
        f"seconds without sessions / with (target >= 5x; worst single turn {worst:.1f}x); "
        f"cloud called in {cloud_calls} of {len(rows)} session turns; answers identical: "
        f"{sum(r['same_answer'] for r in rows)}/{len(rows)}"
    )


def main(options: SessionsStudyOptions) -> None:
    print("session / fresh (no session) per cell\n" + HEADER, flush=True)
    rows = run(options)
    print(summary(rows))
    if options.output:
        record = {"options": {k: str(v) for k, v in vars(options).items()}, "rows": rows}
        options.output.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    import typer

    from common.cli_options import command_from

    typer.run(command_from(SessionsStudyOptions, on_error=fail)(main))
