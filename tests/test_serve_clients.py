"""Real clients against one real `charlm serve` process, used as their users use them:
LangChain's `OpenAI` LLM with its default parameters, and lm-evaluation-harness
(`--model local-completions`, `tokenizer_backend=remote`) on the tiny tasks of
tests/lm_eval_tasks, whose log-likelihoods must be `LanguageModel.score`'s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import charlm
from tests.helpers import Server

ROOT = Path(__file__).resolve().parent.parent  # the tasks' data paths are relative to it


@pytest.fixture(scope="module")
def server(trained_run):
    running = Server(trained_run, "--lanes", 4, "--queue", 64)
    yield running
    running.stop()


def test_langchains_openai_llm_invokes_and_batches(server):
    from langchain_openai import OpenAI

    llm = OpenAI(base_url=f"{server.url}/v1", api_key="unused", model="run")
    assert llm.max_tokens == 256  # its default: each answer is 256 characters
    text = llm.invoke("the cat")
    assert isinstance(text, str) and len(text) == 256
    answers = llm.batch(["the cat", "a dog", "the box"])
    assert [len(answer) for answer in answers] == [256, 256, 256]


def lm_eval(server, out: Path) -> dict[str, list[dict]]:
    """lm_eval on the two tasks through the server, as the README runs it; each task's
    logged samples."""
    model_args = (
        f"base_url={server.url}/v1/completions,tokenizer_backend=remote,model=run,num_concurrent=4"
    )
    command = [
        *(sys.executable, "-m", "lm_eval", "--model", "local-completions"),
        *("--model_args", model_args, "--tasks", "charlm_rolling,charlm_choice"),
        *("--batch_size", "32"),
        *("--include_path", "tests/lm_eval_tasks", "--log_samples", "--output_path", str(out)),
    ]
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "0"}
    done = subprocess.run(
        command, cwd=ROOT, env={**os.environ, **offline}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-4000:]
    found = {}
    for task in ("charlm_rolling", "charlm_choice"):
        (path,) = out.rglob(f"samples_{task}_*.jsonl")
        found[task] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return found


def test_lm_eval_harness_log_likelihoods_are_the_models_scores(server, trained_run, tmp_path):
    samples = lm_eval(server, tmp_path / "out")
    lm = charlm.load(trained_run)
    rolling = sorted(samples["charlm_rolling"], key=lambda s: s["doc_id"])
    assert len(rolling) == 2
    for sample in rolling:
        # Each text is one window after lm-eval's prefix token, /tokenizer_info's newline.
        text = sample["doc"]["text"]
        expected = lm.score("\n" + text).logprobs[1:].astype(float).sum()
        assert float(sample["filtered_resps"][0]) == pytest.approx(expected, rel=1e-6)
    choice = samples["charlm_choice"]
    assert len(choice) == 2
    for sample in choice:
        context = sample["doc"]["context"]
        for option, (loglikelihood, _greedy) in zip(
            sample["doc"]["choices"], sample["filtered_resps"]
        ):
            scores = lm.score(f"{context} {option}").logprobs[len(context) :]
            assert float(loglikelihood) == pytest.approx(scores.astype(float).sum(), rel=1e-6)
        picked = int(np.argmax([float(ll) for ll, _ in sample["filtered_resps"]]))
        assert sample["acc"] == float(picked == sample["doc"]["label"])
