"""The parts of `make bench-serve` about what clients send besides plain completions
(run by benchmarks/serve.py, on its reference run):

8. the prefix cache: 32 clients sharing a 2,000-character system prompt, each request
   with its own 50-character question (a slice of the corpus) and a completion of
   200-600 characters, after one such request: time to the first character with the
   cache and, in the same run, with it and --chunk-chars 16, 8, 4 and 2 (requests join
   sooner, fewer chars/s), and on a server started with --prefix-cache-mb 0; beside them, the
   floor: the sampler alone reading what a request reads with the cache, for 1 stream
   and for 32;
9. memory with the cache full: a server with a 16 MB cache, 10,000 requests of distinct
   96-character prompts (each stores three states): resident memory after 500, then
   after each quarter, and the cache's own bytes;
10. lm-evaluation-harness's loglikelihood_rolling over a 200,000-character text (lm-eval
   sends one text's windows at a time: a long text is what keeps the server's batches
   wide) through the server (its local-completions client, tokenizer_backend=remote,
   --batch_size 32 and num_concurrent=4, as the README recommends) against `charlm eval`
   on the same text with 2,048-character windows, lm-eval's own, each timed twice (the
   faster counts: the first compiles; the server without its score cache, which would
   serve the second run from the first), lm-eval after it has indexed its tasks (its
   start-up, timed apart); and lm-eval's total log-likelihood against the
   model's scores of the same windows; beside them, the floor of the server's way: the
   one reading of each window such a request takes (generation's, keeping the scores),
   timed in this process without a server;
11. lm-eval's multiple_choice through the server with the score cache and, in the same
   run, without it (--prefix-cache-mb 0): 64 questions, each a 1,900-character context
   (a slice of the corpus) and 4 choices of 50 characters (the slice's true next 50 and
   three other slices), so each choice repeats its context; the time of lm-eval's
   evaluation (each server timed twice, the faster counts: the first compiles), the
   characters each read, and whether the two gave the same log-likelihoods.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

import httpx
from serve import load_test, many_requests, rss_mb, start_server

SYSTEM_CHARS, QUESTION_CHARS = 2000, 50
SERVER_FLAGS = ("--queue", "1024", "--max-tokens", "100000")
# Point 8's servers: the default, shorter chunks (earlier first characters, fewer chars/s),
# and no cache.
SHARED_PROMPT_SERVERS = (
    ("cache", ()),
    ("cache, --chunk-chars 16", ("--chunk-chars", "16")),
    ("cache, --chunk-chars 8", ("--chunk-chars", "8")),
    ("cache, --chunk-chars 4", ("--chunk-chars", "4")),
    ("cache, --chunk-chars 2", ("--chunk-chars", "2")),
    ("no cache", ("--prefix-cache-mb", "0")),
)
LM_EVAL_ARGS = "tokenizer_backend=remote,num_concurrent=4,max_length=2048"
LM_EVAL_BATCH = 32  # requests per call (the README's --batch_size)
LM_EVAL_CHARS, LM_EVAL_DOCS = 200_000, 1
CHOICE_QUESTIONS, CHOICE_CONTEXT, CHOICE_CHARS = 64, 1900, 50


def corpus_text(run: Path) -> str:
    from charlm.run.load import load_checkpoint

    return Path(load_checkpoint(run).config.data.corpus).read_text(encoding="utf-8")


def shared_system_prompt(run: Path, seconds: float) -> dict:
    """Point 8 of the module's docstring."""
    corpus = corpus_text(run)
    system = corpus[:SYSTEM_CHARS]

    def prompt(rng: random.Random) -> str:
        at = rng.randrange(SYSTEM_CHARS, len(corpus) - QUESTION_CHARS)
        return system + corpus[at : at + QUESTION_CHARS]

    results = {}
    for label, flags in SHARED_PROMPT_SERVERS:
        process, url = start_server(run, *SERVER_FLAGS, *flags)
        try:
            # The system prompt's first reader, before the clients come.
            body = {"prompt": prompt(random.Random(-1)), "max_tokens": 1}
            httpx.post(f"{url}/v1/completions", json=body, timeout=600).raise_for_status()
            results[label] = load_test(url, 32, seconds, (200, 600), prompt=prompt)
            results[label]["prefix_cache"] = httpx.get(f"{url}/health").json()["prefix_cache"]
        finally:
            process.terminate()
            process.wait()
    results["floor_ms"] = reading_floor(run, prompt)
    return results


def reading_floor(run: Path, prompt) -> dict:
    """Milliseconds the engine's sampler takes, alone, to read what a request reads with
    the cache (its question and the system prompt's last partial block), for 1 and 32
    streams: the least a first character can wait."""
    from charlm.generate import Sampler
    from charlm.reading import PromptReading
    from charlm.run.load import load_checkpoint
    from charlm.serve.prefix_cache import STRIDE

    loaded = load_checkpoint(run)
    sampler = Sampler(loaded.model, loaded.vocab).batch_invariant()
    sampler.compile(32)
    rng = random.Random(0)
    unread = (SYSTEM_CHARS + 1) % STRIDE + QUESTION_CHARS  # the prompt after a newline
    floor = {}
    for streams in (1, 32):
        times = []
        for _ in range(5):
            prompts = [loaded.vocab.encode(prompt(rng)[-unread:]) for _ in range(streams)]
            started = time.perf_counter()
            logits, _ = PromptReading(sampler, prompts, piece=STRIDE).read_all()
            logits.numpy()
            times.append(time.perf_counter() - started)
        floor[streams] = 1000 * statistics.median(times)
    return floor


def memory_with_full_cache(run: Path, requests: int) -> dict:
    """Point 9 of the module's docstring."""
    corpus = corpus_text(run)

    def prompt(index: int) -> str:
        at = random.Random(index).randrange(len(corpus) - 96)
        return corpus[at : at + 96]

    process, url = start_server(run, *SERVER_FLAGS, "--prefix-cache-mb", "16")
    try:
        many_requests(url, 500, prompt=prompt)
        rss = {0: rss_mb(process.pid)}
        cache = [httpx.get(f"{url}/health").json()["prefix_cache"]]
        for quarter in range(1, 5):
            many_requests(url, requests // 4, prompt=lambda i, q=quarter: prompt(i + q * requests))
            rss[quarter * (requests // 4)] = rss_mb(process.pid)
            cache.append(httpx.get(f"{url}/health").json()["prefix_cache"])
    finally:
        process.terminate()
        process.wait()
    return {"rss_mb": rss, "prefix_cache": cache}


def lm_eval_against_charlm_eval(run: Path, root: Path) -> dict:
    """Point 10 of the module's docstring."""
    from charlm.evaluate import evaluate_file

    corpus = corpus_text(run)[-LM_EVAL_CHARS:]  # the end of the corpus
    size = LM_EVAL_CHARS // LM_EVAL_DOCS
    docs = [corpus[i : i + size] for i in range(0, LM_EVAL_CHARS, size)]
    text_file = root / "lm-eval.txt"
    text_file.write_text("".join(docs), encoding="utf-8")
    tasks = write_task(root / "tasks", docs)
    eval_run = windowed_copy(run, root / "eval-run", 2048)

    charlm_eval = []
    for _ in range(2):
        started = time.perf_counter()
        result = evaluate_file(eval_run, text_file)
        charlm_eval.append(time.perf_counter() - started)

    floor_s = one_reading_s(run, docs)
    # lm-eval's remote tokenizer sends the whole text to /tokenize.
    # lm-eval indexes every task it knows before it evaluates (its start-up, whatever the
    # text): once, timed apart.
    from lm_eval.tasks import TaskManager

    started = time.perf_counter()
    task_manager = TaskManager(include_path=str(tasks))
    task_index_s = time.perf_counter() - started
    # Without the score cache: lm-eval's second run would be read from the first's strides.
    process, url = start_server(
        run, *SERVER_FLAGS, "--max-prompt-chars", str(LM_EVAL_CHARS), "--prefix-cache-mb", "0"
    )
    lm_eval, samples = [], None
    try:
        for _ in range(2):
            started = time.perf_counter()
            samples = run_lm_eval(url, task_manager)
            lm_eval.append(time.perf_counter() - started)
    finally:
        process.terminate()
        process.wait()
    lm_eval_total = sum(float(sample["filtered_resps"][0]) for sample in samples)
    return {
        "chars": LM_EVAL_CHARS,
        "lm_eval_s": lm_eval,
        "lm_eval_task_index_s": task_index_s,
        "charlm_eval_s": charlm_eval,
        "lm_eval_chars_per_s": LM_EVAL_CHARS / min(lm_eval),
        "charlm_eval_chars_per_s": result.chars / min(charlm_eval),
        "charlm_eval_loss": result.loss,
        "one_reading_s": floor_s,
        "lm_eval_loss": -lm_eval_total / LM_EVAL_CHARS,
        "same_windows_loss": -same_windows_total(run, docs) / LM_EVAL_CHARS,
    }


def choices_with_and_without_cache(run: Path, root: Path) -> dict:
    """Point 11 of the module's docstring."""
    from lm_eval.tasks import TaskManager

    corpus = corpus_text(run)
    rng = random.Random(11)
    questions = []
    for _ in range(CHOICE_QUESTIONS):
        at = rng.randrange(len(corpus) - CHOICE_CONTEXT - CHOICE_CHARS)
        true_end = corpus[at + CHOICE_CONTEXT : at + CHOICE_CONTEXT + CHOICE_CHARS]
        others = [rng.randrange(len(corpus) - CHOICE_CHARS) for _ in range(3)]
        choices = [true_end] + [corpus[o : o + CHOICE_CHARS] for o in others]
        questions.append(
            {"context": corpus[at : at + CHOICE_CONTEXT], "choices": choices, "label": 0}
        )
    tasks = write_choice_task(root / "choice-tasks", questions)
    task_manager = TaskManager(include_path=str(tasks))
    results = {}
    for label, flags in SHARED_PROMPT_SERVERS:
        process, url = start_server(run, *SERVER_FLAGS, *flags)
        times, samples = [], None
        try:
            for _ in range(2):
                started = time.perf_counter()
                samples = run_lm_eval(url, task_manager, "charlm_bench_choice")
                times.append(time.perf_counter() - started)
            health = httpx.get(f"{url}/health").json()
        finally:
            process.terminate()
            process.wait()
        loglikelihoods = [[float(r[0]) for r in sample["filtered_resps"]] for sample in samples]
        results[label] = {
            "s": times,
            "prefix_cache": health["prefix_cache"],
            "score_cache": health["score_cache"],
            "loglikelihoods": loglikelihoods,
        }
    results["same"] = results["cache"]["loglikelihoods"] == results["no cache"]["loglikelihoods"]
    return results


def write_choice_task(folder: Path, questions: list[dict]) -> Path:
    folder.mkdir()
    data = folder / "questions.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in questions), encoding="utf-8")
    (folder / "bench_choice.yaml").write_text(
        "task: charlm_bench_choice\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{label}}"\n'
        'target_delimiter: ""\n'
        "metric_list:\n  - metric: acc\n",
        encoding="utf-8",
    )
    return folder


def write_task(folder: Path, docs: list[str]) -> Path:
    folder.mkdir()
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in docs), encoding="utf-8")
    (folder / "bench_rolling.yaml").write_text(
        "task: charlm_bench_rolling\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: loglikelihood_rolling\n"
        'doc_to_text: ""\n'
        'doc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: bits_per_byte\n",
        encoding="utf-8",
    )
    return folder


def run_lm_eval(url: str, task_manager, task: str = "charlm_bench_rolling") -> list[dict]:
    """lm-eval's samples of a bench task, run as its CLI runs it."""
    import lm_eval

    results = lm_eval.simple_evaluate(
        model="local-completions",
        model_args=f"base_url={url}/v1/completions,model=bench,{LM_EVAL_ARGS}",
        tasks=[task],
        task_manager=task_manager,
        batch_size=LM_EVAL_BATCH,
        log_samples=True,
    )
    return results["samples"][task]


def windowed_copy(run: Path, copy: Path, window: int) -> Path:
    """A copy of `run` whose validation (and `charlm eval`) windows are `window` long."""
    import shutil

    import yaml

    shutil.copytree(run, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["train"]["eval_seq_length"] = window
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    return copy


def rolling_windows(vocab, docs: list[str]) -> list[tuple[list[int], list[int]]]:
    """lm-eval's loglikelihood_rolling windows of `docs` (max_length 2048), as
    (context, continuation) ids: each window's prompt is the two joined."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    newline = vocab.encode("\n")[0]
    return [
        make_disjoint_window(window)
        for doc in docs
        for window in get_rolling_token_windows(list(vocab.encode(doc)), newline, 2048, 1)
    ]


def same_windows_total(run: Path, docs: list[str]) -> float:
    """The model's log-likelihood of lm-eval's windows of `docs`, each scored as the
    server scores it (LanguageModel.score of the window's text, its first character
    the context)."""
    import charlm

    model = charlm.load(run)
    vocab = model.generator.vocab
    total = 0.0
    for context, continuation in rolling_windows(vocab, docs):
        scores = model.score(vocab.decode(context + continuation)).logprobs
        total += float(scores[len(context) :].astype(float).sum())
    return total


def one_reading_s(run: Path, docs: list[str]) -> float:
    """Point 10's floor: lm-eval's windows of `docs` read, in this process, as the server
    reads a completion's prompt with `echo` and `logprobs`: once, after a newline, by
    generation's reader keeping the scores of each next character, all windows at once,
    timed twice (the faster counts: the first compiles)."""
    import numpy as np

    import charlm
    from charlm.reading import PromptReading, next_targets
    from charlm.serve.prefix_cache import STRIDE

    generator = charlm.load(run).generator
    sampler = generator.sampler.batch_invariant()
    windows = rolling_windows(generator.vocab, docs)
    prompts = [sampler.prime_row(np.array(c + w, np.int32)) for c, w in windows]
    targets = [next_targets(ids) for ids in prompts]
    times = []
    for _ in range(2):
        started = time.perf_counter()
        PromptReading(sampler, prompts, piece=STRIDE, targets=targets).read_all()
        times.append(time.perf_counter() - started)
    return min(times)


def report(results: dict) -> list[str]:
    lines = []
    if "shared_system_prompt" in results:
        shared = results["shared_system_prompt"]
        lines += [
            "",
            f"32 clients, a {SYSTEM_CHARS:,}-character system prompt and a "
            f"{QUESTION_CHARS}-character question each, 200-600 characters asked:",
            "",
            "| server | first character p50 | p99 | completions | chars/s | prompt chars read "
            "| read from the cache |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, _ in SHARED_PROMPT_SERVERS:
            figures = shared[label]
            cache = figures["prefix_cache"]
            lines.append(
                f"| {label} | {figures['first_char_p50_ms']:.0f} ms | "
                f"{figures['first_char_p99_ms']:.0f} ms | {figures['completions']} | "
                f"{figures['chars_per_s']:,.0f} | {cache['read_chars']:,} | "
                f"{cache['saved_chars']:,} |"
            )
        cached, uncached = shared["cache"], shared["no cache"]
        floor = shared["floor_ms"]
        lines += [
            "",
            f"with the cache / without: first character p50 "
            f"{cached['first_char_p50_ms'] / uncached['first_char_p50_ms']:.3f}x, p99 "
            f"{cached['first_char_p99_ms'] / uncached['first_char_p99_ms']:.3f}x",
            *(
                f"{label[7:]} / the default 32: first character p50 "
                f"{shared[label]['first_char_p50_ms'] / cached['first_char_p50_ms']:.2f}x, "
                f"p99 {shared[label]['first_char_p99_ms'] / cached['first_char_p99_ms']:.2f}x, "
                f"chars/s {shared[label]['chars_per_s'] / cached['chars_per_s']:.2f}x"
                for label, flags in SHARED_PROMPT_SERVERS
                if "--chunk-chars" in flags
            ),
            f"the floor, the sampler alone reading a request's unread "
            f"{(SYSTEM_CHARS + 1) % 32 + QUESTION_CHARS} characters: "
            f"{floor[1]:.0f} ms for 1 stream, {floor[32]:.0f} ms for 32 together",
        ]
    if "memory_with_full_cache" in results:
        memory = results["memory_with_full_cache"]
        rss = memory["rss_mb"]
        first, last = list(rss.values())[0], list(rss.values())[-1]
        lines += [
            "",
            "server memory, a 16 MB prefix cache kept full, after N more requests: "
            + ", ".join(f"{n:,}: {mb:.0f} MB" for n, mb in rss.items())
            + f" ({last / first - 1:+.1%}); the cache's bytes: "
            + ", ".join(f"{c['bytes'] / 2**20:.1f} MB" for c in memory["prefix_cache"]),
        ]
    if "lm_eval" in results:
        figures = results["lm_eval"]
        ratio = figures["lm_eval_chars_per_s"] / figures["charlm_eval_chars_per_s"]
        floor_rate = figures["chars"] / figures["one_reading_s"]
        lines += [
            "",
            f"lm-eval loglikelihood_rolling over {figures['chars']:,} characters through the "
            f"server ({LM_EVAL_ARGS}, batch size {LM_EVAL_BATCH}): "
            f"{figures['lm_eval_chars_per_s']:,.0f} chars/s (runs "
            + ", ".join(f"{s:.1f}" for s in figures["lm_eval_s"])
            + f" s, after lm-eval indexed its tasks in {figures['lm_eval_task_index_s']:.1f} s)"
            + "; charlm eval on the same text, 2,048-character windows: "
            f"{figures['charlm_eval_chars_per_s']:,.0f} chars/s (runs "
            + ", ".join(f"{s:.1f}" for s in figures["charlm_eval_s"])
            + f" s); lm-eval / charlm eval: {ratio:.2f}x",
            f"the floor of the server's way, the one reading of each window a completion with "
            f"echo and logprobs takes (generation's, keeping its scores), all windows at once "
            f"in one process without a server: {figures['one_reading_s']:.1f} s = "
            f"{floor_rate:,.0f} chars/s, "
            f"{floor_rate / figures['charlm_eval_chars_per_s']:.2f}x charlm eval",
            f"loss in nats per character: lm-eval {figures['lm_eval_loss']:.6f}, the model's "
            f"scores of lm-eval's windows {figures['same_windows_loss']:.6f}, charlm eval "
            f"(its own windows) {figures['charlm_eval_loss']:.6f}",
        ]
    if "choices" in results:
        choices = results["choices"]
        cached, uncached = choices["cache"], choices["no cache"]
        lines += [
            "",
            f"lm-eval multiple_choice, {CHOICE_QUESTIONS} questions of a "
            f"{CHOICE_CONTEXT:,}-character context and 4 choices of {CHOICE_CHARS}:",
            "",
            "| server | lm-eval runs | prompt characters the engine read | from its prefix "
            "cache | characters scoring read | scoring did not (handed on or cached) |",
            "|---|---|---|---|---|---|",
        ]
        for label, figures in (("cache", cached), ("no cache", uncached)):
            engine, scoring = figures["prefix_cache"], figures["score_cache"]
            lines.append(
                f"| {label} | " + ", ".join(f"{s:.1f} s" for s in figures["s"]) + " | "
                f"{engine['read_chars']:,} | {engine['saved_chars']:,} | "
                f"{scoring['read_chars']:,} | {scoring['saved_chars']:,} |"
            )
        lines += [
            "",
            f"with the cache / without: {min(cached['s']) / min(uncached['s']):.3f}x the time; "
            f"the same log-likelihoods: {choices['same']}",
        ]
    return lines
