"""Log-probabilities in OpenAI's completions shape, read by generation's own step
(charlm.scoring.StepScorer): the prompt's characters and the generated ones read
together from the state after a newline, the state the text was drawn from. They are the
model's own numbers, `LanguageModel.score`'s for the same text up to float32 rounding
(that runs the model's fused loop, which rounds differently from the step).

    {"tokens": [...], "token_logprobs": [...], "top_logprobs": [{char: logprob}, ...],
     "text_offset": [...]}

One character is one token. A prompt's first character has no log-probability (`null`,
its top dict too): the prompt is its context. Offsets count characters from the prompt's
start, as OpenAI's do, with or without `echo`. The numbers are the model's own, before
temperature, top-k, top-p and logit_bias shape the draw.

Scoring runs in one worker thread, so the event loop keeps serving: the scorings asked
for while it works are scored together next, as the rows of one batch (as many as
BATCH_POSITIONS allows), which is what makes scoring many windows at once (as
lm-evaluation-harness sends them) fast. A batch that fails is scored again a text at a
time, so that one text that cannot be scored fails no other.

A text is scored from its longest prefix of whole strides read before: those the engine
read of its prompt and handed on (charlm.serve.prefix_cache.CachedReading: a prompt is
read once, for its text and its scores), or those the score cache
(charlm.serve.prefix_cache.ScoreCache) still holds: the choices after a shared context, a
completion's text as it streams. The numbers are exactly those of scoring the whole
text: a row's scores depend neither on the rows beside it nor on the stride its reading
started at (charlm.scoring).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from charlm.reading import listed
from charlm.scoring import RowScores, StepScorer, scoring_row
from charlm.serve.prefix_cache import STRIDE, ScoreCache, ScoredStride, stride_digests
from charlm.serve.prompts import Prompt

log = logging.getLogger("charlm.serve")

# Rows x longest text scored in one batch: its arrays stay a few hundred MB at most,
# and 128 windows of 2,048 characters (lm-eval's default) fit.
BATCH_POSITIONS = 128 * 2048


@dataclass
class Job:
    """One text to score and what to answer with: positions `start` on, `top` each."""

    ids: np.ndarray
    start: int
    top: int
    has_prompt: bool
    handed: list  # the whole strides of its prompt the engine scored (ScoredStride)
    answer: Future = field(default_factory=Future)


class Scoring:
    """The log-probabilities of a server's choices, scored in batches by one thread."""

    def __init__(self, generator, cache_bytes: int = 0, scorer: StepScorer | None = None):
        self.generator = generator
        # Generation's reading, on the engine's sampler, calls a STRIDE wide: the points
        # after each are those a cached stride keeps and the engine's reading hands on.
        # Batch-invariant, as the engine's: a text's numbers never depend on its neighbours.
        self.scorer = scorer or StepScorer(generator.sampler.batch_invariant(), STRIDE)
        self.cache = ScoreCache(cache_bytes)  # the worker thread's alone
        # As many as a reading lists: a handed stride's, a cached stride's and a new
        # scoring's scores are joined.
        self.top = listed(generator.vocab.size)
        self.jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self.held: Job | None = None  # taken from the queue, next to be scored
        threading.Thread(target=self.work, name="charlm-score", daemon=True).start()

    async def logprobs(
        self, prompt: Prompt, generated: str, start: int, top: int, handed: list = ()
    ) -> dict:
        """The logprobs object of the characters from `start` on of the prompt's text
        followed by `generated`, with the `top` most likely characters at each; `handed`,
        the whole strides of the prompt's scores the engine read (see CachedReading)."""
        ids = np.concatenate([prompt.ids, self.generator.vocab.encode(generated)])
        job = Job(ids.astype(np.int32), start, top, len(prompt.ids) > 0, list(handed))
        self.jobs.put(job)
        return await asyncio.wrap_future(job.answer)

    def work(self) -> None:
        while True:
            first, self.held = self.held or self.jobs.get(), None
            batch = self.gather(first)
            if not self.answer(batch):
                log.warning("scoring %d texts together failed; scoring each alone", len(batch))
                for job in batch:
                    self.answer([job])

    def gather(self, first: Job) -> list[Job]:
        """`first` and the jobs waiting behind it that fit in its batch (rows x its
        longest text within BATCH_POSITIONS); the first that does not fit is held for
        the next batch."""
        batch, longest = [first], len(first.ids)
        while not self.jobs.empty():
            job = self.jobs.get()
            if (len(batch) + 1) * max(longest, len(job.ids)) > BATCH_POSITIONS:
                self.held = job
                break
            batch.append(job)
            longest = max(longest, len(job.ids))
        return batch

    def answer(self, batch: list[Job]) -> bool:
        """Score `batch` and answer its jobs; False (none answered) if a batch of
        several failed."""
        try:
            results = self.score([job.ids for job in batch], [job.handed for job in batch])
        except Exception as error:
            if len(batch) > 1:
                return False
            log.exception("scoring a text failed; its request ends in error")
            batch[0].answer.set_exception(error)
            return True
        for job, scores in zip(batch, results):
            job.answer.set_result(shaped(scores, job.start, job.top, job.has_prompt))
        return True

    def score(self, texts: list[np.ndarray], handed: list | None = None) -> list:
        """Each text's charlm.textgen.Scores, read from its longest prefix of whole strides
        cached or handed (handed[i], text i's first strides, read by the engine); the
        strides handed and read are cached."""
        digests = [stride_digests(ids) for ids in texts]
        for digest, strides in zip(digests, handed or ()):
            self.cache.store_strides(digest, dict(enumerate(strides, start=1)))
        if self.cache.limit:
            self.score_shared_prefixes(texts, digests)
        cached = [
            max(self.cache.strides(d, len(ids) // STRIDE), given[: len(ids) // STRIDE], key=len)
            for ids, d, given in zip(texts, digests, handed or [[]] * len(texts))
        ]
        start = self.generator.sampler.start_token()
        rows = [
            scoring_row(ids, start, len(strides) * STRIDE, strides[-1].start if strides else None)
            for ids, strides in zip(texts, cached)
        ]
        scored = self.scorer.run(rows, self.top, keep_starts=self.cache.limit > 0)
        results = []
        for ids, digest, strides, new in zip(texts, digests, cached, scored):
            known = len(strides) * STRIDE
            whole = joined(strides + [new])
            self.cache.store_strides(digest, new_strides(whole, new.piece_starts, known))
            self.cache.saved_chars += known
            self.cache.read_chars += len(ids) - known
            results.append(self.generator.scores_of(ids, whole))
        return results

    def score_shared_prefixes(self, texts: list[np.ndarray], digests: list) -> None:
        """Score first, once each, the longest runs of whole strides that texts of one
        batch begin with alike and the cache lacks (the choices after one context sent
        together): the texts are then read from them."""
        counts = Counter(digest for text_digests in digests for digest in set(text_digests[1:]))
        shared = {}
        for ids, text_digests in zip(texts, digests):
            strides = max((k for k, d in enumerate(text_digests) if counts[d] > 1), default=0)
            if strides and text_digests[strides] not in self.cache.entries:
                shared.setdefault(text_digests[strides], ids[: strides * STRIDE])
        if shared:
            self.score(list(shared.values()))


def new_strides(whole: RowScores, piece_starts: list, known: int) -> dict[int, ScoredStride]:
    """The strides a text's scoring read past its first `known` characters, by their
    count from the text's start: their scores (taken from `whole`, the text's) and the
    point after each (piece_starts, one per STRIDE read)."""
    strides = {}
    for count, start in enumerate(piece_starts, start=known // STRIDE + 1):
        at = slice((count - 1) * STRIDE, count * STRIDE)
        scores = [getattr(whole, name)[at].copy() for name in RowScores.ARRAYS]
        strides[count] = ScoredStride(*scores, start)
    return strides


def joined(parts: list) -> RowScores:
    """Consecutive parts of a text's scores (ScoredStride or RowScores) as one."""
    return RowScores(
        *(np.concatenate([getattr(p, name) for p in parts]) for name in RowScores.ARRAYS), []
    )


def shaped(scores, start: int, top: int, has_prompt: bool) -> dict:
    """Positions `start` on of `scores` (charlm.textgen.Scores) as OpenAI's object."""
    table = scores.vocab.table
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for position in range(start, len(scores.logprobs)):
        out["tokens"].append(scores.text[position])
        out["text_offset"].append(position)
        if position == 0 and has_prompt:  # the prompt's first character: no context
            out["token_logprobs"].append(None)
            out["top_logprobs"].append(None)
            continue
        out["token_logprobs"].append(float(scores.logprobs[position]))
        ids, values = scores.top_ids[position, :top], scores.top_logprobs[position, :top]
        out["top_logprobs"].append({table[i]: float(v) for i, v in zip(ids, values)})
    return out
