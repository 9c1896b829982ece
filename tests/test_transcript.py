"""The chat transcript a character model continues (charlm.serve.transcript): its lines,
the stops that end a reply at the next speaker, and `--chat-roles`, with no model."""

from __future__ import annotations

import pytest

from charlm.sampling_rules import StopScan
from charlm.serve.transcript import (
    ROLES,
    checked_messages,
    parse_chat_roles,
    render,
    speaker_stops,
)


def test_a_chat_is_one_line_per_message_then_the_assistants_name():
    names = parse_chat_roles("user=ROMEO, assistant=JULIET")
    messages = checked_messages(
        [
            {"role": "developer", "content": "Verona."},
            {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
            {"role": "assistant", "content": "Good day"},
            {"role": "user", "content": "Goodbye", "name": "r"},
        ]
    )
    assert render(messages, names) == (
        "system: Verona.\nROMEO: Hello\nJULIET: Good day\nROMEO: Goodbye\nJULIET: "
    )


def test_a_reply_ends_before_the_next_speakers_line():
    names = parse_chat_roles("user=ROMEO,assistant=JULIET")
    assert speaker_stops(names) == ["\nsystem:", "\nROMEO:", "\nJULIET:"]
    scan = StopScan(100, tuple(speaker_stops(names)))
    assert scan.take("Good night, good night!\nROMEO: Shall I") == "Good night, good night!"
    assert scan.finish_reason == "stop"


def test_roles_not_named_keep_their_own_names():
    assert parse_chat_roles("") == ROLES
    assert parse_chat_roles("assistant=bot") == {**ROLES, "assistant": "bot"}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("user", "ROLE=NAME"),
        ("narrator=X", "ROLE=NAME"),
        ("user=", "non-empty"),
        ("user=A:B", "without ':'"),
    ],
)
def test_bad_chat_roles_are_refused_naming_the_option(text, fragment):
    with pytest.raises(ValueError, match="--chat-roles") as caught:
        parse_chat_roles(text)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    "messages, fragment",
    [
        ([], "non-empty list"),
        ("hi", "non-empty list"),
        (["hi"], "messages[0] must be an object"),
        ([{"role": "robot", "content": "x"}], "messages[0].role must be one of"),
        ([{"role": ["user"], "content": "x"}], "messages[0].role must be one of"),
        ([{"role": "user", "content": 5}], "messages[0].content must be a string"),
        ([{"role": "user", "content": "x", "tool_calls": []}], "unknown field 'tool_calls'"),
    ],
)
def test_bad_messages_are_refused_naming_the_message(messages, fragment):
    with pytest.raises(ValueError) as caught:
        checked_messages(messages)
    assert fragment in str(caught.value)


def test_a_chat_request_is_its_transcript_stopped_at_every_speaker():
    from charlm.config import SampleConfig
    from charlm.data.vocabulary import Vocabulary
    from charlm.serve.chat import parse_chat
    from charlm.serve.requests import Limits
    from charlm.textgen import TextGenerator

    vocab = Vocabulary(sorted(set("ROMEJULIT: hello\n")))
    generator = TextGenerator(None, vocab, SampleConfig(), sampler=object())  # no model read
    names = parse_chat_roles("user=ROMEO,assistant=JULIET")
    body = {"messages": [{"role": "user", "content": "hello"}], "stop": "x", "seed": 1}
    completion = parse_chat(body, generator, Limits(), names)
    assert completion.prompts[0].text == "ROMEO: hello\nJULIET: "
    assert completion.stop == ["x", "\nsystem:", "\nROMEO:", "\nJULIET:"]
