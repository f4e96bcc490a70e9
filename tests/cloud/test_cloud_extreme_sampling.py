"""Issue 11 item 1 over the wire: an extreme but valid sampling value, decoding beside ordinary
greedy streams on one server, ends nobody's answer (it once failed the whole batch with a 500)."""

from __future__ import annotations

import threading

import httpx
from cloud_clients import story
from support import end_of, http_events, token_ids

from common.messages import EndReason


def test_extreme_values_next_to_greedy_streams(cloud_server):
    url = cloud_server.http_url
    alone = token_ids(http_events(url, story(max_tokens=10, cloud_tokens=9)))
    model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
    greedy: list[list] = [[], []]
    replies: list[httpx.Response] = []

    def pd(i: int) -> None:
        greedy[i] = http_events(url, story(max_tokens=10, cloud_tokens=9))

    def openai_call(sampling: dict) -> None:
        body = {"model": model, "prompt": "Once upon a time", "max_tokens": 10}
        replies.append(httpx.post(url + "/v1/completions", json=body | sampling, timeout=60))

    threads = [threading.Thread(target=pd, args=(i,)) for i in range(2)]
    threads += [
        threading.Thread(target=openai_call, args=(s,))
        for s in ({"temperature": 8.5e-38}, {"temperature": 0.7, "top_p": 1e-300})
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [token_ids(events) for events in greedy] == [alone, alone]
    assert [end_of(events).reason for events in greedy] == [EndReason.BUDGET] * 2
    assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
    assert all(r.json()["usage"]["completion_tokens"] == 10 for r in replies)
