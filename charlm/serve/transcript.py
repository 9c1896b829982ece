"""A chat as a character model reads it: a transcript, one `{name}: {content}` line per
message, ending with the assistant's name, for the model to continue as the assistant;
its reply ends where it starts the next speaker's line. The names are configurable
(`charlm serve --chat-roles user=ROMEO,assistant=JULIET`), so that a model trained on a
chat log or a play answers in its own format. No TensorFlow here: the command line checks
`--chat-roles` before it loads a model.

    >>> render([{"role": "user", "content": "Hello"}], {**ROLES, "assistant": "JULIET"})
    'user: Hello\\nJULIET: '
"""

from __future__ import annotations

ROLES = {"system": "system", "user": "user", "assistant": "assistant"}  # the default names
ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role


def parse_chat_roles(text: str) -> dict[str, str]:
    """`user=ROMEO,assistant=JULIET` as every role's name (the ones not given keep their
    own); ValueError naming the problem otherwise."""
    names = dict(ROLES)
    for part in filter(None, (p.strip() for p in text.split(","))):
        role, equals, name = part.partition("=")
        role, name = role.strip(), name.strip()
        if not equals or role not in ROLES:
            raise ValueError(f"--chat-roles takes ROLE=NAME pairs, ROLE one of "
                             f"{', '.join(ROLES)}; got {part!r}")  # fmt: skip
        if not name or "\n" in name or ":" in name:
            raise ValueError(f"--chat-roles: the name of {role} must be a non-empty line "
                             f"without ':'; got {name!r}")  # fmt: skip
        names[role] = name
    return names


def render(messages: list[dict], names: dict[str, str]) -> str:
    """The transcript of checked `messages` (role and content strings), then the
    assistant's name: the prompt the model continues."""
    lines = [f"{names[m['role']]}: {m['content']}\n" for m in messages]
    return "".join(lines) + f"{names['assistant']}: "


def speaker_stops(names: dict[str, str]) -> list[str]:
    """Where a reply ends: at the start of any speaker's line."""
    return [f"\n{name}:" for name in dict.fromkeys(names.values())]


def checked_messages(messages) -> list[dict]:
    """`messages` as [{"role", "content"}] with the content a string (a list of text parts
    joined); ValueError naming the problem otherwise."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {role, content} objects")
    return [checked_message(message, index) for index, message in enumerate(messages)]


def checked_message(message, index: int) -> dict:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise ValueError(f"{where} must be an object with a role and a content")
    unknown = sorted(set(message) - {"role", "content", "name"})
    if unknown:
        raise ValueError(f"{where} has an unknown field {unknown[0]!r}")
    role = message.get("role")
    role = ALIASES.get(role, role) if isinstance(role, str) else None
    if role not in ROLES:
        raise ValueError(f"{where}.role must be one of {', '.join(ROLES)}; got {role!r}")
    return {"role": role, "content": content_text(message.get("content"), where)}


def content_text(content, where: str) -> str:
    """A message's content: a string, or a list of text parts ({"type": "text", "text"})."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return "".join(part["text"] for part in content)
    raise ValueError(f"{where}.content must be a string or a list of text parts")
