"""`charlm inspect`: the page it writes, through the real command, and the text it refuses."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from charlm.inspect.page import inspection, kept_units
from charlm.inspect.units import Unit

TEXT = 'the cat said "hi" (to the dog)\nand </script> ran & sat\n'


def run_charlm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "charlm.cli", *args], capture_output=True, text=True, timeout=300
    )


def page_data(page: str) -> dict:
    match = re.search(r'<script id="inspection" type="application/json">(.*?)</script>', page, re.S)
    return json.loads(match.group(1))


def test_charlm_inspect_writes_a_self_contained_page_of_the_text(trained_run, tmp_path):
    import charlm

    source = tmp_path / "text.txt"
    source.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "page.html"
    result = run_charlm("inspect", "--checkpoint", str(trained_run), str(source), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stderr and "bits/char" in result.stderr
    page = out.read_text(encoding="utf-8")
    # Nothing outside the page: no URL, no linked file, no import.
    for reference in ("http:", "https:", "src=", "href=", "@import", "url(", "//cdn"):
        assert reference not in page
    assert page.count("</script>") == 2  # the text's own "</script>" stays inside the data
    data = page_data(page)
    assert data["text"] == TEXT
    # The surprise is LanguageModel.score's, in bits; the top characters are its top 5.
    scores = charlm.load(trained_run).score(TEXT, top=5)
    np.testing.assert_allclose(data["bits"], -scores.logprobs / np.log(2), atol=0.006)
    assert [[c for c, _ in row] for row in data["top"]] == [
        [c for c, _ in row] for row in scores.top
    ]
    (layer,) = data["layers"]  # the tiny run: one GRU layer of 16 units, all held
    assert layer["cell"] == "GRU" and layer["held"] == list(range(16))
    assert set(layer["values"]) == {"hidden", "update_gate", "reset_gate", "candidate"}
    assert set(data["found"]) >= {"inside quotes", "inside brackets", "position in line"}


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x00\x01binary\x00", "binary"),
        (b"", "is empty"),
        (b"a" * 101, "holds 101 characters, more than the 100"),
        (b"a" * 10_000, "holds more than the 100 characters"),
        ("é".encode() * 101, "holds 101 characters, more than the 100"),
        (b"caf\xe9", "invalid UTF-8"),
    ],
)
def test_bad_input_is_refused_in_one_line(tmp_path, content, message):
    source = tmp_path / "text.txt"
    source.write_bytes(content)
    out = tmp_path / "page.html"
    # Refused before any model is loaded: the checkpoint need not even exist.
    result = run_charlm(
        "inspect", "-c", str(tmp_path / "run"), str(source), "--out", str(out), "--max-chars", "100"
    )
    assert result.returncode == 2
    assert result.stderr.startswith("charlm: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not out.exists()


class FakeScores:
    def __init__(self, text):
        self.logprobs = np.full(len(text), np.log(0.5), np.float32)
        self.top = [[("a", np.log(0.5)), ("b", np.log(0.25))] for _ in text]
        self.bits_per_char = 1.0


def test_a_budget_of_values_keeps_the_found_units_first():
    text = "abcdefghij"
    rng = np.random.default_rng(0)
    layers = [{"hidden": rng.normal(size=(10, 4)), "cell": rng.normal(size=(10, 4))}] * 2
    layers[1] = {
        "hidden": rng.normal(size=(10, 4)) * [1, 9, 1, 1],
        "cell": rng.normal(size=(10, 4)),
    }
    found = {"digit": [Unit(0, "cell", 3, 0.8)], "upper case": []}
    # Room for two units of 10 characters x 2 quantities: the found one, then the most varied.
    assert kept_units(layers, found, len(text), 40) == [[3], [1]]
    data = inspection(text, FakeScores(text), layers, found, ["LSTM", "LSTM"], max_values=40)
    assert "holds 2 of 8 units" in data["note"]
    assert data["found"]["digit"] == [vars(found["digit"][0])]
    # One byte per character, spread over the unit's range.
    hidden = layers[1]["hidden"][:, 1]
    raw = np.frombuffer(
        __import__("base64").b64decode(data["layers"][1]["values"]["hidden"][0]), np.uint8
    )
    low, high = data["layers"][1]["ranges"]["hidden"][0]
    np.testing.assert_allclose(low + raw / 255 * (high - low), hidden, atol=(high - low) / 500)
