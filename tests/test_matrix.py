"""Every option works with every other: a pairwise covering array over the options that
change what training, checkpoints, sampling and evaluation do.

Each case trains a tiny model for a few steps through the real training entry point, is
interrupted (SIGINT, as Ctrl-C) at its first checkpoint and resumed, and must reach the
losses of an uninterrupted run; then `sample`, `eval` and `info` run on it through the
CLI. A combination charlm does not support must be refused before any work, in one line
that says why."""

from __future__ import annotations

import itertools

import pytest

from charlm.errors import CharlmError
from charlm.training.loop import train
from tests.helpers import InterruptAt, invoke, tiny_config

FACTORS = {
    "model.cell": ["simple_rnn", "lstm", "gru"],
    "train.optimizer": ["adam", "adamw", "rmsprop", "sgd"],
    "train.schedule": ["constant", "cosine", "exponential"],
    "train.windows": ["random", "contiguous"],
    "model.dropout": [0.0, 0.25],
    "model.implementation": ["fused", "stock"],
    "train.precision": ["float32", "mixed_bfloat16"],
    "train.distribute": ["none", "mirrored"],
    "model.layers": [1, 2],
}
# Combinations refused by design, each with the words of its refusal.
REFUSED = [
    ({"train.distribute": "mirrored", "train.windows": "contiguous"}, "one device only"),
]
STEPS, INTERRUPT_AT = 4, 2


def is_refused(case: dict) -> bool:
    return any(all(case.get(k) == v for k, v in combo.items()) for combo, _ in REFUSED)


def covering_cases(factors: dict, allowed) -> list[dict]:
    """A small set of cases in which every pair of values of two factors appears
    together at least once (greedy: each case starts from a pair not yet covered and
    takes, factor by factor, the value that covers most new pairs).

    >>> len(covering_cases({"a": [0, 1], "b": [0, 1], "c": [0, 1]}, lambda case: True))
    4
    """
    names = list(factors)
    uncovered = {
        frozenset([(a, x), (b, y)])
        for a, b in itertools.combinations(names, 2)
        for x in factors[a]
        for y in factors[b]
        if allowed({a: x, b: y})
    }
    cases = []
    while uncovered:
        case = dict(min(uncovered, key=lambda pair: sorted(map(repr, pair))))
        for name in names:
            if name not in case:
                gains = [
                    new_pairs(case, name, value, uncovered, allowed) for value in factors[name]
                ]
                case[name] = factors[name][gains.index(max(gains))]
        uncovered -= {frozenset(pair) for pair in itertools.combinations(case.items(), 2)}
        cases.append({name: case[name] for name in names})
    return cases


def new_pairs(case: dict, name: str, value, uncovered: set, allowed) -> int:
    """How many uncovered pairs `case` would cover with `name` set to `value` (-1: the
    combination is not allowed)."""
    if not allowed({**case, name: value}):
        return -1
    return sum(frozenset([(other, v), (name, value)]) in uncovered for other, v in case.items())


CASES = covering_cases(FACTORS, lambda case: not is_refused(case))


def case_id(case: dict) -> str:
    return "-".join(str(v) for v in case.values())


def settings_of(case: dict) -> list[str]:
    return [f"{key}={value}" for key, value in case.items()] + [
        f"train.steps={STEPS}",
        f"train.eval_interval={INTERRUPT_AT}",
        "train.seq_length=8",
        "train.decay_steps=2",
    ]


def test_the_cases_cover_every_allowed_pair():
    for a, b in itertools.combinations(FACTORS, 2):
        for x, y in itertools.product(FACTORS[a], FACTORS[b]):
            if not is_refused({a: x, b: y}):
                assert any(case[a] == x and case[b] == y for case in CASES), (a, x, b, y)
    assert len(CASES) <= 20


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_combination_trains_resumes_samples_and_evaluates(case, tmp_path, corpus_file, request):
    settings = settings_of(case)
    whole = train(tiny_config(corpus_file, tmp_path / "whole", *settings))
    first = train(
        tiny_config(corpus_file, tmp_path / "run", *settings), reporter=InterruptAt(INTERRUPT_AT)
    )
    assert first.stopped_by == "interrupted" and first.state.step == INTERRUPT_AT
    resumed = train(tiny_config(corpus_file, tmp_path / "run", *settings), resume=tmp_path / "run")
    assert [h["step"] for h in resumed.history] == [h["step"] for h in whole.history]
    tolerance = 1e-3 if case["train.precision"] == "mixed_bfloat16" else 1e-5
    for got, expected in zip(resumed.history, whole.history):
        assert got["val_loss"] == pytest.approx(expected["val_loss"], rel=tolerance)
        assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=tolerance)
    run = tmp_path / "run"
    for command in (
        ["sample", "-c", run, "--length", 40, "--seed", 1, "--num-samples", 2],
        ["eval", "-c", run, corpus_file],
        ["info", "-c", run],
    ):
        result = invoke(*command)
        assert result.exit_code == 0, (command, result.output)
        assert "Traceback" not in result.output
    count_case(request, "trained")


@pytest.mark.parametrize("combination, reason", REFUSED, ids=lambda v: str(v))
def test_unsupported_combination_is_refused_before_any_work(
    combination, reason, tmp_path, corpus_file, request
):
    case = {**CASES[0], **combination}
    with pytest.raises(CharlmError, match=reason):
        train(tiny_config(corpus_file, tmp_path / "run", *settings_of(case)))
    assert not list((tmp_path / "run").glob("checkpoints/*"))
    result = invoke(
        "train",
        *[part for s in settings_of(case) for part in ("--set", s)],
        "--set",
        f"data.corpus={corpus_file}",
        "--set",
        f"train.run_dir={tmp_path / 'cli-run'}",
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert reason in result.stderr
    count_case(request, "refused")


def count_case(request, outcome: str) -> None:
    """For the summary line conftest.py prints."""
    request.node.user_properties.append(("matrix", outcome))
