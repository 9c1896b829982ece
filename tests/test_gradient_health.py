"""Gradient health and the training timeline in history.jsonl: the norms are the
gradients' before clipping, the timeline is a sample from a fixed prime and seed, a
resumed run reports both as an uninterrupted one does, and `charlm info` shows the last
timeline sample."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from charlm.cli import app
from charlm.config import load_config
from charlm.model.build import build_model
from charlm.run.rundir import RunDir
from charlm.training.gradient_health import GradientHealth
from charlm.training.loop import train
from charlm.training.optimizer import build_optimizer
from tests.helpers import InterruptAt, tiny_config

GRADIENT_FIELDS = ("grad_norm_mean", "grad_norm_max", "grad_clipped_fraction")


def one_step_model(clip_norm: float):
    config = load_config(
        None,
        [
            "model.cell=lstm",
            "model.layers=2",
            "model.units=8",
            "model.embedding_dim=4",
            f"train.clip_norm={clip_norm}",
        ],
    )
    model = build_model(config.model, vocab_size=11, seed=3)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=build_optimizer(config.train, 10), loss=loss)
    return model, loss


@pytest.mark.parametrize("clip_norm", [1e-3, 100.0])
def test_norms_are_the_gradients_before_clipping(clip_norm):
    model, loss = one_step_model(clip_norm)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 11, (4, 9)).astype(np.int32)
    y = rng.integers(0, 11, (4, 9)).astype(np.int32)
    with tf.GradientTape() as tape:
        expected_loss = loss(y, model(x, training=True))
    grads = tape.gradient(expected_loss, model.trainable_weights)
    by_path = {v.path: tf.convert_to_tensor(g) for v, g in zip(model.trainable_weights, grads)}
    expected = float(tf.linalg.global_norm(list(by_path.values())))

    health = GradientHealth(model)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    fields = health.report(reset=True)

    assert fields["grad_norm_mean"] == pytest.approx(expected, rel=1e-4)
    assert fields["grad_norm_max"] == pytest.approx(expected, rel=1e-4)
    assert fields["grad_clipped_fraction"] == (1.0 if clip_norm < expected else 0.0)
    layer = model.get_layer("lstm_1").cell
    assert fields["grad_norm/lstm_1/recurrent_kernel"] == pytest.approx(
        float(tf.norm(by_path[layer.recurrent_kernel.path])), rel=1e-4
    )
    assert fields["grad_norm/lstm_0/kernel"] == pytest.approx(
        float(tf.norm(by_path[model.get_layer("lstm_0").cell.kernel.path])), rel=1e-4
    )
    assert health.report(reset=True) == {}  # reset: no steps summed since


def test_history_carries_gradient_health_and_the_timeline(trained_run):
    history = RunDir(trained_run).history()
    for record in history:
        assert all(np.isfinite(record[name]) for name in GRADIENT_FIELDS)
        assert 0 < record["grad_norm_mean"] <= record["grad_norm_max"]
        assert record["grad_norm/gru_0/kernel"] > 0
        assert record["grad_norm/gru_0/recurrent_kernel"] > 0
        assert len(record["timeline"]) == 200  # train.timeline_length, no prime
        assert len(record["val_digest"]) == 16
    assert history[0]["timeline"] != history[-1]["timeline"]  # same seed, other weights


def test_info_shows_the_last_timeline_sample(trained_run):
    result = CliRunner().invoke(app, ["info", "--checkpoint", str(trained_run)])
    assert result.exit_code == 0, result.output
    last = RunDir(trained_run).history()[-1]
    assert f"timeline at step {last['step']}:" in result.output
    assert last["timeline"].splitlines()[0] in result.output


@pytest.mark.parametrize("cell", ["gru", "lstm", "simple_rnn"])
def test_the_timeline_reads_the_weights_again_at_each_sample(cell):
    """The timeline's generator is compiled once; each sample is what a generator built
    for the weights of the moment makes (as `charlm sample` on that checkpoint would)."""
    from charlm.data.vocabulary import Vocabulary
    from charlm.training.timeline import Timeline, sample_text

    config = load_config(
        None,
        [f"model.cell={cell}", "model.layers=2", "model.units=16", "model.embedding_dim=8"]
        + ["train.timeline_length=60"],
    )
    vocab = Vocabulary(list("abc de\n"))
    model = build_model(config.model, vocab.size)
    timeline = Timeline(config)
    samples = []
    for seed in (1, 2):  # weights far apart, as training moves them
        rng = np.random.default_rng(seed)
        model.set_weights([rng.normal(0, 1, w.shape) for w in model.get_weights()])
        samples.append(timeline.sample(model, vocab))
        fresh = sample_text(model, vocab, config.sample, config.sample.prime, 60, 0)
        assert samples[-1] == fresh
    assert samples[0] != samples[1]
    assert timeline.generator.sampler.read_chunk.experimental_get_tracing_count() == 1


def test_timeline_length_zero_leaves_the_timeline_out(tmp_path, corpus_file):
    settings = ("train.timeline_length=0", "train.steps=6")
    train(tiny_config(corpus_file, tmp_path / "run", *settings))
    (record,) = RunDir(tmp_path / "run").history()
    assert "timeline" not in record and "grad_norm_mean" in record


def test_a_resumed_run_reports_gradients_and_timeline_as_an_uninterrupted_one(
    tmp_path, corpus_file
):
    settings = ("model.cell=lstm", "train.steps=20", "train.eval_interval=10")
    settings += ("train.timeline_length=50",)
    whole = train(tiny_config(corpus_file, tmp_path / "whole", *settings))
    first = train(tiny_config(corpus_file, tmp_path / "split", *settings), reporter=InterruptAt(7))
    assert first.state.step == 7
    state = json.loads(
        (tmp_path / "split" / "checkpoints" / "step-00000007" / "state.json").read_text()
    )
    assert state["gradient_health"][2] == 7  # steps summed so far, kept for the resumed run
    resumed = train(
        tiny_config(corpus_file, tmp_path / "split", *settings), resume=tmp_path / "split"
    )
    expected = {h["step"]: h for h in whole.history}
    got = {h["step"]: h for h in resumed.history}
    assert sorted(got) == [7, 10, 20]
    for step in (10, 20):
        assert got[step]["timeline"] == expected[step]["timeline"]
        for name, value in expected[step].items():
            if name.startswith("grad_"):
                assert got[step][name] == pytest.approx(value, rel=1e-5), name
