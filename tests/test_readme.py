"""The README stays true: every `charlm ...` line it shows names a real command and real
options, every config it names exists, and it stays a manual of at most 400 lines."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from charlm.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_LINES = 400
PREFIXES = ("$ ", ".venv/bin/")
SHELL_SEPARATORS = {"|", "||", "&&", ";", ">", ">>", "<", "2>"}


def code_block_lines(text: str) -> list[str]:
    """Lines inside fenced code blocks, with backslash continuations joined."""
    lines, inside, pending = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return lines


def inline_spans(text: str) -> list[str]:
    """`charlm ...` spans in the prose and tables, placeholders' brackets removed."""
    spans = re.findall(r"`(charlm [^`]+)`", text)
    return [re.sub(r"[\[\]]|\.\.\.", " ", span) for span in spans]


def charlm_commands(text: str) -> list[list[str]]:
    """Each `charlm` invocation shown, as its words after `charlm` (up to a shell separator)."""
    commands = []
    for line in code_block_lines(text) + inline_spans(text):
        line = line.strip()
        for prefix in PREFIXES:
            line = line.removeprefix(prefix)
        if not line.startswith("charlm "):
            continue
        words = shlex.split(line, comments=True)[1:]
        cut = next((i for i, w in enumerate(words) if w in SHELL_SEPARATORS), len(words))
        commands.append(words[:cut])
    return commands


def option_names(command) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)}


def check(words: list[str], group) -> None:
    """The words name a command of `group` (or of one of its sub-groups) and its options.
    Typer's click objects (typer vendors click): a group is what has `.commands`."""
    assert words, "a bare `charlm` line"
    name, *rest = words
    assert name in group.commands, f"`charlm {' '.join(words)}`: no command {name!r}"
    command = group.commands[name]
    if hasattr(command, "commands"):
        return check(rest, command)
    known = option_names(command)
    for word in rest:
        if word.startswith("-") and len(word) > 1:
            option = word.split("=", 1)[0]
            assert option in known, f"`charlm {' '.join(words)}`: {name} has no option {option}"


COMMANDS = charlm_commands(README.read_text(encoding="utf-8"))


def test_the_readme_shows_commands():
    shown = {words[0] for words in COMMANDS if words}
    expected = {"train", "sample", "eval", "info", "bench", "serve", "export", "data"}
    expected |= {"compare", "inspect"}
    assert expected <= shown, f"the README shows no example of {sorted(expected - shown)}"


@pytest.mark.parametrize("words", COMMANDS, ids=lambda words: " ".join(words)[:60])
def test_each_command_is_real(words):
    check(words, typer.main.get_command(app))


def test_each_config_named_exists():
    named = set(re.findall(r"configs/[\w.-]+\.yaml", README.read_text(encoding="utf-8")))
    assert named, "the README names no preset"
    missing = sorted(path for path in named if not (ROOT / path).is_file())
    assert not missing, f"the README names configs that do not exist: {missing}"


def test_the_readme_is_at_most_400_lines():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"README.md has {lines} lines; keep it a manual (at most 400)"


def test_a_wrong_option_is_caught():
    """The checker itself: a misspelt option or command fails."""
    root = typer.main.get_command(app)
    check(["sample", "--checkpoint", "runs/x", "--top-p", "0.9"], root)
    with pytest.raises(AssertionError, match="no option --topp"):
        check(["sample", "--checkpoint", "runs/x", "--topp", "0.9"], root)
    with pytest.raises(AssertionError, match="no command 'smaple'"):
        check(["smaple"], root)
    with pytest.raises(AssertionError, match="no command 'fetchh'"):
        check(["data", "fetchh"], root)


def test_make_clean_keeps_runs_and_data():
    """`make clean` removes build artefacts and .venv only: trained runs and corpora stay."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\nclean:", 1)[1].split("\n\n", 1)[0]
    words = set(re.findall(r"[\w./*-]+", recipe))
    assert "$(VENV)" in recipe
    assert not words & {"runs", "runs/", "data", "data/", "*"}, recipe


def test_each_relative_link_exists():
    """Links and images into the repository (docs/, examples/) point at files that exist."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8"))
    local = [link for link in links if "://" not in link]
    assert local, "the README links no reference page"
    missing = sorted(link for link in local if not (ROOT / link).exists())
    assert not missing, f"the README links files that do not exist: {missing}"
