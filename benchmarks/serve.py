"""`make bench-serve`: `charlm serve` under load, against the sampler's own batched rate.

On the reference model (Embedding 65 -> 64, 2x512 LSTM, Dense; trained one step, since
speed does not depend on the weights), in one run:

1. the Sampler's own rate for 64 streams, as `charlm bench` measures it (no server),
   before and after the load tests of points 2 and 4, whose ratios use the mean of both;
2. a `charlm serve` process with 64 lanes; 1, 8, 32 and 64 concurrent clients each
   streaming completions back to back: aggregate characters per second received;
3. time to the first character of each of those completions (after a 100-character
   prompt): p50 and p99; again with completions of 50 characters, where reading the
   prompts is most of the work; and with 32 clients asking for lengths drawn from
   200-600 characters (400 on average), as people do: clients that all ask for the same
   length end together, send their next prompts together and wait for them to be read
   together, which is the worst case for the first character;
4. 64 clients doing the sampler's own job (a 1-character prompt, 500 characters), which
   tells the cost of serving from the cost of reading prompts;
5. 8 clients' load with one request of a 20,000-character prompt sent in the middle:
   the others' first characters and the longest pause in their streams;
6. the server's resident memory after 500 requests, then after each quarter of 10,000
   more.

    python benchmarks/serve.py [--seconds 15] [--requests 10000] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

PROMPT = (
    "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. "
    "First Citizen: You"
)[:100]


def reference_run(root: Path) -> Path:
    from charlm.bench.reference import REFERENCE, reference_corpus
    from charlm.config import load_config
    from charlm.training.loop import train

    settings = [f"model.{k}={REFERENCE[k]}" for k in ("layers", "units", "embedding_dim")] + [
        "model.cell=lstm",
        "train.steps=1",
        "train.batch_size=8",
        "train.seq_length=16",
        f"data.corpus={reference_corpus(root)}",
        "data.val_max_chars=101",
        f"train.run_dir={root / 'run'}",
    ]
    train(load_config(None, settings))
    return root / "run"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(run: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "charlm.cli",
            "serve",
            "-c",
            str(run),
            "--port",
            str(port),
            "--lanes",
            "64",
            "--queue",
            "1024",
            "--max-tokens",
            "100000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(f"{url}/health", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


def stream_completion(
    connection: http.client.HTTPConnection,
    prompt: str,
    max_tokens: int,
    seed: int,
    window: tuple[float, float],
):
    """(seconds to the first character, characters received within the `window` of
    perf_counter times, the longest wait between two pieces of text) of one streamed
    completion.
    http.client, not a heavier client: the load generator shares the machine's cores
    with the server, and every cycle it spends is one the server does not get."""
    started = time.perf_counter()
    first, chars, longest_gap, last = None, 0, 0.0, None
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "seed": seed, "stream": True})
    connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    for line in response:
        if line.startswith(b"data: {"):
            text = json.loads(line[6:])["choices"][0]["text"]
            now = time.perf_counter()
            if text and first is None:
                first = now - started
            if text and last is not None:
                longest_gap = max(longest_gap, now - last)
            last = now if text else last
            chars += len(text) if window[0] <= now < window[1] else 0
    return first, chars, longest_gap


def load_test(
    url: str,
    clients: int,
    seconds: float,
    max_tokens: int | tuple[int, int],
    prompt: str = PROMPT,
) -> dict:
    """Each client streams completions back to back, of `max_tokens` characters, or of a
    length drawn uniformly from a (low, high) range. Clients start one by one over the
    first second, as independent users would arrive. After a 3-second warm-up, for
    `seconds`: the characters received (while every client is busy, so that neither
    the start nor the ragged end counts) and the first-character waits of the
    completions begun."""
    stop_at = time.perf_counter() + seconds + 3
    count_from = stop_at - seconds
    counted = [0] * clients
    first_chars = [[] for _ in range(clients)]
    gaps = [0.0] * clients

    host, port = url.removeprefix("http://").split(":")

    def client_loop(index):
        time.sleep(index / clients)
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        seed = index * 1000
        lengths = random.Random(index)
        while time.perf_counter() < stop_at:
            seed += 1
            length = max_tokens if isinstance(max_tokens, int) else lengths.randint(*max_tokens)
            began = time.perf_counter()
            window = (count_from, stop_at)
            first, chars, gap = stream_completion(connection, prompt, length, seed, window)
            counted[index] += chars
            if began >= count_from:
                first_chars[index].append(first)
                gaps[index] = max(gaps[index], gap)
        connection.close()

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    waits = sorted(w for per_client in first_chars for w in per_client if w is not None)
    return {
        "chars_per_s": sum(counted) / seconds,
        "first_char_p50_ms": 1000 * statistics.median(waits) if waits else None,
        "first_char_p99_ms": 1000 * waits[int(0.99 * (len(waits) - 1))] if waits else None,
        "completions": len(waits),
        "longest_pause_ms": 1000 * max(gaps),
    }


def long_prompt_beside(url: str, seconds: float) -> dict:
    """8 clients' load (as in load_test) with one request of a 20,000-character prompt
    sent in the middle of it: how long it takes, and what it does to the others."""
    took = {}

    def long_request():
        time.sleep(3 + seconds / 3)
        started = time.perf_counter()
        body = {"prompt": (PROMPT * 200)[:20_000], "max_tokens": 5}
        httpx.post(f"{url}/v1/completions", json=body, timeout=600).raise_for_status()
        took["seconds"] = time.perf_counter() - started

    sender = threading.Thread(target=long_request)
    sender.start()
    results = load_test(url, 8, seconds, 400)
    sender.join()
    return {**results, "long_request_s": took["seconds"]}


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024


def many_requests(url: str, count: int, clients: int = 32) -> None:
    done = iter(range(count))
    lock = threading.Lock()

    def client_loop():
        with httpx.Client() as client:
            while True:
                with lock:
                    index = next(done, None)
                if index is None:
                    return
                body = {"prompt": PROMPT[: index % 100], "max_tokens": 4, "seed": index}
                client.post(f"{url}/v1/completions", json=body, timeout=60).raise_for_status()

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


SAMPLER_LENGTH = 1500  # characters per stream: about 5 s of the 2x512 LSTM at 64 streams


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from charlm.bench.sampling import sampling_chars_per_s

    results = {}
    with tempfile.TemporaryDirectory(prefix="charlm-bench-serve-") as root:
        run = reference_run(Path(root))
        process, url = start_server(run)
        try:
            # The sampler's rate before and after the server's load tests (its server
            # idle meanwhile): the ratios use their mean, as the machine's speed drifts.
            sampler_rates = [sampling_chars_per_s(run, 64, SAMPLER_LENGTH)]
            results["clients"] = {n: load_test(url, n, args.seconds, 400) for n in (1, 8, 32, 64)}
            results["sampler_job"] = load_test(url, 64, args.seconds, 500, prompt=PROMPT[:1])
            sampler_rates.append(sampling_chars_per_s(run, 64, SAMPLER_LENGTH))
            results["sampler_64_streams_runs"] = sampler_rates
            results["sampler_64_streams_chars_per_s"] = statistics.mean(sampler_rates)
            results["first_char"] = {n: load_test(url, n, args.seconds, 50) for n in (1, 32)}
            results["varied_lengths"] = load_test(url, 32, args.seconds, (200, 600))
            results["long_prompt_beside"] = long_prompt_beside(url, args.seconds)
            many_requests(url, 500)
            results["rss_mb"] = {0: rss_mb(process.pid)}
            for done in range(1, 5):
                many_requests(url, args.requests // 4)
                results["rss_mb"][done * (args.requests // 4)] = rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait()
    print(json.dumps(results, indent=2) if args.json else report(results))


def report(results: dict) -> str:
    sampler = results["sampler_64_streams_chars_per_s"]
    lines = [
        f"sampler alone, 64 streams: {sampler:,.0f} chars/s (mean of "
        + " and ".join(f"{rate:,.0f}" for rate in results["sampler_64_streams_runs"])
        + ", before and after the load tests)",
        "",
        "| concurrent clients | chars/s received | of the sampler's 64-stream rate "
        "| first character p50 | p99 |",
        "|---|---|---|---|---|",
    ]
    for clients, figures in results["clients"].items():
        lines.append(
            f"| {clients} | {figures['chars_per_s']:,.0f} | "
            f"{figures['chars_per_s'] / sampler:.2f} | {figures['first_char_p50_ms']:.0f} ms "
            f"| {figures['first_char_p99_ms']:.0f} ms |"
        )
    lines += [
        "",
        "completions of 50 characters:",
        "",
        "| clients | first character p50 | p99 | completions |",
        "|---|---|---|---|",
    ]
    for clients, figures in results["first_char"].items():
        lines.append(
            f"| {clients} | {figures['first_char_p50_ms']:.0f} ms | "
            f"{figures['first_char_p99_ms']:.0f} ms | {figures['completions']} |"
        )
    varied = results["varied_lengths"]
    lines += [
        "",
        f"32 clients asking for 200-600 characters: {varied['chars_per_s']:,.0f} chars/s, "
        f"first character p50 {varied['first_char_p50_ms']:.0f} ms, "
        f"p99 {varied['first_char_p99_ms']:.0f} ms",
    ]
    beside = results["long_prompt_beside"]
    lines += [
        "",
        f"8 clients with a 20,000-character prompt sent among them: {beside['chars_per_s']:,.0f} "
        f"chars/s, first character p50 {beside['first_char_p50_ms']:.0f} ms, p99 "
        f"{beside['first_char_p99_ms']:.0f} ms, longest pause in a stream "
        f"{beside['longest_pause_ms']:.0f} ms; the long request took "
        f"{beside['long_request_s']:.1f} s",
    ]
    job = results["sampler_job"]["chars_per_s"]
    lines += [
        "",
        f"64 clients doing the sampler's job (1-character prompt, 500 characters): "
        f"{job:,.0f} chars/s, {job / sampler:.2f} of the sampler's rate",
    ]
    memory = results["rss_mb"]
    before, after = memory[0], list(memory.values())[-1]
    lines += [
        "",
        "server memory after 500 requests, then after every quarter of the rest: "
        + ", ".join(f"{mb:.0f} MB" for mb in memory.values())
        + f" ({after / before - 1:+.1%})",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
