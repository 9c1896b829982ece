"""Units that seem to mean something: those whose activation follows a simple property of
the text, such as being inside quotes or the position in the line (Karpathy's "visualizing
and understanding recurrent networks" found such cells in character LSTMs).

A heuristic: a unit is ranked by the Pearson correlation of its value after each character
with the property there, over one text. A high correlation says the unit tracks the
property on that text, not why, nor that it does nothing else; a property the text never
varies (no digits, no quotes) gets no units.

>>> text_properties('a "b"\\n')["inside quotes"].tolist()
[0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOP = 5  # units kept per property
OPENING, CLOSING = "([{", ")]}"


@dataclass(frozen=True)
class Unit:
    """One value of one unit: `quantity` ("hidden", a gate...) of unit `unit` of recurrent
    layer `layer` (0 first), and how it correlates with a property (-1..1)."""

    layer: int
    quantity: str
    unit: int
    correlation: float


def text_properties(text: str) -> dict[str, np.ndarray]:
    """The simple properties find_units looks for, at each character of `text`.

    Args:
        text: the text, read (as the activations are) after a newline.

    Returns:
        Property name (inside quotes, inside brackets, position in line, start of word,
        after newline, digit, upper case) -> (len(text),) float64 values.
    """
    chars = np.array(list(text), dtype=object) if text else np.array([], dtype=object)
    previous = np.array(["\n", *text[:-1]], dtype=object) if text else chars
    is_letter = np.array([c.isalpha() for c in text], bool)
    after_letter = np.array([c.isalpha() for c in previous], bool)
    properties = {
        "inside quotes": inside_quotes(text),
        "inside brackets": bracket_depth(text) > 0,
        "position in line": position_in_line(text),
        "start of word": is_letter & ~after_letter,
        "after newline": chars == "\n",
        "digit": np.array([c.isdigit() for c in text], bool),
        "upper case": np.array([c.isupper() for c in text], bool),
    }
    return {name: values.astype(np.float64) for name, values in properties.items()}


def inside_quotes(text: str) -> np.ndarray:
    """1 from an opening double quote to the character before its closing one: a
    straight quote `"` opens and closes in turn, `“` opens and `”` closes."""
    inside, values = False, np.zeros(len(text))
    for index, char in enumerate(text):
        if char == '"':
            inside = not inside
        elif char in "“”":
            inside = char == "“"
        values[index] = inside
    return values


def bracket_depth(text: str) -> np.ndarray:
    """How many brackets or parentheses are open after each character (never below 0)."""
    depth, values = 0, np.zeros(len(text))
    for index, char in enumerate(text):
        if char in OPENING:
            depth += 1
        elif char in CLOSING:
            depth = max(0, depth - 1)
        values[index] = depth
    return values


def position_in_line(text: str) -> np.ndarray:
    """Characters since the last newline, after each character (0 after a newline)."""
    column, values = 0, np.zeros(len(text))
    for index, char in enumerate(text):
        column = 0 if char == "\n" else column + 1
        values[index] = column
    return values


def find_units(
    activations: list[dict[str, np.ndarray]], text: str, top: int = TOP
) -> dict[str, list[Unit]]:
    """The units whose values follow each property of `text` most closely.

    Args:
        activations: charlm.inspect.activations' result for `text`: per layer, arrays
            shaped (len(text), units).
        text: the text they were read from.
        top: units kept per property.

    Returns:
        Property name (as text_properties) -> up to `top` Units, strongest first by
        absolute correlation (a unit that falls inside quotes tracks them as well as one
        that rises); empty for a property the text never varies.
    """
    found = {}
    for name, values in text_properties(text).items():
        ranked = [
            Unit(layer, quantity, int(unit), float(r))
            for layer, quantities in enumerate(activations)
            for quantity, array in quantities.items()
            for unit, r in strongest(correlations(array, values), top)
        ]
        ranked.sort(key=lambda unit: -abs(unit.correlation))
        found[name] = ranked[:top]
    return found


def correlations(array: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Pearson's r of each column of `array` (time, units) with `values` (time,); 0 for
    a constant column, and all 0 for constant values."""
    values = np.asarray(values, np.float64)
    centred_values = values - values.mean() if len(values) else values
    spread = np.sqrt((centred_values**2).sum())
    if not len(values) or spread == 0:
        return np.zeros(array.shape[1])
    centred = array - array.mean(axis=0, dtype=np.float64)
    norms = np.sqrt((centred**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = centred.T @ centred_values / (norms * spread)
    return np.nan_to_num(r)


def strongest(r: np.ndarray, top: int) -> list[tuple[int, float]]:
    """The `top` (index, r) of `r` with the largest |r| that are not 0."""
    order = np.argsort(-np.abs(r), kind="stable")[:top]
    return [(index, r[index]) for index in order if r[index] != 0]
