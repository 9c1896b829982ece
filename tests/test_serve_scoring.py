"""The server's scoring thread: scorings asked for while it works are scored together as
one batch; a batch that fails is scored again a text at a time, so that only the text
that cannot be scored fails. (Its numbers against LanguageModel.score are checked
through a real server in test_serve_protocol.py and test_serve_clients.py.)"""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from charlm.data.vocabulary import Vocabulary
from charlm.scoring import RowScores


class FakeGenerator:
    """A generator and its scorer: each character scores -its id; the first batch waits
    until released."""

    def __init__(self, broken: str = ""):
        self.vocab = Vocabulary(list("\nabcdef"))
        self.sampler = SimpleNamespace(start_token=lambda: 0)
        self.batches: list[int] = []
        self.entered, self.release = threading.Event(), threading.Event()
        self.broken = broken

    def run(self, rows, top, keep_starts):  # charlm.scoring.StepScorer.run
        if not self.batches:
            self.entered.set()
            self.release.wait(10)

        self.batches.append(len(rows))
        if any(self.vocab.decode(row.targets) == self.broken for row in rows):
            raise RuntimeError("this text cannot be scored")
        return [
            RowScores(
                -row.targets.astype(np.float32),
                np.zeros((len(row.targets), top), np.int32),
                np.zeros((len(row.targets), top), np.float32),
                [],
            )
            for row in rows
        ]

    def scores_of(self, ids, scored):  # charlm.textgen.TextGenerator.scores_of
        return SimpleNamespace(text=self.vocab.decode(ids), vocab=self.vocab, **vars(scored))


def fake_scoring(broken: str = ""):
    from charlm.serve.logprobs import Scoring

    generator = FakeGenerator(broken)
    return Scoring(generator, scorer=generator)


async def score_all(scoring, texts):
    from charlm.serve.prompts import Prompt

    generator = scoring.generator

    def ask(text):
        prompt = Prompt(generator.vocab.encode(text), text)
        return asyncio.ensure_future(scoring.logprobs(prompt, "", 0, 1))

    asks = [ask(texts[0])]
    assert await asyncio.to_thread(generator.entered.wait, 10)
    asks += [ask(text) for text in texts[1:]]  # all asked for while the first is scored
    await asyncio.sleep(0.1)
    generator.release.set()
    return await asyncio.wait_for(asyncio.gather(*asks, return_exceptions=True), 30)


def test_scorings_asked_for_meanwhile_are_scored_as_one_batch():
    scoring = fake_scoring()
    answers = asyncio.run(score_all(scoring, ["ab", "cab", "fed", "a", "bb"]))
    assert scoring.generator.batches == [1, 4]
    assert [answer["token_logprobs"] for answer in answers[1:3]] == [
        [None, -1.0, -2.0],
        [None, -5.0, -4.0],
    ]


def test_a_text_that_cannot_be_scored_fails_only_its_own_request():
    scoring = fake_scoring(broken="fed")
    answers = asyncio.run(score_all(scoring, ["ab", "cab", "fed", "a"]))
    assert scoring.generator.batches == [1, 3, 1, 1, 1]
    assert isinstance(answers[2], RuntimeError)
    assert [answer["tokens"] for i, answer in enumerate(answers) if i != 2] == [
        list("ab"),
        list("cab"),
        list("a"),
    ]


@pytest.mark.parametrize("batch", [2, 4])
def test_a_batch_keeps_to_its_positions(batch, monkeypatch):
    """No more texts in a batch than BATCH_POSITIONS allows for the longest of them."""
    from charlm.serve import logprobs

    monkeypatch.setattr(logprobs, "BATCH_POSITIONS", 3 * batch)
    scoring = fake_scoring()
    asyncio.run(score_all(scoring, ["abc"] * (1 + 2 * batch)))
    assert scoring.generator.batches == [1, batch, batch]


def test_a_long_text_waiting_behind_short_ones_is_scored_in_the_next_batch(monkeypatch):
    """Short texts do not let a long one into their batch past BATCH_POSITIONS."""
    from charlm.serve import logprobs

    monkeypatch.setattr(logprobs, "BATCH_POSITIONS", 8)
    scoring = fake_scoring()
    answers = asyncio.run(score_all(scoring, ["a", "b", "c", "abcdefab", "d", "e"]))
    assert scoring.generator.batches == [1, 2, 1, 2]
    assert answers[3]["tokens"] == list("abcdefab")
