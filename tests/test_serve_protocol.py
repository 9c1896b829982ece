"""`charlm serve` speaking the rest of OpenAI's completions protocol, through one real
server process: every form of `prompt`, `logprobs` and `echo` (their numbers against
`LanguageModel.score` and against the plain Keras model), `max_tokens: 0`, `logit_bias`,
up to 16 stop strings, `user`, streaming with logprobs, and the refusals of bad values;
the tokenizer endpoints; chat completions through the `openai` client."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

import charlm
from charlm.serve.prompts import readable
from tests.helpers import Server, events, invoke

SAMPLING = {"max_tokens": 40, "temperature": 0.9, "seed": 5}


@pytest.fixture(scope="module")
def server(trained_run):
    running = Server(
        trained_run, "--lanes", 4, "--queue", 16, "--max-tokens", 2000, "--max-prompt-chars", 3000,
        "--chat-roles", "user=ROMEO,assistant=JULIET",
    )  # fmt: skip
    yield running
    running.stop()


@pytest.fixture(scope="module")
def lm(trained_run):
    return charlm.load(trained_run)


def complete(server, **body) -> dict:
    reply = server.post(body)
    assert reply.status_code == 200, reply.text
    return reply.json()


def ids_of(lm, text: str) -> list[int]:
    return lm.vocabulary.encode(text).tolist()


def test_each_prompt_form_gets_its_choices_prompt_major(server, lm):
    prompts = ["the cat", "a dog sat"]
    alone = [complete(server, prompt=p, n=2, **SAMPLING)["choices"] for p in prompts]
    expected = [choice["text"] for choices in alone for choice in choices]
    forms = [prompts, [ids_of(lm, p) for p in prompts]]
    for prompt in forms:
        body = complete(server, prompt=prompt, n=2, **SAMPLING)
        assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
        assert [c["text"] for c in body["choices"]] == expected
        assert body["usage"]["prompt_tokens"] == sum(map(len, prompts))
    single = complete(server, prompt=ids_of(lm, prompts[1]), n=2, **SAMPLING)
    assert [c["text"] for c in single["choices"]] == expected[2:]


def assert_scores(logprobs: dict, text: str, scores, start: int, top: int) -> None:
    """`logprobs` (OpenAI's object) holds positions `start` on of `scores` of `text`."""
    assert logprobs["tokens"] == list(text[start:])
    assert logprobs["text_offset"] == list(range(start, len(text)))
    got = logprobs["token_logprobs"]
    first = 1 if start == 0 else 0  # the prompt's first character has no context
    if first:
        assert got[0] is None and logprobs["top_logprobs"][0] is None
    np.testing.assert_allclose(got[first:], scores.logprobs[start + first :], rtol=1e-5)
    for position, found in enumerate(logprobs["top_logprobs"][first:], start + first):
        expected = dict(scores.top[position][:top])
        assert list(found) == list(expected)
        np.testing.assert_allclose(list(found.values()), list(expected.values()), rtol=1e-5)


def test_echo_and_logprobs_are_the_scores_of_the_text(server, lm):
    prompt = "the cat sat"
    body = complete(server, prompt=prompt, echo=True, logprobs=3, **SAMPLING)
    choice = body["choices"][0]
    text = choice["text"]
    assert text.startswith(prompt) and len(text) == len(prompt) + 40
    assert body["usage"]["completion_tokens"] == 40
    assert_scores(choice["logprobs"], text, lm.score(text, top=3), 0, 3)
    plain = complete(server, prompt=prompt, logprobs=2, **SAMPLING)["choices"][0]
    assert plain["text"] == text[len(prompt) :]
    assert_scores(plain["logprobs"], text, lm.score(text, top=2), len(prompt), 2)


@pytest.mark.parametrize("prompt", ["a", "ROMEO", "x", "the cat sat on the mat. " * 3])
def test_greedy_text_is_the_most_likely_characters_its_logprobs_list(server, prompt):
    """The text is drawn from the state its log-probabilities are read from (the prompt
    read once, after a newline): at temperature 0 each character is the first one listed."""
    body = complete(server, prompt=prompt, logprobs=1, max_tokens=60, temperature=0)
    logprobs = body["choices"][0]["logprobs"]
    listed = [next(iter(top)) for top in logprobs["top_logprobs"]]
    assert logprobs["tokens"] == listed


def test_each_of_n_choices_has_the_scores_of_its_own_text(server, lm):
    """The n choices of a prompt share its reading's scores; each text is its own."""
    prompts = [
        "the cat sat on the mat, and the dog sat by the door of the house.",
        "a bird in the hand is worth two in the bush, or so they say to me.",
    ]
    body = complete(server, prompt=prompts, n=2, echo=True, logprobs=2, **SAMPLING)
    texts = [choice["text"] for choice in body["choices"]]
    assert len(set(texts)) == 4
    for choice, text in zip(body["choices"], texts):
        assert_scores(choice["logprobs"], text, lm.score(text, top=2), 0, 2)


def test_max_tokens_0_with_echo_scores_the_prompt_alone(server, lm, trained_run):
    import keras

    text = "the dog ran to the box\nand a cat"
    body = complete(server, prompt=ids_of(lm, text), max_tokens=0, echo=True, logprobs=1)
    choice = body["choices"][0]
    assert choice["text"] == text and choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 0
    assert_scores(choice["logprobs"], text, lm.score(text, top=1), 0, 1)
    # The plain Keras file, read by Keras alone: each character after a newline and the
    # characters before it.
    model = keras.saving.load_model(lm.loaded.model_path, compile=False)
    ids = ids_of(lm, "\n" + text)
    logits = np.asarray(model(np.array([ids[:-1]])))[0]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    expected = log_softmax[np.arange(len(text)), ids[1:]]
    np.testing.assert_allclose(choice["logprobs"]["token_logprobs"][1:], expected[1:], atol=1e-4)


def test_max_tokens_0_without_echo_generates_nothing(server):
    body = complete(server, prompt=["a", "b"], max_tokens=0)
    assert [c["text"] for c in body["choices"]] == ["", ""]


def test_an_empty_prompt_scored_alone_has_no_positions(server):
    choice = complete(server, max_tokens=0, echo=True, logprobs=0)["choices"][0]
    assert choice["text"] == ""
    assert choice["logprobs"] == {
        "tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []
    }  # fmt: skip


def test_logit_bias_of_minus_100_removes_a_character(server, lm):
    plain = complete(server, prompt="the", n=2, max_tokens=400, temperature=1.0, seed=2)
    texts = "".join(c["text"] for c in plain["choices"])
    common = max(set(texts), key=texts.count)
    banned = {str(ids_of(lm, common)[0]): -100}
    biased = complete(
        server, prompt="the", n=2, max_tokens=400, temperature=1.0, seed=2, logit_bias=banned
    )
    assert all(common not in c["text"] for c in biased["choices"])
    assert all(len(c["text"]) == 400 for c in biased["choices"])
    neutral = complete(
        server, prompt="the", n=2, max_tokens=400, temperature=1.0, seed=2, logit_bias={}
    )
    assert neutral["choices"] == plain["choices"]
    forced = {str(ids_of(lm, "x")[0]): 100}
    greedy = complete(server, prompt="the", max_tokens=20, temperature=0, logit_bias=forced)
    assert greedy["choices"][0]["text"] == "x" * 20


def test_streaming_sends_logprobs_in_each_chunk(server, lm):
    request = {"prompt": "a cat", "echo": True, "logprobs": 2, **SAMPLING, "max_tokens": 300}
    whole = complete(server, **request)["choices"][0]
    with httpx.stream(
        "POST", f"{server.url}/v1/completions", json={**request, "stream": True}, timeout=60
    ) as reply:
        chunks = [e["choices"][0] for e in events(reply)[:-1]]
    # The echoed prompt, then the text in one chunk or more (text that arrives while an
    # event is being sent goes into the next one: how many depends on timing).
    assert len(chunks) >= 2 and chunks[0]["text"] == "a cat"
    assert all(len(c["logprobs"]["tokens"]) == len(c["text"]) for c in chunks)
    assert "".join(c["text"] for c in chunks) == whole["text"]
    for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
        joined = [value for c in chunks for value in c["logprobs"][key]]
        assert joined == whole["logprobs"][key]  # a prefix's scores are the whole text's


def test_user_and_sixteen_stop_strings_are_accepted(server):
    stops = [f"{chr(0x100 + i)}" for i in range(16)]
    body = complete(server, prompt="the", user="someone", stop=stops, **SAMPLING)
    assert len(body["choices"][0]["text"]) == 40


@pytest.mark.parametrize(
    "body, param, fragment",
    [
        ({"logprobs": -1}, "logprobs", "from 0 to 20"),
        ({"logprobs": True}, "logprobs", "from 0 to 20"),
        ({"logprobs": "3"}, "logprobs", "from 0 to 20"),
        ({"echo": "yes"}, "echo", "true or false"),
        ({"user": 5}, "user", "must be a string"),
        ({"logit_bias": {"100000": 1}}, "logit_bias", "token ids are 0 to"),
        ({"logit_bias": {"a": 1}}, "logit_bias", "token ids are 0 to"),
        ({"logit_bias": {"1": 101}}, "logit_bias", "from -100 to 100"),
        ({"logit_bias": {"1": "x"}}, "logit_bias", "from -100 to 100"),
        ({"logit_bias": [1]}, "logit_bias", "an object"),
        ({"prompt": []}, "prompt", "a list of token ids"),
        ({"prompt": [1, "a"]}, "prompt", "a list of token ids"),
        ({"prompt": [[1], "a"]}, "prompt", "a list of token ids"),
        ({"prompt": [[1, True]]}, "prompt", "not a token id"),
        ({"prompt": [[-1]]}, "prompt", "holds token id -1"),
        ({"prompt": [10**30]}, "prompt", "this model's ids are 0 to"),
        ({"prompt": [[0] * 3001]}, "prompt", "3,001 tokens"),
        ({"prompt": ["a"] * 9, "n": 2}, "prompt", "queues at most 16"),
    ],
)
def test_bad_values_of_the_new_fields_get_a_400_naming_them(server, body, param, fragment):
    response = httpx.post(
        f"{server.url}/v1/completions",
        content=json.dumps({"max_tokens": 3, **body}),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert fragment in error["message"], error["message"]


def post(server, path: str, body) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=30)


def test_the_tokenizer_endpoints_round_trip(server, lm):
    info = httpx.get(f"{server.url}/tokenizer_info").json()
    assert info["eos_token"] == info["bos_token"] == "\n"
    assert info["vocab_size"] == lm.vocabulary.size
    text = "the cat\nsat on é λ"
    tokenized = post(server, "/tokenize", {"prompt": text, "add_special_tokens": False}).json()
    assert tokenized["tokens"] == ids_of(lm, text) and tokenized["count"] == len(text)
    assert post(server, "/detokenize", {"tokens": tokenized["tokens"]}).json() == {"prompt": text}
    unknown = post(server, "/tokenize", {"prompt": "Z"}).json()["tokens"]
    assert unknown == [lm.vocabulary.unknown_id]
    assert post(server, "/detokenize", {"tokens": unknown}).json() == {"prompt": "\ufffd"}


@pytest.mark.parametrize(
    "path, body, param, fragment",
    [
        ("/detokenize", {"tokens": [0, 10**6]}, "tokens", "this model's ids are 0 to"),
        ("/detokenize", {"tokens": [-1]}, "tokens", "holds token id -1"),
        ("/detokenize", {"tokens": "abc"}, "tokens", "a list of token ids"),
        ("/detokenize", {"tokens": [1.5]}, "tokens", "not a token id"),
        ("/detokenize", {}, "tokens", "tokens is required"),
        ("/tokenize", {"prompt": 5}, "prompt", "must be a string"),
        ("/tokenize", {"text": "a"}, "text", "unknown field"),
        ("/tokenize", {"prompt": "a" * 3001}, "prompt", "at most 3,000"),
        ("/tokenize", [1], None, "JSON object"),
    ],
)
def test_bad_tokenizer_requests_get_a_400_naming_the_field(server, path, body, param, fragment):
    response = post(server, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"], error


CHAT = [
    {"role": "system", "content": "a play"},
    {"role": "user", "content": "the cat sat on"},
    {"role": "assistant", "content": "a mat"},
    {"role": "user", "content": "and then"},
]
TRANSCRIPT = "system: a play\nROMEO: the cat sat on\nJULIET: a mat\nROMEO: and then\nJULIET: "
SPEAKERS = ["\nsystem:", "\nROMEO:", "\nJULIET:"]


def test_chat_continues_the_transcript_as_the_assistant(server):
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    options = {"max_tokens": 60, "temperature": 0.9, "seed": 4, "n": 2}
    expected = complete(server, prompt=TRANSCRIPT, stop=SPEAKERS, **options)
    reply = client.chat.completions.create(model="run", messages=CHAT, **options)
    assert reply.object == "chat.completion"
    assert [c.message.content for c in reply.choices] == [c["text"] for c in expected["choices"]]
    assert {c.message.role for c in reply.choices} == {"assistant"}
    assert [c.finish_reason for c in reply.choices] == ["length", "length"]
    assert reply.usage.prompt_tokens == expected["usage"]["prompt_tokens"]
    stream = client.chat.completions.create(model="run", messages=CHAT, stream=True, **options)
    chunks = [chunk for chunk in stream]
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    for index, choice in enumerate(reply.choices):
        deltas = [c.choices[0] for c in chunks if c.choices[0].index == index]
        assert deltas[0].delta.role == "assistant" and deltas[-1].finish_reason == "length"
        assert "".join(d.delta.content for d in deltas) == choice.message.content


def test_chat_logprobs_are_the_scores_of_the_reply(server, lm):
    """Through the openai client, streaming and not: each character of the reply with its
    log-probability after the transcript and the reply before it, its UTF-8 bytes, and
    the most likely characters there, as LanguageModel.score gives them."""
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    options = {"max_tokens": 30, "temperature": 0.9, "seed": 2, "logprobs": True, "top_logprobs": 3}
    reply = client.chat.completions.create(model="run", messages=CHAT, **options).choices[0]
    content = reply.logprobs.content
    assert "".join(token.token for token in content) == reply.message.content
    # The model reads the transcript as a prime: without the characters it never saw.
    read = readable(lm.generator, TRANSCRIPT)
    scores = lm.score(read + reply.message.content)
    start = len(read)
    np.testing.assert_allclose(
        [token.logprob for token in content], scores.logprobs[start:], rtol=1e-5
    )
    for position, token in enumerate(content, start):
        assert token.bytes == list(token.token.encode("utf-8"))
        assert [top.token for top in token.top_logprobs] == [c for c, _ in scores.top[position][:3]]
    stream = client.chat.completions.create(model="run", messages=CHAT, stream=True, **options)
    streamed = [
        t
        for chunk in stream
        if chunk.choices[0].logprobs
        for t in chunk.choices[0].logprobs.content
    ]
    assert [t.model_dump() for t in streamed] == [t.model_dump() for t in content]


def test_chat_takes_max_completion_tokens(server):
    body = {"messages": CHAT, "max_completion_tokens": 7, "seed": 1}
    reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30).json()
    assert len(reply["choices"][0]["message"]["content"]) == 7


@pytest.mark.parametrize(
    "body, param, fragment",
    [
        ({}, "messages", "non-empty list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages", "role must be one of"),
        ({"messages": CHAT, "logprobs": 1}, "logprobs", "true or false"),
        ({"messages": CHAT, "top_logprobs": 2}, "top_logprobs", "needs logprobs: true"),
        ({"messages": CHAT, "logprobs": True, "top_logprobs": 21}, "top_logprobs", "0 to"),
        ({"messages": CHAT, "top_p": 0}, "top_p", "above 0"),
        ({"messages": CHAT, "prompt": "x"}, "prompt", "unknown field"),
        ({"messages": [{"role": "user", "content": "a" * 3000}]}, "messages", "at most 3,000"),
    ],
)
def test_bad_chat_requests_get_a_400_naming_the_field(server, body, param, fragment):
    response = post(server, "/v1/chat/completions", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"], error


def test_bad_chat_roles_are_refused_in_one_line(trained_run):
    result = invoke("serve", "-c", trained_run, "--chat-roles", "narrator=X")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "--chat-roles takes ROLE=NAME pairs" in result.stderr
