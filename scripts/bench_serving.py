#!/usr/bin/env python3
"""Closed-loop throughput of an OpenAI-compatible /v1/completions endpoint: C clients each send
a 128-token prompt (random token ids) and read 128 streamed tokens with ignore_eos, until N
requests are done. Prints one JSON line per concurrency: generated tokens/s, request/s, median
TTFT. An interim driver until epas-loadtest exists; works against epas serve and llama-server.

usage: bench_serving.py URL --concurrency 1,4,16 [--ratio R] [--prompt-tokens 128]
                            [--max-tokens 128] [--requests-per-client 2]
"""
import argparse
import json
import random
import statistics
import threading
import time

import http.client
import urllib.parse


def one_request(url, prompt, max_tokens, ratio):
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True}
    if ratio is not None:
        body["sharing_ratio"] = ratio
    target = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=600)
    start = time.perf_counter()
    ttft, tokens = None, 0
    conn.request("POST", "/v1/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]!r}")
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        for c in chunk.get("choices", []):
            if c.get("text"):
                tokens += 1
                if ttft is None:
                    ttft = time.perf_counter() - start
    conn.close()
    return tokens, ttft


def run(url, concurrency, per_client, prompt_tokens, max_tokens, ratio, seed):
    rng = random.Random(seed)
    prompts = [[rng.randrange(100, 49000) for _ in range(prompt_tokens)]
               for _ in range(concurrency * per_client)]
    results, lock = [], threading.Lock()

    def client_loop(i):
        for j in range(per_client):
            out = one_request(url, prompts[i * per_client + j], max_tokens, ratio)
            with lock:
                results.append(out)

    start = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    generated = sum(t for t, _ in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "generated_tokens": generated,
        "seconds": round(seconds, 3),
        "generated_tokens_per_second": round(generated / seconds, 1),
        "requests_per_second": round(len(results) / seconds, 3),
        "median_ttft_seconds": round(statistics.median(t for _, t in results if t is not None), 3),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--ratio", type=float, default=None)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--requests-per-client", type=int, default=2)
    a = p.parse_args()
    for c in [int(x) for x in a.concurrency.split(",")]:
        row = run(a.url, c, a.requests_per_client, a.prompt_tokens, a.max_tokens, a.ratio, c)
        row["sharing_ratio"] = a.ratio
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
