import pytest

from charlm.config import load_config
from charlm.config.docs import config_keys_markdown
from charlm.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_and_overrides():
    config = load_config(None, ["model.cell=gru", "train.batch_size=32", "data.corpus=a.txt"])
    assert (config.model.cell, config.train.batch_size, config.data.corpus) == ("gru", 32, "a.txt")
    assert config.model.layers == 2


def test_yaml_file_is_read(tmp_path):
    config = load_config(write(tmp_path, "model:\n  cell: simple_rnn\n  units: 7\n"))
    assert (config.model.cell, config.model.units) == ("simple_rnn", 7)


def test_override_beats_file(tmp_path):
    config = load_config(write(tmp_path, "model:\n  cell: lstm\n"), ["model.cell=gru"])
    assert config.model.cell == "gru"


@pytest.mark.parametrize(
    "text, message",
    [
        ("model:\n  unitz: 3\n", "did you mean model.units"),
        ("modle:\n  units: 3\n", "did you mean model"),
        ("model:\n  units: many\n", "model.units must be a whole number; got 'many'"),
        ("model:\n  units: -3\n", "model.units must be between 1 and 65536; got -3"),
        ("model:\n  units: 0\n", "model.units must be between 1 and 65536; got 0"),
        ("model:\n  cell: lstn\n", "did you mean lstm"),
        ("model:\n  dropout: 1.5\n", "model.dropout must be between 0.0 and 0.95"),
        ("train:\n  learning_rate: true\n", "train.learning_rate must be a number"),
        ("train:\n  steps: 10\n  epochs: 2\n", "keep one of them"),
        ("model: [1, 2]\n", "must be a mapping"),
        ("- just\n- a list\n", "must be a mapping of sections"),
        ("model:\n  cell: [lstm\n", "not valid YAML at line"),
        ("data:\n  corpus: 5\n", "data.corpus must be a path"),
        ("train:\n  learning_rate: .inf\n", "train.learning_rate must be a finite number"),
        (f"sample:\n  temperature: 1{'0' * 400}\n", "sample.temperature must be a finite number"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.cels=gru", "did you mean model.cell"),
        ("nosection.x=1", "unknown config section"),
        ("model.cell", "section.key=value"),
        ("train.batch_size=-1", "train.batch_size must be between 1 and"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_the_config_reference_documents_every_key_as_declared():
    from pathlib import Path

    reference = (Path(__file__).parent.parent / "docs" / "config.md").read_text()
    assert config_keys_markdown() in reference, "run `python -m charlm.config.docs` to update it"


def test_run_dir_defaults_to_the_config_name(tmp_path):
    path = tmp_path / "my-run.yaml"
    path.write_text("model:\n  cell: gru\n")
    assert load_config(path).train.run_dir == "runs/my-run"
    path.write_text("train:\n  run_dir: elsewhere\n")
    assert load_config(path).train.run_dir == "elsewhere"


def test_on_and_off_are_not_booleans_here(tmp_path):
    assert load_config(None, ["train.jit_compile=off"]).train.jit_compile == "off"
    assert load_config(write(tmp_path, "train:\n  jit_compile: on\n")).train.jit_compile == "on"


@pytest.mark.parametrize(
    "settings, rows",
    [
        (["train.batch_size=64", "train.seq_length=100"], 128),
        (["train.batch_size=64", "train.seq_length=100", "train.eval_seq_length=256"], 64),
        (["train.batch_size=8", "train.seq_length=64", "train.eval_seq_length=16"], 64),
    ],
)
def test_validation_batches_are_whole_training_batches_holding_twice_their_characters(
    settings, rows
):
    assert load_config(None, settings).train.eval_batch_size == rows
