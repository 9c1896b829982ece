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
   more;
7. with --soak-minutes M (`make bench-serve` gives 15): a soak of a fresh server with its
   default limits, for M minutes, by clients of five kinds at once (see soak()): requests
   served, errors by status, the good requests' latency, the server's memory at the start
   and the end;
8-10. the prefix cache, memory with it full, and lm-evaluation-harness's scoring against
   `charlm eval`: see benchmarks/serve_clients.py.

    python benchmarks/serve.py [--seconds 15] [--requests 10000] [--json]
                               [--soak-minutes 15] [--parts load,cache,lm-eval,soak]
"""

from __future__ import annotations

import argparse
import collections
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
from collections.abc import Callable
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


def start_server(run: Path, *flags: str) -> tuple[subprocess.Popen, str]:
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
            *(flags or ("--queue", "1024", "--max-tokens", "100000")),
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
    prompt: str | Callable[[random.Random], str] = PROMPT,
) -> dict:
    """Each client streams completions back to back, of `max_tokens` characters, or of a
    length drawn uniformly from a (low, high) range. Clients start one by one over the
    first second, as independent users would arrive. After a 3-second warm-up, for
    `seconds`: the characters received (while every client is busy, so that neither
    the start nor the ragged end counts) and the first-character waits of the
    completions begun. `prompt` may be a function of a client's random generator,
    called for each request."""
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
            text = prompt(lengths) if callable(prompt) else prompt
            first, chars, gap = stream_completion(connection, text, length, seed, window)
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


def many_requests(url: str, count: int, clients: int = 32, prompt=lambda i: PROMPT[: i % 100]):
    """`count` requests of 4 characters, request i's prompt `prompt(i)`, by `clients`
    clients back to back."""
    done = iter(range(count))
    lock = threading.Lock()

    def client_loop():
        with httpx.Client() as client:
            while True:
                with lock:
                    index = next(done, None)
                if index is None:
                    return
                body = {"prompt": prompt(index), "max_tokens": 4, "seed": index}
                client.post(f"{url}/v1/completions", json=body, timeout=60).raise_for_status()

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class Soak:
    """Clients of five kinds against one server, each kind in its own threads, until a
    deadline; what each saw.

    good          complete 200-character completions back to back (half of them streamed)
    bad           send a malformed or refused request (BAD_REQUESTS, in turn)
    slow head     send a request head a byte a second (the server must cut them off)
    slow body     send a head, then the body a byte a second (the server must answer 408)
    disconnecting ask for 5,000 characters, then leave after 0.2-2 s
    """

    GOOD_LENGTH = 200

    def __init__(self, url: str, seconds: float):
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.deadline = time.perf_counter() + seconds
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.statuses = {kind: collections.Counter() for kind in ("good", "bad", "slow body")}
        self.slow_head_held: list[float] = []  # seconds until the server closed
        self.disconnected = 0

    def record(self, kind: str, status) -> None:
        with self.lock:
            self.statuses[kind][status] += 1

    def running(self) -> bool:
        return time.perf_counter() < self.deadline

    def connect(self, timeout: float = 120) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def good(self, index: int) -> None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
        count = 0
        while self.running():
            count += 1
            stream = count % 2 == 0
            body = {"prompt": PROMPT, "max_tokens": self.GOOD_LENGTH, "seed": index * 10**6 + count}
            started = time.perf_counter()
            try:
                connection.request(
                    "POST",
                    "/v1/completions",
                    json.dumps({**body, "stream": stream}),
                    {"Content-Type": "application/json"},
                )
                response = connection.getresponse()
                text = response.read()
            except (OSError, http.client.HTTPException) as error:
                self.record("good", type(error).__name__)
                connection.close()
                connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
                continue
            complete = response.status == 200 and (
                text.rstrip().endswith(b"data: [DONE]")
                if stream
                else len(json.loads(text)["choices"][0]["text"]) == self.GOOD_LENGTH
            )
            self.record("good", response.status if complete else f"{response.status} incomplete")
            if complete:
                with self.lock:
                    self.latencies.append(time.perf_counter() - started)
        connection.close()

    def bad(self, index: int) -> None:
        count = index
        while self.running():
            name, head, body = BAD_REQUESTS[count % len(BAD_REQUESTS)]
            count += 1
            try:
                with self.connect(timeout=60) as connection:
                    connection.sendall(head + body)
                    status_line = connection.makefile("rb").readline()
                self.record("bad", f"{name}: {int(status_line.split()[1])}")
            except (OSError, IndexError, ValueError) as error:
                self.record("bad", f"{name}: {type(error).__name__}")

    def slow_head(self, index: int) -> None:
        request = bad_head(2) + b"{}"
        while self.running():
            started = time.perf_counter()
            with self.connect() as connection:
                try:
                    for byte in request:
                        connection.send(bytes([byte]))
                        time.sleep(1)
                    held = None  # the whole request went through: not cut off
                except OSError:
                    held = time.perf_counter() - started
            with self.lock:
                self.slow_head_held.append(held)

    def slow_body(self, index: int) -> None:
        while self.running():
            with self.connect() as connection:
                connection.sendall(bad_head(40))
                try:
                    for byte in b'{"prompt": "a slow body of 40 bytes..."}':
                        connection.send(bytes([byte]))
                        time.sleep(1)
                        connection.setblocking(False)
                        try:
                            answer = connection.recv(100)
                        except BlockingIOError:
                            answer = b""
                        connection.setblocking(True)
                        if answer:
                            self.record("slow body", int(answer.split()[1]))
                            break
                except OSError as error:
                    self.record("slow body", type(error).__name__)

    def disconnecting(self, index: int) -> None:
        leave = random.Random(index)
        while self.running():
            body = json.dumps(
                {"prompt": PROMPT, "max_tokens": 5000, "stream": leave.random() < 0.5}
            ).encode()
            with self.connect() as connection:
                connection.sendall(bad_head(len(body)) + body)
                time.sleep(leave.uniform(0.2, 2))
            with self.lock:
                self.disconnected += 1


def bad_head(length: int, content_type: str = "application/json") -> bytes:
    return (
        f"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def bad_request(body: bytes | str, content_type: str = "application/json", length=None):
    body = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return bad_head(len(body) if length is None else length, content_type), body


BAD_REQUESTS = [  # (name, head, body)
    ("not JSON", *bad_request("{not json")),
    ("nested 100,000 deep", *bad_request("[" * 100_000 + "]" * 100_000)),
    ("top_k 2**31", *bad_request('{"prompt": "a", "top_k": 2147483648}')),
    ("surrogate field", *bad_request('{"prompt": "a", "\\ud800": 1}')),
    ("unknown field", *bad_request('{"prompt": "a", "temprature": 1}')),
    ("max_tokens too large", *bad_request('{"max_tokens": 1000000000}')),
    ("text/plain", *bad_request('{"prompt": "a"}', "text/plain")),
    ("body over the cap", *bad_request(b"", length=10**9)),
]


def soak(run: Path, minutes: float) -> dict:
    """A fresh server with its default limits (as `charlm serve` starts) under the five
    kinds of clients of Soak for `minutes`; its memory at the start (after a first
    minute of load, when its allocations have settled) and at the end."""
    process, url = start_server(run, "--max-tokens", "5000")
    clients = {"good": 8, "bad": 2, "slow_head": 4, "slow_body": 2, "disconnecting": 2}
    soaker = Soak(url, minutes * 60)
    threads = [
        threading.Thread(target=getattr(soaker, kind), args=(i,), daemon=True)
        for kind, count in clients.items()
        for i in range(count)
    ]
    try:
        for thread in threads:
            thread.start()
        rss = {}
        for minute in range(int(minutes) + 1):
            wait = soaker.deadline - minutes * 60 + 60 * minute - time.perf_counter()
            time.sleep(max(0.0, wait))
            rss[minute] = rss_mb(process.pid)
        for thread in threads:
            thread.join()
        time.sleep(3)  # the last disconnected streams leave at their next chunk
        health = httpx.get(f"{url}/health").json()
    finally:
        process.terminate()
        process.wait()
    latencies = sorted(soaker.latencies)
    return {
        "minutes": minutes,
        "clients": clients,
        "good": dict(soaker.statuses["good"]),
        "good_latency_p50_s": statistics.median(latencies),
        "good_latency_p99_s": latencies[int(0.99 * (len(latencies) - 1))],
        "bad": dict(sorted(soaker.statuses["bad"].items())),
        "slow_head_connections": len(soaker.slow_head_held),
        "slow_head_not_cut": soaker.slow_head_held.count(None),
        "slow_head_longest_held_s": max(h for h in soaker.slow_head_held if h is not None),
        "slow_body": dict(soaker.statuses["slow body"]),
        "disconnected": soaker.disconnected,
        "rss_mb_by_minute": rss,
        "health_after": health,
    }


SAMPLER_LENGTH = 1500  # characters per stream: about 5 s of the 2x512 LSTM at 64 streams


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--soak-minutes", type=float, default=0)
    parser.add_argument(
        "--parts",
        default="load,cache,lm-eval,soak",
        help="which to run, of load (points 1-6), cache (8 and 9), lm-eval (10 and 11) and soak "
        "(7, when --soak-minutes is given)",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    import serve_clients

    results = {}
    with tempfile.TemporaryDirectory(prefix="charlm-bench-serve-") as root:
        run = reference_run(Path(root))
        if "load" in parts:
            results.update(load_tests(run, args))
        if "cache" in parts:
            results["shared_system_prompt"] = serve_clients.shared_system_prompt(run, args.seconds)
            results["memory_with_full_cache"] = serve_clients.memory_with_full_cache(
                run, args.requests
            )
        if "lm-eval" in parts:
            results["lm_eval"] = serve_clients.lm_eval_against_charlm_eval(run, Path(root))
            results["choices"] = serve_clients.choices_with_and_without_cache(run, Path(root))
        if "soak" in parts and args.soak_minutes:
            results["soak"] = soak(run, args.soak_minutes)
    print(json.dumps(results, indent=2) if args.json else report(results))


def load_tests(run: Path, args) -> dict:
    """Points 1-6 of the module's docstring."""
    from charlm.bench.sampling import sampling_chars_per_s

    results = {}
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
    return results


def report(results: dict) -> str:
    import serve_clients

    lines = load_report(results) if "clients" in results else []
    lines += serve_clients.report(results)
    if "soak" in results:
        lines += soak_report(results["soak"])
    return "\n".join(lines)


def soak_report(soak: dict) -> list[str]:
    good = soak["good"]
    rss = list(soak["rss_mb_by_minute"].values())
    base = 1 if len(rss) > 2 else 0  # after a minute of load, when allocations have settled
    return [
        "",
        f"soak: {soak['minutes']:g} minutes, clients {soak['clients']}",
        f"good requests served: {good.get(200, 0):,} (all outcomes: {good}); latency of a "
        f"200-character completion p50 {soak['good_latency_p50_s']:.2f} s, "
        f"p99 {soak['good_latency_p99_s']:.2f} s",
        f"bad requests by answer: {soak['bad']}",
        f"slow heads: {soak['slow_head_connections']} connections, "
        f"{soak['slow_head_not_cut']} not cut off, the longest held "
        f"{soak['slow_head_longest_held_s']:.1f} s",
        f"slow bodies by answer: {soak['slow_body']}",
        f"clients that left mid-completion: {soak['disconnected']:,}; lanes in use after: "
        f"{soak['health_after']['active']}, waiting {soak['health_after']['waiting']}",
        "server memory by minute: "
        + ", ".join(f"{mb:.0f}" for mb in rss)
        + f" MB ({rss[-1] / rss[base] - 1:+.1%} from minute {base} to the end)",
    ]


def load_report(results: dict) -> list[str]:
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
    return lines


if __name__ == "__main__":
    main()
