"""Fine-tuning from a trained run (`charlm train --init-from RUN`, train.init_from),
through the real CLI: the base is the session's tiny `trained_run`, read only."""

import json
import shutil

import keras
import numpy as np
import pytest
import yaml

from charlm.data.vocabulary import Vocabulary
from tests.helpers import TINY_SETTINGS, generated_text, invoke, one_clean_error, sets

NEW_CHARS = ["α", "ж"]  # not in the base's corpus


@pytest.fixture
def new_corpus(tmp_path):
    """Text in the base's style whose commonest letters are characters it never saw."""
    path = tmp_path / "new.txt"
    text = generated_text(20_000, seed=1).replace("a", "α").replace("o", "ж")
    path.write_text(text, encoding="utf-8")
    return path


def fine_tune(base, corpus, run, *settings):
    return invoke(
        "train",
        "--init-from",
        base,
        *sets(*TINY_SETTINGS, f"data.corpus={corpus}", f"train.run_dir={run}", *settings),
    )


def chars(run):
    return json.loads((run / "vocab.json").read_text(encoding="utf-8"))["chars"]


def layer_weights(model_file):
    model = keras.saving.load_model(model_file, compile=False)
    return {name: model.get_layer(name).get_weights() for name in ("embedding", "logits")}


def test_extended_vocabulary_keeps_every_id_and_moves_unknown_last():
    base = Vocabulary(["b", "a", "\n"])
    vocab = base.extended("xa\nb")
    assert vocab.chars == ["b", "a", "\n", "x"] and vocab.unknown_id == 4
    assert vocab.encode("ab\n").tolist() == base.encode("ab\n").tolist()
    assert vocab.encode("x?").tolist() == [3, 4] and vocab.decode([3, 4]) == "x\ufffd"
    assert vocab.known_part("xa?") == ("xa", ["?"])
    assert base.extended("ab").chars == base.chars


def test_fine_tuning_learns_the_new_characters_and_records_its_base(
    tmp_path, trained_run, new_corpus
):
    run = tmp_path / "tuned"
    result = fine_tune(trained_run, new_corpus, run, "train.steps=40", "train.eval_interval=20")
    assert result.exit_code == 0, result.output
    assert "starting from" in result.stderr and "2 new characters" in result.stderr
    base_chars = chars(trained_run)
    assert chars(run) == base_chars + NEW_CHARS  # the base's ids kept, new ones appended
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["train"]["init_from"] == str(trained_run)
    info = invoke("info", "-c", run)
    assert info.exit_code == 0 and f"fine-tuned from: {trained_run}" in info.stdout

    sample = invoke("sample", "-c", run, "--length", 300, "--seed", 1)
    assert sample.exit_code == 0, sample.output
    assert all(c in sample.stdout for c in NEW_CHARS), sample.stdout


@pytest.mark.parametrize("start", ["run directory", "checkpoint directory"])
def test_the_bases_characters_keep_their_rows_bit_for_bit_at_step_0(
    tmp_path, trained_run, new_corpus, start
):
    """With a learning rate of 0 the fine-tuned run's saved model is its step-0 model."""
    source = trained_run
    if start == "checkpoint directory":  # the older one: not the run's best model
        source = sorted((trained_run / "checkpoints").iterdir())[0]
    run = tmp_path / "tuned"
    result = fine_tune(
        source,
        new_corpus,
        run,
        "train.learning_rate=0",
        "train.steps=2",
        "train.eval_interval=2",
    )
    assert result.exit_code == 0, result.output
    base, tuned = layer_weights(source / "model.keras"), layer_weights(run / "model.keras")
    known = len(chars(trained_run))
    old_ids = list(range(known)) + [known + len(NEW_CHARS)]  # characters in place, unknown last
    new_ids = list(range(known, known + len(NEW_CHARS)))

    np.testing.assert_array_equal(tuned["embedding"][0][old_ids], base["embedding"][0])
    assert not np.any(tuned["embedding"][0][new_ids] == 0)  # initialised, not zeroed
    np.testing.assert_array_equal(tuned["logits"][0][:, old_ids], base["logits"][0])
    np.testing.assert_array_equal(tuned["logits"][1][old_ids], base["logits"][1])
    # A new character starts as unlikely as the base's rarest character.
    assert np.all(tuned["logits"][1][new_ids] == base["logits"][1][:known].min())


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("missing", "does not exist"),
        ("empty directory", "holds no model.keras"),
        ("no vocabulary", "has no vocab.json"),
        ("corrupt model", "not a loadable charlm model"),
        ("other architecture", "model.units is 32 here but 16 in train.init_from"),
        ("with --resume", "give only one of them"),
    ],
)
def test_refusals_are_one_line_and_write_nothing(tmp_path, trained_run, new_corpus, case, fragment):
    base, more = tmp_path / "base", []
    if case != "missing":
        base.mkdir()
    if case in ("no vocabulary", "corrupt model"):
        shutil.copy(trained_run / "config.yaml", base)
        shutil.copy(trained_run / "model.keras", base)
    if case == "corrupt model":
        shutil.copy(trained_run / "vocab.json", base)
        (base / "model.keras").write_bytes(b"not a zip file")
    if case == "other architecture":
        base, more = trained_run, ["model.units=32"]
    run = tmp_path / "tuned"
    if case == "with --resume":
        base, more = trained_run, []
        result = invoke("train", "--init-from", base, "--resume", run)
    else:
        result = fine_tune(base, new_corpus, run, *more)
    one_clean_error(result, fragment)
    assert not run.exists()


def test_resuming_a_fine_tuned_run_matches_an_uninterrupted_one(tmp_path, trained_run, new_corpus):
    settings = ("train.eval_interval=6", "model.dropout=0.2")
    whole = fine_tune(trained_run, new_corpus, tmp_path / "whole", "train.steps=12", *settings)
    assert whole.exit_code == 0, whole.output
    split = tmp_path / "split"
    first = fine_tune(trained_run, new_corpus, split, "train.steps=6", *settings)
    assert first.exit_code == 0 and "starting from" in first.stderr, first.output
    resumed = invoke("train", "--resume", split, *sets("train.steps=12"))
    assert resumed.exit_code == 0, resumed.output
    assert "resuming" in resumed.stderr and "starting from" not in resumed.stderr

    def losses(run):
        lines = (run / "history.jsonl").read_text().splitlines()
        return {h["step"]: h["val_loss"] for h in map(json.loads, lines)}

    assert losses(split)[12] == pytest.approx(losses(tmp_path / "whole")[12], rel=1e-5, abs=1e-6)
