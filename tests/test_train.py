import json
import os
import shutil

import numpy as np
import pytest

from charlm.config import load_config
from charlm.errors import ConfigError, RunError, TrainingError
from charlm.model import fused
from charlm.run.rundir import RunDir
from charlm.training.loop import train
from charlm.training.optimizer import time_annealed_rate
from tests.helpers import InterruptAt, tiny_config


def test_train_writes_a_self_describing_run(tmp_path, corpus_file):
    result = train(tiny_config(corpus_file, tmp_path / "run"))
    run = RunDir(tmp_path / "run")
    assert result.stopped_by == "steps" and result.state.step == 12
    assert run.best_model_path.exists() and run.vocab_path.exists() and run.config_path.exists()
    assert [p.name for p in run.checkpoints()] == ["step-00000006", "step-00000012"]
    best_checkpoint = run.checkpoints_path / f"step-{result.state.best_step:08d}"
    assert run.best_model_path.read_bytes() == (best_checkpoint / "model.keras").read_bytes()
    history = run.history()
    assert [h["step"] for h in history] == [6, 12]
    assert all(np.isfinite(h["val_loss"]) for h in history)
    assert any(run.tensorboard_path.iterdir())
    vocab = json.loads(run.vocab_path.read_text())
    assert "λ" in vocab["chars"] and vocab["unknown_id"] == len(vocab["chars"])


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tmp_path, corpus_file, dropout):
    settings = (
        "model.cell=lstm",
        f"model.dropout={dropout}",
        "train.steps=20",
        "train.eval_interval=10",
        "train.schedule=cosine",
        "train.warmup_steps=4",
    )
    whole = train(tiny_config(corpus_file, tmp_path / "whole", *settings))
    first = train(tiny_config(corpus_file, tmp_path / "split", *settings), reporter=InterruptAt(7))
    assert first.stopped_by == "interrupted" and first.state.step == 7
    resumed = train(
        tiny_config(corpus_file, tmp_path / "split", *settings), resume=tmp_path / "split"
    )
    assert resumed.state.step == 20
    expected = {h["step"]: h["val_loss"] for h in whole.history}
    got = {h["step"]: h["val_loss"] for h in resumed.history}
    for step in (10, 20):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6)


def test_resume_may_switch_between_fused_and_stock_layers(tmp_path, corpus_file, monkeypatch):
    """Same weights and files: a run trained with the fused loop goes on with Keras's own
    loop (and would on a GPU's cuDNN) and ends where an all-fused run ends."""
    settings = ("model.cell=lstm", "train.steps=12", "train.eval_interval=6")
    whole = train(tiny_config(corpus_file, tmp_path / "whole", *settings))
    train(tiny_config(corpus_file, tmp_path / "split", *settings), reporter=InterruptAt(6))
    monkeypatch.setattr(fused, "run_fused", lambda *a, **k: pytest.fail("fused loop ran"))
    resumed = train(
        tiny_config(corpus_file, tmp_path / "split", *settings, "model.implementation=stock"),
        resume=tmp_path / "split",
    )
    assert resumed.history[-1]["val_loss"] == pytest.approx(whole.history[-1]["val_loss"], rel=1e-4)


def test_time_annealed_rate_warms_up_over_steps_and_ends_at_the_budget():
    config = load_config(
        None,
        [
            "train.schedule=cosine",
            "train.anneal_over=time_budget",
            "train.time_budget_s=100",
            "train.learning_rate=0.01",
            "train.warmup_steps=10",
            "train.min_lr_fraction=0.1",
        ],
    ).train
    assert time_annealed_rate(config, 4, 0.0) == pytest.approx(0.005)
    assert time_annealed_rate(config, 50, 0.0) == pytest.approx(0.01)
    assert time_annealed_rate(config, 50, 50.0) == pytest.approx(0.0055)
    assert time_annealed_rate(config, 50, 100.0) == pytest.approx(0.001)
    assert time_annealed_rate(config, 50, 250.0) == pytest.approx(0.001)


def test_time_annealed_run_stops_at_the_budget_with_the_rate_at_its_floor(tmp_path, corpus_file):
    result = train(
        tiny_config(
            corpus_file,
            tmp_path / "run",
            "train.steps=100000",
            "train.eval_interval=100000",
            "train.schedule=cosine",
            "train.anneal_over=time_budget",
            "train.time_budget_s=4",
            "train.min_lr_fraction=0.1",
        )
    )
    assert result.stopped_by == "time budget"
    assert result.history[-1]["learning_rate"] == pytest.approx(0.001, rel=0.1)


def test_time_annealing_needs_a_budget_and_the_cosine():
    with pytest.raises(ConfigError, match="anneal_over"):
        load_config(None, ["train.schedule=cosine", "train.anneal_over=time_budget"])
    with pytest.raises(ConfigError, match="anneal_over"):
        load_config(None, ["train.anneal_over=time_budget", "train.time_budget_s=5"])


def test_a_second_run_into_the_same_directory_is_refused(tmp_path, corpus_file):
    train(tiny_config(corpus_file, tmp_path / "run", "train.steps=6"))
    with pytest.raises(RunError, match="already holds a run"):
        train(tiny_config(corpus_file, tmp_path / "run"))


def test_resume_refuses_a_changed_model(tmp_path, corpus_file):
    train(tiny_config(corpus_file, tmp_path / "run", "train.steps=6"))
    with pytest.raises(ConfigError, match="model.units is 32 here but 16 in the run"):
        train(tiny_config(corpus_file, tmp_path / "run", "model.units=32"), resume=tmp_path / "run")


def test_resume_of_nothing_is_refused(tmp_path, corpus_file):
    with pytest.raises(RunError, match="no checkpoint there"):
        train(tiny_config(corpus_file, tmp_path / "empty"), resume=tmp_path / "empty")


def test_run_directory_in_use_is_refused(tmp_path, corpus_file):
    holder = RunDir(tmp_path / "run")
    holder.lock()
    try:
        with pytest.raises(RunError, match="in use by charlm train"):
            train(tiny_config(corpus_file, tmp_path / "run"))
    finally:
        holder.unlock()
    train(tiny_config(corpus_file, tmp_path / "run", "train.steps=6"))  # the lock is free again


def test_time_budget_stops_cleanly_and_saves(tmp_path, corpus_file):
    result = train(
        tiny_config(
            corpus_file, tmp_path / "run", "train.steps=100000", "train.time_budget_s=0.001"
        )
    )
    assert result.stopped_by == "time budget" and 1 <= result.state.step < 100000
    assert RunDir(tmp_path / "run").latest_checkpoint() is not None


def test_early_stopping(tmp_path, corpus_file):
    result = train(
        tiny_config(
            corpus_file,
            tmp_path / "run",
            "train.learning_rate=0.0",
            "train.steps=60",
            "train.eval_interval=2",
            "train.early_stopping_patience=2",
        )
    )
    assert result.stopped_by == "early stopping" and result.state.step == 6


def test_non_finite_loss_stops_and_keeps_the_good_checkpoint(tmp_path, corpus_file):
    """A loss that turns NaN stops training with an error naming the step; nothing is
    saved from then on, and the checkpoint before the bad state stays byte for byte,
    loadable, with finite weights."""
    import keras

    run = tmp_path / "run"
    train(tiny_config(corpus_file, run))  # checkpoints at steps 6 and 12
    good = run / "checkpoints" / "step-00000006"
    kept, best = files_of(good), (run / "model.keras").read_bytes()
    poison(run / "checkpoints" / "step-00000012" / "model.keras")
    with pytest.raises(TrainingError, match="non-finite .* at step 13;"):
        train(tiny_config(corpus_file, run, "train.steps=18"), resume=run)
    assert [p.name for p in RunDir(run).checkpoints()] == ["step-00000006", "step-00000012"]
    assert not list(run.glob("**/.tmp-*"))
    assert [h["step"] for h in RunDir(run).history()] == [6, 12]
    assert (run / "model.keras").read_bytes() == best
    assert files_of(good) == kept
    model = keras.saving.load_model(good / "model.keras")
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_partial_saves_from_a_killed_process_are_cleaned(tmp_path, corpus_file):
    run = tmp_path / "run"
    train(tiny_config(corpus_file, run, "train.steps=6"))
    (run / "checkpoints" / ".tmp-crashed").mkdir()
    (run / "checkpoints" / ".tmp-crashed" / "model.keras").write_bytes(b"half")
    train(tiny_config(corpus_file, run, "train.steps=12"), resume=run)
    assert not (run / "checkpoints" / ".tmp-crashed").exists()


def test_model_too_large_for_memory_is_refused(tmp_path, corpus_file):
    with pytest.raises(ConfigError, match="needs about .* GiB"):
        train(tiny_config(corpus_file, tmp_path / "run", "model.units=60000", "model.layers=8"))


def test_unwritable_run_directory_is_refused_before_training(tmp_path, corpus_file):
    (tmp_path / "a-file").write_text("not a directory")  # unwritable even for root
    with pytest.raises(RunError, match="cannot be created"):
        train(tiny_config(corpus_file, tmp_path / "a-file" / "run"))


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, corpus_file, monkeypatch):
    import errno

    import keras

    run = tmp_path / "run"
    train(tiny_config(corpus_file, run, "train.steps=6"))

    def full_disk(self, path, *args, **kwargs):
        open(path, "wb").write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", full_disk)
    with pytest.raises(RunError, match="disk is full; the previous checkpoint .*step-00000006"):
        train(tiny_config(corpus_file, run, "train.steps=12"), resume=run)
    monkeypatch.undo()
    assert [p.name for p in RunDir(run).checkpoints()] == ["step-00000006"]
    assert not list((run / "checkpoints").glob(".tmp-*"))
    keras.saving.load_model(run / "checkpoints" / "step-00000006" / "model.keras")


def test_contiguous_windows_continue_each_row(tmp_path):
    from charlm.data.pipeline import contiguous_steps, training_batch
    from charlm.data.split import Split
    from charlm.data.tokens import encode_corpus, scan_corpus

    path = tmp_path / "t.txt"
    path.write_text("".join(chr(97 + i % 26) for i in range(4 * 50)))
    vocab = scan_corpus([path]).vocabulary()
    split = Split(encode_corpus([path], vocab), 0, 200)
    assert contiguous_steps(split, 4, 10) == 4  # parts of 50: (50 - 1) // 10
    first, _ = training_batch(split, 4, 10, 0, 0, "contiguous")
    second, _ = training_batch(split, 4, 10, 0, 1, "contiguous")
    wrapped, _ = training_batch(split, 4, 10, 0, 4, "contiguous")
    for row in range(4):
        part = vocab.decode(split.tokens.read(row * 50, 50))
        assert vocab.decode(first[row]) + vocab.decode(second[row]) == part[:20]
    assert (wrapped == first).all()  # a new pass starts the rows again


def test_contiguous_training_carries_state_and_resumes_exactly(tmp_path, corpus_file):
    settings = (
        "train.windows=contiguous",
        "model.cell=lstm",
        "train.steps=20",
        "train.eval_interval=10",
    )
    whole = train(tiny_config(corpus_file, tmp_path / "whole", *settings))
    first = train(tiny_config(corpus_file, tmp_path / "split", *settings), reporter=InterruptAt(7))
    assert (tmp_path / "split" / "checkpoints" / "step-00000007" / "carried_states.npz").exists()
    resumed = train(
        tiny_config(corpus_file, tmp_path / "split", *settings), resume=tmp_path / "split"
    )
    expected = {h["step"]: h["val_loss"] for h in whole.history}
    got = {h["step"]: h["val_loss"] for h in resumed.history}
    assert first.state.step == 7
    for step in (10, 20):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6)
    import keras

    best = keras.saving.load_model(tmp_path / "whole" / "model.keras")
    assert best.input_shape == (None, None)  # model.keras takes any batch size


def test_contiguous_needs_enough_text(tmp_path, corpus_file):
    from charlm.errors import CorpusError

    with pytest.raises(CorpusError, match="contiguous windows need at least"):
        train(
            tiny_config(
                corpus_file, tmp_path / "run", "train.windows=contiguous", "train.batch_size=2000"
            )
        )


def test_validation_windows_follow_eval_seq_length(tmp_path, corpus_file):
    """Training's validation loss and `charlm eval` both score windows of
    train.eval_seq_length characters, not train.seq_length."""
    from charlm.evaluate import evaluate_file

    result = train(tiny_config(corpus_file, tmp_path / "run", "train.eval_seq_length=48"))
    text = corpus_file.read_text(encoding="utf-8")
    val = tmp_path / "val.txt"
    val.write_text(text[int(len(text) * 0.9) :][:2000], encoding="utf-8")
    best = [h for h in RunDir(tmp_path / "run").history() if h["step"] == result.state.best_step]
    scored = evaluate_file(tmp_path / "run", val)
    assert scored.loss == pytest.approx(best[0]["val_loss"], rel=1e-5)
    assert scored.chars == (2000 - 1) // 48 * 48


def test_validation_batches_hold_twice_a_training_batch_and_score_the_same(
    tmp_path, corpus_file, monkeypatch
):
    """An evaluation keeps no activations for gradients: its batches hold twice a
    training batch's characters (its products are faster over more rows). Which windows
    share a batch does not change the loss."""
    import charlm.evaluate
    import charlm.training.loop
    from charlm.data.pipeline import evaluation_dataset

    asked = []

    def recording(split, rows, seq_length):
        asked.append((rows, seq_length))
        return evaluation_dataset(split, rows, seq_length)

    monkeypatch.setattr(charlm.training.loop, "evaluation_dataset", recording)
    result = train(tiny_config(corpus_file, tmp_path / "run", "train.steps=6"))
    assert asked == [(2 * 4, 16)]  # tiny_config: 4 rows of 16 characters a training batch
    text = corpus_file.read_text(encoding="utf-8")
    val = tmp_path / "val.txt"
    val.write_text(text[int(len(text) * 0.9) :][:2000], encoding="utf-8")
    (record,) = [h for h in RunDir(tmp_path / "run").history() if h["step"] == 6]
    assert result.state.best_step == 6

    def four_rows(split, rows, seq_length):
        return evaluation_dataset(split, 4, seq_length)

    monkeypatch.setattr(charlm.evaluate, "evaluation_dataset", four_rows)
    from charlm.evaluate import evaluate_file

    assert evaluate_file(tmp_path / "run", val).loss == pytest.approx(record["val_loss"], rel=1e-5)


@pytest.mark.parametrize(
    "setting, named",
    [
        ("train.eval_seq_length=5000", "eval_seq_length"),
        ("train.seq_length=5000", "lower train.seq_length"),
    ],
)
def test_validation_text_must_hold_one_window_and_the_error_names_the_key(
    tmp_path, corpus_file, setting, named
):
    from charlm.errors import CorpusError

    with pytest.raises(CorpusError, match=named):
        train(tiny_config(corpus_file, tmp_path / "run", setting))


def files_of(directory):
    """Every file under `directory` with its bytes."""
    return {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def poison(model_file):
    """Replace a saved model's output weights with NaN, so that its next loss is NaN."""
    import keras

    model = keras.saving.load_model(model_file)
    logits = model.get_layer("logits").kernel
    logits.assign(np.full(logits.shape, np.nan))
    model.save(model_file.parent / "poisoned.keras")
    os.replace(model_file.parent / "poisoned.keras", model_file)


def test_each_evaluation_saves_the_model_once(tmp_path, corpus_file, monkeypatch):
    """When the best model is the trained one, model.keras is the checkpoint's file just
    written, not saved again (saving is most of an evaluation's cost after the
    evaluation itself)."""
    import keras

    saves = []
    save = keras.Model.save
    monkeypatch.setattr(keras.Model, "save", lambda *a, **k: saves.append(1) or save(*a, **k))
    result = train(tiny_config(corpus_file, tmp_path / "run"))
    assert result.state.step == 12 and len(saves) == 2  # evaluations at steps 6 and 12


def refuse_links(*args):
    raise PermissionError("no hard links here")


@pytest.mark.parametrize("links", [True, False])
def test_model_keras_is_the_best_checkpoints_file_and_outlives_it(
    tmp_path, corpus_file, monkeypatch, links
):
    """model.keras is the best checkpoint's model file itself (a hard link), or a copy
    where the file system has no hard links; removing the checkpoint, as pruning does,
    leaves it whole."""
    import keras

    if not links:
        monkeypatch.setattr(os, "link", refuse_links)
    run = RunDir(tmp_path / "run")
    assert train(tiny_config(corpus_file, run.path)).state.best_step == 12
    best = run.checkpoints_path / "step-00000012" / "model.keras"
    assert best.samefile(run.best_model_path) is links
    saved = best.read_bytes()
    shutil.rmtree(run.checkpoints_path)
    assert run.best_model_path.read_bytes() == saved
    keras.saving.load_model(run.best_model_path)
