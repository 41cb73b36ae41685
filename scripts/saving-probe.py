#!/usr/bin/env python3
"""What EPAS buys, on a running server: the time of one long-context completion at ratio 0 and at
ratio 0.5, in interleaved pairs (0 then 0.5, then 0.5 then 0, ...), each prompt new (a number in
front defeats the prefix cache), the median of each ratio and of the per-pair savings, with their
interquartile range. Standard library only.

    python3 scripts/saving-probe.py [--url http://127.0.0.1:8080] [--pairs 40]
        [--prompt-tokens 0] [--max-tokens 16] [--ratio 0.5]

--prompt-tokens 0 fills the model's context less --max-tokens and a margin. The last line says
whether the saving is above noise: the lower quartile of the per-pair savings is above 0."""

import argparse
import json
import statistics
import sys
import time
import urllib.error
import urllib.request

SENTENCE = "The economy of the nation grew as the people of the states worked and saved. "


def post(url, body, timeout=300):
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        sys.exit(f"{url}: HTTP {e.code}: {e.read().decode()}")


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def prompt(tokens, per_sentence, index):
    """A new prompt of about `tokens` tokens: a number (a different first token each time, so
    the prefix cache holds nothing of it), then the sentence repeated."""
    return f"{index * 7919 % 100003} " + SENTENCE * max(1, (tokens - 4) // per_sentence)


def quartiles(values):
    q = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return q[0], statistics.median(values), q[2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--prompt-tokens", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--ratio", type=float, default=0.5)
    args = ap.parse_args()
    if args.pairs < 2:
        sys.exit("--pairs must be at least 2")
    base = args.url.rstrip("/")
    model = get(base + "/v1/models")["data"][0]
    tokens = args.prompt_tokens or model["max_model_len"] - args.max_tokens - 16
    if tokens < 16:
        sys.exit(f"--prompt-tokens {tokens} is too short")
    per_sentence = post(base + "/tokenize", {"prompt": SENTENCE})["count"]
    times = {0.0: [], args.ratio: []}
    savings = []
    prompt_tokens = None
    for i in range(args.pairs + 1):
        order = [0.0, args.ratio] if i % 2 == 0 else [args.ratio, 0.0]
        pair = {}
        for j, ratio in enumerate(order):
            body = {
                "model": model["id"],
                "prompt": prompt(tokens, per_sentence, 2 * i + j),
                "max_tokens": args.max_tokens,
                "ignore_eos": True,
                "sharing_ratio": ratio,
            }
            start = time.perf_counter()
            answer = post(base + "/v1/completions", body)
            pair[ratio] = time.perf_counter() - start
            prompt_tokens = answer["usage"]["prompt_tokens"]
        if i == 0:
            continue  # warm-up
        for ratio, seconds in pair.items():
            times[ratio].append(seconds)
        savings.append(1 - pair[args.ratio] / pair[0.0])
    t0, tr = statistics.median(times[0.0]), statistics.median(times[args.ratio])
    low, mid, high = quartiles(savings)
    print(
        f"{model['id']}: {prompt_tokens} prompt + {args.max_tokens} generated tokens,"
        f" {args.pairs} interleaved pairs"
    )
    print(f"ratio 0: median {t0 * 1000:.1f} ms; ratio {args.ratio:g}: median {tr * 1000:.1f} ms")
    print(
        f"saving at ratio {args.ratio:g}: {100 * mid:.1f}% (per-pair median;"
        f" quartiles {100 * low:.1f}% .. {100 * high:.1f}%);"
        f" above noise: {'yes' if low > 0 else 'no'}"
    )


if __name__ == "__main__":
    main()
