"""Log-probabilities in OpenAI's completions shape, computed by the library's scoring
(charlm.textgen.TextGenerator.score_ids), so that every number is the one
`LanguageModel.score` gives for the same text: the prompt's characters and the generated
ones read together from the state after a newline.

    {"tokens": [...], "token_logprobs": [...], "top_logprobs": [{char: logprob}, ...],
     "text_offset": [...]}

One character is one token. A prompt's first character has no log-probability (`null`,
its top dict too): the prompt is its context. Offsets count characters from the prompt's
start, as OpenAI's do, with or without `echo`. The numbers are the model's own, before
temperature, top-k, top-p and logit_bias shape the draw.

Scoring runs in one worker thread: the event loop keeps serving, and scorings queue
behind each other rather than compete with the engine for the cores.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from charlm.serve.prompts import Prompt
from charlm.serve.requests import MAX_LOGPROBS


class Scoring:
    """The log-probabilities of a server's choices, one scoring at a time."""

    def __init__(self, generator):
        self.generator = generator
        # One `top` for every call: the scorer traces a program per value.
        self.top = min(MAX_LOGPROBS, generator.vocab.size)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="charlm-score")

    async def logprobs(self, prompt: Prompt, generated: str, start: int, top: int) -> dict:
        """The logprobs object of the characters from `start` on of the prompt's text
        followed by `generated`, with the `top` most likely characters at each."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.worker, self.compute, prompt, generated, start, top)

    def compute(self, prompt: Prompt, generated: str, start: int, top: int) -> dict:
        vocab = self.generator.vocab
        ids = np.concatenate([prompt.ids, vocab.encode(generated)]).astype(np.int32)
        scores = self.generator.score_ids(ids, self.top)
        return shaped(scores, start, top, has_prompt=len(prompt.ids) > 0)


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
