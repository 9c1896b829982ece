"""The prefix caches: a prompt extending one read before is read from the stored state,
and a text extending one scored before is scored from its stored strides, each with
exactly the numbers of reading it whole; the caches keep to their memory limits; and a
real server answers the same text and log-probabilities with them as without them."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.helpers import Server

# Each reads prompts through compiled XLA programs of its own: too slow for `make test-fast`.
pytestmark = pytest.mark.slow

SYSTEM = "You are a helpful assistant who speaks as a play's characters do. " * 3


@pytest.fixture(scope="module")
def sampler(trained_run):
    from charlm.generate import Sampler
    from charlm.run.load import load_checkpoint

    loaded = load_checkpoint(trained_run)
    return Sampler(loaded.model, loaded.vocab).batch_invariant()


def read(sampler, texts, cache=None):
    """The logits and states after each text, as numpy arrays (read through `cache`, if given)."""
    from charlm.reading import PromptReading

    prompts = [sampler.vocab.encode(text) for text in texts]
    if cache is None:
        reading = PromptReading(sampler, prompts)
        logits, states = reading.read_all()
    else:
        reading = cache.reading(sampler, prompts)
        while not reading.done:
            reading.read_piece()
        logits, states = reading.result()
    return logits.numpy(), [[s.numpy() for s in layer] for layer in states]


def assert_same(got, expected):
    np.testing.assert_array_equal(got[0], expected[0])
    for got_layer, expected_layer in zip(got[1], expected[1]):
        for got_state, expected_state in zip(got_layer, expected_layer):
            np.testing.assert_array_equal(got_state, expected_state)


def test_a_prompt_read_from_a_stored_prefix_has_the_numbers_of_a_whole_read(sampler):
    """A shared system prompt, a conversation's next turn, the same prompt again and a
    new one, read together in one group after a first prompt filled the cache."""
    from charlm.serve.prefix_cache import STRIDE, PrefixCache

    cache = PrefixCache(2**26)
    first = SYSTEM + "ROMEO: what light"
    read(sampler, [first], cache)
    texts = [SYSTEM + "JULIET: ay me", first + " through yonder window", first, "new text"]
    before = cache.read_chars
    got = read(sampler, texts, cache)
    assert_same(got, read(sampler, texts))
    new_chars = len("JULIET: ay me") + len(" through yonder window") + len("new text")
    assert new_chars <= cache.read_chars - before < new_chars + STRIDE


def test_without_a_cache_nothing_is_stored_and_every_character_is_read(sampler):
    from charlm.serve.prefix_cache import PrefixCache

    cache = PrefixCache(0)
    read(sampler, [SYSTEM], cache)
    read(sampler, [SYSTEM + "more"], cache)
    assert (cache.entries, cache.saved_chars) == ({}, 0)
    assert cache.read_chars == 2 * len(SYSTEM) + 4


def test_the_cache_keeps_to_its_limit_dropping_the_least_recently_used(sampler):
    from charlm.serve.prefix_cache import KEY_BYTES, PrefixCache

    cache = PrefixCache(2**20)
    read(sampler, ["a first prompt"], cache)
    entry = next(iter(cache.entries.values())).nbytes + KEY_BYTES
    cache.limit = 40 * entry
    for index in range(60):
        read(sampler, [numbered(index) * 3], cache)
        if index % 10 == 0:  # keep the first one in use: it must stay
            read(sampler, ["a first prompt"], cache)
        assert cache.size <= cache.limit
    assert len(cache.entries) == 40
    saved = cache.saved_chars
    read(sampler, ["a first prompt"], cache)
    assert cache.saved_chars == saved + len("a first prompt")
    read(sampler, [numbered(0) * 3], cache)  # long since dropped
    assert cache.saved_chars == saved + len("a first prompt")


def score(generator, texts, cache_bytes):
    """Each text's Scores through the server's scoring, with a cache of `cache_bytes`;
    and that Scoring."""
    from charlm.serve.logprobs import Scoring

    scoring = Scoring(generator, cache_bytes)
    return scoring.score([generator.vocab.encode(text) for text in texts]), scoring


def test_a_text_scored_from_cached_strides_has_the_scores_of_a_whole_scoring(trained_run):
    """Choices after a shared context, a text extending one scored before, the same text
    again and a new one, scored together after a first text filled the cache: the
    numbers of scoring each whole, and only the characters past the cached strides read."""
    import charlm
    from charlm.serve.prefix_cache import STRIDE

    generator = charlm.load(trained_run).generator
    first = SYSTEM + "ROMEO: what light"
    texts = [SYSTEM + "JULIET: ay me", first + " through yonder window", first, "new text"]
    _, scoring = score(generator, [first], 2**26)
    before = scoring.cache.read_chars
    got = scoring.score([generator.vocab.encode(text) for text in texts])
    expected, _ = score(generator, texts, 0)
    for got_scores, expected_scores in zip(got, expected):
        for name in ("logprobs", "top_ids", "top_logprobs"):
            np.testing.assert_array_equal(getattr(got_scores, name), getattr(expected_scores, name))
    shared = [len(SYSTEM) + len("JULIET: "), len(first), len(first), 0]
    read = sum(len(text) - STRIDE * (same // STRIDE) for text, same in zip(texts, shared))
    assert scoring.cache.read_chars - before == read


def test_texts_scored_together_read_the_beginning_they_share_once(trained_run):
    """lm-eval's choices after one context, sent in one batch: the context's whole strides
    are scored once, and each choice from them, with the numbers of scoring each whole."""
    import charlm
    from charlm.serve.prefix_cache import STRIDE

    generator = charlm.load(trained_run).generator
    choices = [SYSTEM + ending for ending in ("ay", "no", "perhaps", "no")]
    got, scoring = score(generator, choices, 2**26)
    expected, _ = score(generator, choices, 0)
    for got_scores, expected_scores in zip(got, expected):
        np.testing.assert_array_equal(got_scores.logprobs, expected_scores.logprobs)
    shared = STRIDE * (len(SYSTEM) // STRIDE)
    assert scoring.cache.read_chars == shared + sum(len(text) - shared for text in choices)


@pytest.mark.parametrize("cache_bytes", [0, 2**26])
def test_a_text_scored_from_the_strides_its_prompts_reading_hands_on_is_scored_whole(
    trained_run, cache_bytes
):
    """The engine reads a prompt that asks for logprobs once, for its text and its scores:
    the whole strides its reading hands on (a prompt read after a newline) are what scoring
    the prompt with a generated text after it would have read, so only the rest is read,
    with the numbers of scoring it whole; a prompt read from the prefix cache hands none."""
    import charlm
    from charlm.serve.logprobs import Scoring
    from charlm.serve.prefix_cache import STRIDE, PrefixCache

    generator = charlm.load(trained_run).generator
    sampler = generator.sampler.batch_invariant()
    # Whole strides and a part, less than a stride, read before, exactly two strides.
    prompts = ["ROMEO: what light " * 5, "a short one", SYSTEM + "JULIET: ay", ("ay me " * 11)[:64]]
    prompt_cache = PrefixCache(2**26)
    read(sampler, ["\n" + prompts[2]], prompt_cache)  # the third was read: it hands none
    reading = prompt_cache.reading(
        sampler, [sampler.prime_row(sampler.vocab.encode(p)) for p in prompts], [0, 1, 2, 3]
    )
    while not reading.done:
        reading.read_piece()
    handed = [reading.handed(row) for row in range(4)]
    assert [len(strides) for strides in handed] == [len(prompts[0]) // STRIDE, 0, 0, 2]
    texts = [generator.vocab.encode(p + " through yonder") for p in prompts]
    scoring = Scoring(generator, cache_bytes)
    got = scoring.score(texts, handed)
    # Each scored alone: other rows than the engine read them with (numbers are the same).
    expected = [score(generator, [p + " through yonder"], 0)[0][0] for p in prompts]
    for got_scores, expected_scores in zip(got, expected):
        for name in ("logprobs", "top_ids", "top_logprobs"):
            np.testing.assert_array_equal(getattr(got_scores, name), getattr(expected_scores, name))
    handed_chars = STRIDE * (len(handed[0]) + len(handed[3]))
    assert scoring.cache.read_chars == sum(map(len, texts)) - handed_chars


def test_a_prompt_whose_strides_would_take_too_much_memory_hands_none(trained_run, monkeypatch):
    """Handed strides are kept until their request is answered: a prompt whose strides
    would take more than HANDED_BYTES hands none (scoring reads it again)."""
    import charlm
    from charlm.serve import prefix_cache

    sampler = charlm.load(trained_run).generator.sampler.batch_invariant()
    prompts = ["ROMEO: what light " * 5, "the king is dead. " * 10]  # 2 and 5 whole strides

    def handed_counts():
        reading = prefix_cache.PrefixCache(0).reading(
            sampler, [sampler.prime_row(sampler.vocab.encode(p)) for p in prompts], [0, 1]
        )
        while not reading.done:
            reading.read_piece()
        return [reading.handed(row) for row in range(2)]

    first, _ = handed_counts()
    assert len(first) == 2
    monkeypatch.setattr(prefix_cache, "HANDED_BYTES", 3 * first[0].nbytes)
    assert [len(strides) for strides in handed_counts()] == [2, 0]


def test_a_full_score_cache_drops_a_texts_later_strides_first():
    """A text's strides are only of use from its first on: when some must go, the
    later ones go."""
    from charlm.reading import Start
    from charlm.serve.prefix_cache import KEY_BYTES, ScoreCache, ScoredStride, stride_digests

    def stride():
        start = Start(np.zeros(8), [[np.zeros(32)]])
        return ScoredStride(np.zeros(32), np.zeros(32), np.zeros(32), start)

    cost = stride().nbytes + KEY_BYTES
    cache = ScoreCache(3 * cost)
    digests = stride_digests(np.arange(5 * 32, dtype=np.int32))
    cache.store_strides(digests, {1: stride(), 2: stride()})  # a prefix scored first
    assert len(cache.strides(digests, 5)) == 2
    cache.store_strides(digests, {count: stride() for count in range(3, 6)})  # then the text
    assert len(cache.strides(digests, 5)) == 3
    other = stride_digests(np.arange(1000, 1032, dtype=np.int32))
    cache.store_strides(other, {1: stride()})  # one more: the text's third stride goes
    assert len(cache.strides(digests, 5)) == 2


def numbered(index: int) -> str:
    """A prompt of the tiny run's letters for each index."""
    return f"prompt {'abcdeghikl'[index // 10]}{'abcdeghikl'[index % 10]} "


def test_a_server_answers_the_same_with_its_cache_as_without(trained_run):
    """The same requests to a server with a cache and one without: the same text and
    log-probabilities, and the cached one read only the new characters."""
    prompts = [SYSTEM + "ROMEO: what light", SYSTEM + "JULIET: ay me", SYSTEM + "JULIET: ay me"]
    requests = [
        {"prompt": prompt, "max_tokens": 40, "seed": 3, "logprobs": 2} for prompt in prompts
    ]
    # lm-eval's choices after a shared context: scored, not generated.
    choices = [SYSTEM + "ROMEO: ay", SYSTEM + "ROMEO: no"]
    requests.append({"prompt": choices, "max_tokens": 0, "echo": True, "logprobs": 3})
    answers = []
    for megabytes in (16, 0):
        server = Server(trained_run, "--lanes", 2, "--prefix-cache-mb", megabytes)
        try:
            answers.append([server.post(request).json()["choices"] for request in requests])
            health = httpx.get(f"{server.url}/health").json()
        finally:
            server.stop()
        if megabytes:
            assert health["prefix_cache"]["saved_chars"] >= len(SYSTEM) * 2 - 64
            assert health["score_cache"]["saved_chars"] >= len(SYSTEM) * 4 - 128
    assert answers[0] == answers[1]
