"""The Python API (charlm.train, charlm.load, LanguageModel) against the command line and
against references that share no code with charlm."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import charlm
from charlm.errors import CharlmError, ConfigError
from charlm.sampling_rules import UnknownCharactersWarning
from tests.helpers import TINY_SETTINGS, generated_text, invoke, one_clean_error


def tiny_overrides(corpus, run_dir, **more) -> dict:
    """TINY_SETTINGS as the API's overrides: dotted keys to Python values."""
    import yaml

    overrides = {}
    for setting in TINY_SETTINGS:
        key, _, value = setting.partition("=")
        overrides[key] = yaml.safe_load(value)
    return {**overrides, "data.corpus": str(corpus), "train.run_dir": str(run_dir), **more}


@pytest.fixture(scope="module")
def model(trained_run):
    return charlm.load(trained_run)


@pytest.mark.slow
@pytest.mark.parametrize("samples", [1, 3])
def test_generate_is_the_text_charlm_sample_prints(model, trained_run, samples):
    options = dict(length=120, temperature=0.9, top_k=5, top_p=0.95, seed=11, stop=None)
    text = model.generate("the cat", n=samples, **options)
    result = invoke(
        "sample", "-c", trained_run, "--prime", "the cat", "--length", 120,
        "--temperature", 0.9, "--top-k", 5, "--top-p", 0.95, "--seed", 11,
        "--num-samples", samples,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    texts = [text] if samples == 1 else text
    assert isinstance(text, str if samples == 1 else list)
    printed = "".join(
        (f"\n\n--- sample {k + 1} ---\n" if k else "") + t for k, t in enumerate(texts)
    )
    assert result.stdout == printed + "\n"


@pytest.mark.slow
def test_stop_strings_end_each_sample_as_the_cli_ends_it(model, trained_run):
    texts = model.generate("the", length=300, seed=5, n=3, stop=["a", "\n"])
    result = invoke(
        "sample", "-c", trained_run, "--prime", "the", "--length", 300, "--seed", 5,
        "--num-samples", 3, "--stop", "a", "--stop", "\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.split("\n\n--- sample ")[0] == texts[0]
    for text in texts:
        generated = text[len("the") :]
        assert "a" not in generated and "\n" not in generated and len(generated) < 300
    unstopped = model.generate("the", length=300, seed=5, n=3)
    assert all(u.startswith(t) for u, t in zip(unstopped, texts))


def test_a_stop_string_longer_than_the_sample_changes_nothing(model):
    assert model.generate(length=20, seed=2, stop="x" * 50) == model.generate(length=20, seed=2)


@pytest.mark.slow
def test_prime_file_gives_the_text_of_the_same_prime(trained_run, tmp_path):
    prime = tmp_path / "prime.txt"
    prime.write_text("the dog ran\n", encoding="utf-8")
    from_file = invoke(
        "sample", "-c", trained_run, "--prime-file", prime, "--length", 60, "--seed", 4
    )
    inline = invoke(
        "sample", "-c", trained_run, "--prime", "the dog ran\n", "--length", 60, "--seed", 4
    )
    assert from_file.exit_code == 0, from_file.output
    assert from_file.stdout == inline.stdout


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: p, "--prime-file"),  # missing
        (lambda p: (p.write_bytes(bytes(range(256)) * 8), p)[1], "binary"),
        (lambda p: (p.write_bytes("é".encode("cp1252") * 50), p)[1], "not UTF-8"),
    ],
)
def test_a_bad_prime_file_is_one_line(trained_run, tmp_path, make, fragment):
    path = make(tmp_path / "prime.txt")
    one_clean_error(invoke("sample", "-c", trained_run, "--prime-file", path), fragment)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--stop", ""], "--stop must be a non-empty string"),
        (["--top-k", "2147483648"], "--top-k must be at most the model's vocabulary size"),
        (["--top-p", "2"], "--top-p must be above 0 and at most 1"),
    ],
)
def test_bad_sampling_flags_are_one_line_naming_the_flag(trained_run, args, fragment):
    one_clean_error(invoke("sample", "-c", trained_run, *args), fragment)


def test_stream_joins_to_generate_and_keeps_memory_flat(model):
    pieces = list(model.stream("the", length=700, seed=9))
    assert len(pieces) > 3 and "".join(pieces) == model.generate("the", length=700, seed=9)
    per_sample = list(model.stream("the", length=300, seed=9, n=2))
    joined = ["".join(p[k] for p in per_sample) for k in range(2)]
    assert joined == model.generate("the", length=300, seed=9, n=2)


def test_unknown_prime_characters_are_left_out_with_a_visible_warning(model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = model.generate("the 🐍cat", length=30, seed=1)
    assert [w.category for w in caught] == [UnknownCharactersWarning]
    assert "🐍" in str(caught[0].message)
    assert text == model.generate("the cat", length=30, seed=1)


def reference_logprobs(run, text: str) -> np.ndarray:
    """Log-probabilities from the plain .keras file and vocab.json, with no charlm code:
    the model reads a newline, then the text; each next character's log-softmax."""
    import json

    import keras
    import tensorflow as tf

    chars = json.loads((run / "vocab.json").read_text(encoding="utf-8"))["chars"]
    plain = keras.saving.load_model(run / "model.keras", compile=False)
    ids = [chars.index(c) for c in text]
    # predict, not a call: one compiled loop over the text instead of eager steps.
    logits = plain.predict(np.array([[chars.index("\n")] + ids[:-1]]), verbose=0)[0]
    return tf.nn.log_softmax(logits).numpy()[np.arange(len(ids)), ids]


@pytest.mark.slow
def test_score_equals_a_log_softmax_of_the_plain_keras_model(model, trained_run):
    text = generated_text(5000, seed=7)  # longer than a scoring piece: the state is carried
    scores = model.score(text, top=4)
    np.testing.assert_allclose(scores.logprobs, reference_logprobs(trained_run, text), atol=2e-5)
    assert scores.top_ids.shape == (5000, 4) and len(scores.top) == 5000
    best_char, best_logprob = scores.top[10][0]
    assert best_logprob == pytest.approx(scores.top_logprobs[10].max())
    assert best_logprob >= scores.logprobs[10] - 1e-6
    assert scores.bits_per_char == pytest.approx(-scores.logprobs.mean() / np.log(2), rel=1e-6)


def test_evaluate_is_the_number_charlm_eval_prints(model, trained_run, tmp_path):
    text = tmp_path / "held-out.txt"
    text.write_text(generated_text(3000, seed=8), encoding="utf-8")
    result = invoke("eval", "-c", trained_run, text)
    assert result.exit_code == 0, result.output
    assert f"{model.evaluate(text):.4f} nats/char" in result.stdout


def test_info_vocabulary_and_keras_model(model, trained_run):
    info = model.info
    assert info["run_dir"] == str(trained_run) and info["parameters"] > 0
    assert info["vocabulary_size"] == model.vocabulary.size
    assert model.keras_model.output_shape[-1] == model.vocabulary.size
    result = invoke("info", "-c", trained_run)
    assert f"{info['best_val_loss']:.4f} nats/char at step {info['best_step']}" in result.stdout


@pytest.mark.parametrize(
    "call, setting",
    [
        (lambda m: m.generate(top_p=2), "sample.top_p"),
        (lambda m: m.generate(length=-1), "sample.length"),
        (lambda m: m.generate(top_k=10**9), "sample.top_k"),
        (lambda m: m.generate(seed=-3), "sample.seed"),
        (lambda m: m.generate(stop=""), "sample.stop"),
    ],
)
def test_bad_values_raise_an_error_naming_the_setting(model, call, setting):
    with pytest.raises(ConfigError) as raised:
        call(model)
    assert raised.value.setting == setting and setting in str(raised.value)
    assert "--" not in str(raised.value)  # no command-line flag in a library error


def test_a_typo_in_an_override_names_the_closest_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="did you mean train.steps"):
        charlm.train(overrides={"train.stpes": 3}, progress=False)
    with pytest.raises(ConfigError, match="model.cell must be one of"):
        charlm.train({"model": {"cell": "transformer"}}, progress=False)
    assert not (tmp_path / "runs").exists()


def test_a_config_is_checked_however_it_is_built():
    from charlm.config import Config, ModelConfig, TrainConfig

    with pytest.raises(ConfigError, match="model.units must be between"):
        ModelConfig(units=0)
    with pytest.raises(ConfigError, match="train.learning_rate must be a number"):
        Config(train=TrainConfig(learning_rate="fast"))
    with pytest.raises(ConfigError, match="train.steps and train.epochs are both set"):
        Config(train=TrainConfig(steps=3, epochs=1.0))


def test_a_missing_run_raises_not_exits(tmp_path):
    with pytest.raises(CharlmError):
        charlm.load(tmp_path / "nothing-here")


@pytest.mark.slow
def test_train_then_load_from_python(tmp_path, corpus_file):
    result = charlm.train(
        overrides=tiny_overrides(corpus_file, tmp_path / "run", **{"train.steps": 6}),
        progress=False,
    )
    assert result.stopped_by == "steps" and result.step == 6
    assert result.best_val_loss == min(h["val_loss"] for h in result.history)
    assert len(charlm.load(result.run_dir).generate(length=10, seed=1)) == 10


INTERRUPTED_TRAINING = """
import os, signal, threading, time, json, sys
import keras
import charlm
from charlm.training.callbacks import StepMonitor

overrides = json.loads(sys.argv[1])
handler = signal.getsignal(signal.SIGINT)
policy = keras.mixed_precision.global_policy().name
first_step = StepMonitor.on_train_batch_end

def interrupt_once(self, batch, logs=None):
    first_step(self, batch, logs)
    if self.step == 3:
        os.kill(os.getpid(), signal.SIGINT)  # what a notebook's stop button sends

StepMonitor.on_train_batch_end = interrupt_once
try:
    charlm.train(overrides=overrides, progress=False)
except KeyboardInterrupt as stop:
    print("raised:", stop)
assert signal.getsignal(signal.SIGINT) is handler, "handlers not restored"
assert keras.mixed_precision.global_policy().name == policy, "policy not restored"
model = charlm.load(overrides["train.run_dir"])
print("alive, step", model.info["steps"], "text", len(model.generate(length=5, seed=1)))
"""


@pytest.mark.slow
def test_an_interrupt_saves_raises_and_leaves_the_interpreter_alive(tmp_path, corpus_file):
    import json

    overrides = tiny_overrides(
        corpus_file, tmp_path / "run", **{"train.steps": 40, "train.eval_interval": 20}
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(INTERRUPTED_TRAINING), json.dumps(overrides)],
        capture_output=True,
        text=True,
        timeout=600,
        # The test runner may ignore SIGINT; the child must see it as a user's process does.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Sent at the end of step 3, the interrupt is seen at the end of step 4, and saved there.
    assert "raised: training interrupted at step 4" in done.stdout
    assert "alive, step 4 text 5" in done.stdout


@pytest.mark.slow
def test_import_charlm_does_not_import_tensorflow():
    code = "import sys, charlm; charlm.load; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
