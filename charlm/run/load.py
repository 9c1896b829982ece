"""Loading a run for sampling, evaluation, serving or resuming: the model, its vocabulary
and its config, from what `--checkpoint` names (a run directory, one of its checkpoint
directories, or a `.keras` file inside the run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras

from charlm.config import Config, load_config
from charlm.data.vocabulary import Vocabulary
from charlm.errors import RunError
from charlm.files import archive_problem, file_problem
from charlm.model.build import is_stateful, set_implementation, stateless_copy
from charlm.run.rundir import CHECKPOINTS_DIR, MODEL_FILE, RunDir, TrainState, is_checkpoint_dir


@dataclass
class LoadedRun:
    """A trained run, loaded: what `charlm sample`, `eval`, `serve`, `export`, `info` and
    the Python API work from.

    Attributes:
        model: the stateless Keras model: token ids (batch, time) -> logits
            (batch, time, vocab), its recurrent layers running model.implementation.
        vocab: the run's vocabulary.
        config: the run's resolved config (the defaults if config.yaml is missing).
        run_dir: the run directory.
        model_path: the `.keras` file loaded.
        state: the latest checkpoint's state (step, best loss, ...), None if it has none.
    """

    model: keras.Model
    vocab: Vocabulary
    config: Config
    run_dir: Path
    model_path: Path
    state: TrainState | None


def load_checkpoint(path: str | Path, compile: bool = False) -> LoadedRun:
    """Load the run `path` names.

    Args:
        path: what `--checkpoint` takes: a run directory (its best model.keras, else its
            latest checkpoint), one of its checkpoint directories, or a `.keras` file
            inside the run.
        compile: load the optimizer and compiled loss as well (keras load_model's).

    Returns:
        LoadedRun; a contiguous-training model comes back as its stateless copy.

    Raises:
        charlm.errors.RunError: `path` is not a run, its vocab.json is missing, the model
            cannot be loaded, or its output width is not the vocabulary's size.
    """
    model_path, run_dir = locate(Path(path))
    run = RunDir(run_dir)
    if not run.vocab_path.exists():
        raise RunError(f"run {path}: no vocab.json in {run_dir}; point at a charlm run directory")
    latest, state = run.latest_state()
    vocab = run.load_vocab(latest)  # the run's one vocabulary: any checkpoint's digest
    config = load_config(run.config_path) if run.config_path.exists() else Config()
    model = load_model(model_path, compile=compile, implementation=config.model.implementation)
    check_vocabulary(model, vocab, model_path)
    if is_stateful(model):  # a contiguous-training checkpoint: fixed batch, carried state
        model = stateless_copy(model, config.model, vocab.size)
    return LoadedRun(model, vocab, config, run_dir, model_path, state)


def load_model(path: Path, compile: bool, implementation: str = "fused") -> keras.Model:
    """keras.saving.load_model, with one clear line when the file is not a model.

    Args:
        path: a `.keras` file.
        compile: as keras.saving.load_model's.
        implementation: what the recurrent layers run (model.implementation: fused, stock).

    Returns:
        The Keras model.

    Raises:
        charlm.errors.RunError: the file is missing, damaged or not a model.
    """
    try:
        model = keras.saving.load_model(path, compile=compile)
    except Exception as error:  # zip, h5 and Keras errors all mean "not a loadable model"
        raise RunError(
            f"{path} {unloadable(path, error)}; use another checkpoint of the run"
        ) from None
    return set_implementation(model, implementation)


def unloadable(path: Path, error: Exception) -> str:
    """Why Keras could not load `path`, in true words: what is wrong with the file when
    that is known (Keras says "File not found" of a truncated one), else Keras's reason."""
    problem = file_problem(path)
    if problem:
        return problem
    damage = archive_problem(path) if path.suffix == ".keras" else None
    if damage:
        return f"is not a loadable charlm model (it {damage})"
    text = str(error).strip()
    reason = text.splitlines()[0][:200] if text else type(error).__name__
    return f"is not a loadable charlm model ({reason})"


def check_vocabulary(model: keras.Model, vocab: Vocabulary, path: Path) -> None:
    """Raise a RunError naming `path` unless the model predicts `vocab.size` tokens."""
    outputs = model.output_shape[-1]
    if outputs != vocab.size:
        raise RunError(
            f"{path} predicts {outputs} tokens but the run's vocab.json has "
            f"{vocab.size}; the checkpoint comes from a different vocabulary"
        )


def locate(path: Path, label: str = "run") -> tuple[Path, Path]:
    """Find the model file and run directory `path` names.

    Args:
        path: a run directory, one of its checkpoint directories, or a .keras file
            inside the run.
        label: what errors call the path (the setting it was given as).

    Returns:
        (the .keras file, the run directory).

    Raises:
        charlm.errors.RunError: `path` is missing or holds no model.
    """
    if not path.is_dir():
        problem = file_problem(path)
        if problem:
            raise RunError(
                f"{label} {path} {problem}; give a run directory (train.run_dir of a finished run)"
            )
        in_checkpoint = path.parent.parent.name == CHECKPOINTS_DIR
        return path, path.parent.parent.parent if in_checkpoint else path.parent
    if is_checkpoint_dir(path):
        return path / MODEL_FILE, path.parent.parent
    if (path / MODEL_FILE).exists():
        return path / MODEL_FILE, path
    latest = RunDir(path).latest_checkpoint()
    if latest:
        return latest / MODEL_FILE, path
    raise RunError(f"{label} {path} holds no {MODEL_FILE}; is it a charlm run directory?")
