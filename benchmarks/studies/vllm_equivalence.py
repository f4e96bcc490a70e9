"""Greedy answers of the vLLM cloud against the transformers device, token for token.

    python -m benchmarks.studies.vllm_equivalence --url http://127.0.0.1:8000 [--max-tokens 96]

``--url`` is a running ``pdd serve --engine vllm``. Each prompt is answered cloud-only by the vLLM
engine and device-only by transformers in this process (same model folder, fp32). Where two
answers part, the device's top-2 logit margin at that token says whether it was a near-tie that
the two runtimes' different kernels (summation order) may split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common.model import load_model
from common.platform import set_threads
from device_client.client import DeviceClient

QUESTIONS = [
    "Name three primary colours.",
    "Why is the sky blue?",
    "Write a haiku about a cat that sleeps in the sun.",
    "What is the capital of France, and what river runs through it?",
    "Explain in two sentences what a hash table is.",
    "List five fruits that are red.",
    "How do plants make their food?",
    "Give me a short recipe for pancakes.",
    "What is the difference between weather and climate?",
    "Translate 'good morning, my friend' into Spanish.",
    "Write a limerick about a programmer.",
    "Why do we have seasons on Earth?",
    "Summarise the plot of Romeo and Juliet in three sentences.",
    "What are the three states of matter?",
    "Count from one to twenty in words.",
    "Tell me a fun fact about octopuses.",
]
CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus.txt"


def corpus_prompts(num: int, num_words: int = 350) -> list[str]:
    """Long prompts: slices of the bundled corpus with a question after them."""
    words = CORPUS.read_text().split()
    step = len(words) // (num + 1)
    slices = [" ".join(words[i * step : i * step + num_words]) for i in range(1, num + 1)]
    return [f"{text}\n\nSummarise the passage above in two sentences." for text in slices]


def top2_margin(loaded, prompt_ids: list[int], answer_prefix: list[int]) -> tuple[float, int, int]:
    """The device's (logit gap, best id, second id) for the token after ``answer_prefix``."""
    ids = torch.tensor([prompt_ids + answer_prefix], device=loaded.platform.device)
    with torch.inference_mode():
        logits = loaded.model(ids).logits[0, -1].float()
    top = torch.topk(logits, 2)
    return float(top.values[0] - top.values[1]), int(top.indices[0]), int(top.indices[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="a running pdd serve --engine vllm")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--num-long", type=int, default=8, help="corpus prompts besides questions")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    loaded = load_model()
    cloud = DeviceClient(args.url, model=loaded)
    device = DeviceClient(None, model=loaded)
    prompts = QUESTIONS + corpus_prompts(args.num_long)
    num_same = 0
    for prompt in prompts:
        got = cloud.generate(prompt, max_tokens=args.max_tokens, mode="cloud")
        want = device.generate(prompt, max_tokens=args.max_tokens, mode="device")
        assert got.fallback is None, got.fallback
        if got.token_ids == want.token_ids:
            num_same += 1
            continue
        i = next(
            (
                k
                for k, (a, b) in enumerate(zip(got.token_ids, want.token_ids, strict=False))
                if a != b
            ),
            min(len(got.token_ids), len(want.token_ids)),
        )
        gap, best, second = top2_margin(loaded, loaded.encode(prompt=prompt), want.token_ids[:i])
        print(
            f"DIFFERS at token {i} of {prompt[:40]!r}: vLLM {got.token_ids[i : i + 1]} "
            f"transformers {want.token_ids[i : i + 1]}; transformers' top-2 {best}/{second}, "
            f"logit gap {gap:.2e}"
        )
    print(f"{num_same}/{len(prompts)} greedy answers identical ({args.max_tokens} tokens max)")
    cloud.close()


if __name__ == "__main__":
    main()
