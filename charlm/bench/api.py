"""The Python API's rates on the reference LSTM, each beside what it is held to, in turn
(best_in_turn): `LanguageModel.score` on one long text against PyTorch's nn.LSTM forward
and log-softmax over the same single sequence; one-stream `LanguageModel.generate`
against `charlm sample`'s own path; and the time `import charlm` takes."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from charlm.bench.sampling import best_in_turn

SCORED_CHARS = 64_000
GENERATED_CHARS = 2_000


def api_rates(run: Path, torch) -> dict:
    import charlm

    model = charlm.load(run)
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(model.vocabulary.chars, SCORED_CHARS))
    model.score(text[:5000])  # traced before timing, as each rate below is warmed
    measures = {
        "score": lambda: rate(lambda: model.score(text), SCORED_CHARS),
        "generate_api": lambda: rate(
            lambda: model.generate(length=GENERATED_CHARS, seed=1), GENERATED_CHARS
        ),
        "generate_cli": lambda: rate(lambda: cli_sample(model), GENERATED_CHARS),
    }
    if torch:
        measures["torch_score"] = torch_scoring(torch, text, model.vocabulary)
    best = best_in_turn(measures)
    found = {**best, "generate_api_to_cli": best["generate_api"] / best["generate_cli"]}
    if torch:
        found["score_to_torch"] = best["score"] / best["torch_score"]
    found["import_s"] = import_seconds()
    return found


def rate(call, chars: int) -> float:
    started = time.perf_counter()
    call()
    return chars / (time.perf_counter() - started)


def cli_sample(model) -> None:
    """What `charlm sample --length N --seed 1` runs once its model is loaded: the layer's
    pieces, each written to a (discarded) stdout as it comes."""
    generator = model.generator
    settings = generator.settings(length=GENERATED_CHARS, seed=1)
    out = io.StringIO()
    for pieces in generator.pieces(generator.readable(""), settings):
        out.write(pieces[0])


def torch_scoring(torch, text: str, vocab):
    """PyTorch's reference LSTM (nn.LSTM, oneDNN as by default) reading `text` as one
    sequence: embedding, the LSTM's forward, the logits and a log-softmax, and the
    log-probability of each next character gathered, as LanguageModel.score returns."""
    from charlm.bench.torch_reference import reference_model

    model = reference_model(torch, "lstm").eval()
    ids = torch.tensor(vocab.encode(text).astype(np.int64))[None]

    def measure() -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            hidden, _ = model["rnn"](model["embedding"](ids[:, :-1]))
            logprobs = torch.log_softmax(model["logits"](hidden), dim=-1)
            logprobs.gather(-1, ids[:, 1:, None])
        return ids.shape[1] / (time.perf_counter() - started)

    measure()  # warmed, as charlm's scorer is traced first
    return measure


def import_seconds(tries: int = 5) -> float:
    """The best of `tries` runs of `python -c "import charlm"`, in fresh processes."""
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import charlm"], check=True)
        best = min(best, time.perf_counter() - started)
    return best


def api_lines(found: dict) -> list[str]:
    torch_rate = f"{found['torch_score']:,.0f}" if "torch_score" in found else "not installed"
    ratio = f"{found['score_to_torch']:.2f}x" if "score_to_torch" in found else "-"
    return [
        "",
        "Python API, 2x512 LSTM (best of three readings in turn):",
        "",
        "| what | charlm | held to | ratio |",
        "|---|---|---|---|",
        f"| LanguageModel.score, one text of {SCORED_CHARS:,} chars, chars/s "
        f"| {found['score']:,.0f} | PyTorch nn.LSTM forward + log-softmax: {torch_rate} "
        f"| {ratio} |",
        f"| LanguageModel.generate, 1 stream, chars/s | {found['generate_api']:,.0f} "
        f"| charlm sample's path: {found['generate_cli']:,.0f} "
        f"| {found['generate_api_to_cli']:.2f}x |",
        f"| python -c 'import charlm', best of 5 | {found['import_s']:.2f} s | 0.3 s | - |",
    ]
