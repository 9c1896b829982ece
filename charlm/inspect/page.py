"""The inspection of a text, as data a page draws (static/inspect.js), and the
self-contained HTML page `charlm inspect` writes: the model's surprise at each character,
the most likely characters there, and the values of its units and gates.

A page holds one byte per character for each unit and quantity it keeps, spread over that
unit's range on the text; the units find_units found come first, then the others by how
much their hidden state varies, as many as `max_values` allows (a long text with a wide
model cannot keep them all and stay a page a browser opens quickly).
"""

from __future__ import annotations

import base64
import html
import json
import math
from importlib import resources

import numpy as np

from charlm.inspect import MAX_VALUES
from charlm.inspect.activations import activations
from charlm.inspect.units import Unit, find_units
from charlm.model.build import recurrent_layers

TOP = 5  # most likely characters shown at each position
SIGNED = ("hidden", "candidate", "cell")  # quantities around 0; the others are gates, 0..1
STATIC = resources.files("charlm.serve") / "static"


def inspect_text(model, vocab, text: str, scores, max_values: int = MAX_VALUES) -> dict:
    """Inspect `text`: read its activations, find its units, and make the page's data.

    Args:
        model: a stateless Keras model of stock recurrent layers (load_checkpoint's).
        vocab: its vocabulary.
        text: the characters to inspect.
        scores: the model's Scores of `text` (TextGenerator.score with `top` = TOP).
        max_values: the most unit values (one byte each) the data may hold.

    Returns:
        The dict `inspection` returns.
    """
    layers = activations(model, vocab, text)
    cells = [type(layer).__name__ for layer in recurrent_layers(model)]
    return inspection(text, scores, layers, find_units(layers, text), cells, max_values)


def inspection(
    text: str,
    scores,
    layers: list[dict[str, np.ndarray]],
    found: dict[str, list[Unit]],
    cells: list[str],
    max_values: int = MAX_VALUES,
) -> dict:
    """What inspect.js draws, as JSON-ready data.

    Args:
        text: the characters inspected.
        scores: the model's Scores of `text` (LanguageModel.score's).
        layers: activations' result for `text`: per layer, arrays (len(text), units).
        found: find_units' result; these units are kept first.
        cells: each recurrent layer's class name (LSTM, GRU, SimpleRNN).
        max_values: the most unit values (one byte each) to keep.

    Returns:
        dict: text; bits (len(text),) the surprise at each character; bits_per_char;
        top, per position the likely characters with their probabilities; signed; layers,
        per layer the kept units' quantities as base64 bytes with their ranges; found;
        note, how many units the page holds.
    """
    held = kept_units(layers, found, len(text), max_values)
    total = sum(layer["hidden"].shape[1] for layer in layers)
    kept = sum(len(units) for units in held)
    note = (
        f"The page holds all {total} units."
        if kept == total
        else f"The page holds {kept} of {total} units (those found first); a shorter text "
        f"or a larger budget of values holds more."
    )
    return {
        "text": text,
        "bits": [round(bits, 2) for bits in surprise_bits(scores.logprobs)],
        "bits_per_char": finite(scores.bits_per_char),
        "top": [[[char, round(math.exp(lp), 3)] for char, lp in row] for row in scores.top],
        "signed": list(SIGNED),
        "layers": [
            layer_data(values, cell, units) for values, cell, units in zip(layers, cells, held)
        ],
        "found": {
            name: [vars(unit) for unit in units if unit.unit in held[unit.layer]]
            for name, units in found.items()
        },
        "note": note,
    }


def surprise_bits(logprobs: np.ndarray) -> list[float]:
    """-log2 p of each character, finite (an impossible character shows as 99 bits)."""
    bits = -np.asarray(logprobs, np.float64) / math.log(2)
    return np.nan_to_num(bits, nan=99.0, posinf=99.0).clip(0, 99).tolist()


def finite(value: float) -> float:
    return round(value, 4) if math.isfinite(value) else 0.0


def kept_units(
    layers: list[dict[str, np.ndarray]], found: dict[str, list[Unit]], chars: int, max_values
) -> list[list[int]]:
    """Per layer, the units a page keeps (sorted): the found ones first, then the others
    by the spread of their hidden state, while their values fit in `max_values`."""
    order = [(unit.layer, unit.unit) for units in found.values() for unit in units]
    spreads = [
        (-float(spread), layer, unit)
        for layer, values in enumerate(layers)
        for unit, spread in enumerate(
            np.std(values["hidden"], axis=0) if chars else [0.0] * values["hidden"].shape[1]
        )
    ]
    order += [(layer, unit) for _, layer, unit in sorted(spreads)]
    kept: list[set[int]] = [set() for _ in layers]
    budget = max_values
    for layer, unit in order:
        cost = chars * len(layers[layer])
        if unit in kept[layer] or cost > budget:
            continue
        kept[layer].add(unit)
        budget -= cost
    return [sorted(units) for units in kept]


def layer_data(values: dict[str, np.ndarray], cell: str, held: list[int]) -> dict:
    """A layer's kept units: each quantity's values as one byte per character, base64,
    with the (low, high) range the bytes spread over."""
    ranges, encoded = {}, {}
    for quantity, array in values.items():
        kept = array[:, held].astype(np.float64)
        low = kept.min(axis=0) if len(kept) else np.zeros(len(held))
        high = kept.max(axis=0) if len(kept) else np.zeros(len(held))
        span = np.where(high > low, high - low, 1.0)
        as_bytes = np.round((kept - low) / span * 255).astype(np.uint8)
        ranges[quantity] = [[round(lo, 5), round(hi, 5)] for lo, hi in zip(low, high)]
        encoded[quantity] = [
            base64.b64encode(column.tobytes()).decode("ascii") for column in as_bytes.T
        ]
    return {
        "cell": cell,
        "units": int(values["hidden"].shape[1]),
        "quantities": list(values),
        "held": held,
        "ranges": ranges,
        "values": encoded,
    }


def page_html(data: dict, title: str) -> str:
    """A self-contained HTML page that draws `data` with inspect.js and opens from disk:
    its script, style and data are inline, it references nothing outside itself.

    Args:
        data: what `inspection` returns.
        title: the page's title.

    Returns:
        The page's HTML.
    """
    script = (STATIC / "inspect.js").read_text(encoding="utf-8")
    style = (STATIC / "inspect.css").read_text(encoding="utf-8")
    # Inside <script>, "</script" would end it: JSON's \u escapes keep <, > and & out.
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return PAGE.format(title=html.escape(title), style=style, script=script, payload=payload)


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ margin: 1.2em; background: #fafafa; color: #1d1d1f; }}
h1 {{ font: 600 1.2em system-ui, sans-serif; }}
{style}
</style>
</head>
<body>
<h1>{title}</h1>
<div id="inspect"></div>
<script id="inspection" type="application/json">{payload}</script>
<script>
{script}
CharlmInspect.render(
  document.getElementById("inspect"),
  JSON.parse(document.getElementById("inspection").textContent),
);
</script>
</body>
</html>
"""
