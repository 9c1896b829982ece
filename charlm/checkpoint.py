"""Reading a trained model back: `--checkpoint` may name a run directory, one of its
checkpoint directories, or a `.keras` file inside a run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras

from charlm.config import Config, load_config
from charlm.corpus import Vocabulary
from charlm.model import is_stateful, set_implementation, stateless_copy
from charlm.rundir import RunDir, RunError, TrainState, read_state


@dataclass
class Checkpoint:
    model: keras.Model
    vocab: Vocabulary
    config: Config
    run_dir: Path
    model_path: Path
    state: TrainState | None


def load_checkpoint(path: str | Path, compile: bool = False) -> Checkpoint:
    model_path, run_dir = locate(Path(path))
    run = RunDir(run_dir)
    vocab = Vocabulary.load(run.vocab_path) if run.vocab_path.exists() else None
    if vocab is None:
        raise RunError(f"--checkpoint {path}: no vocab.json in {run_dir}; point at a charlm "
                       f"run directory")
    config = load_config(run.config_path) if run.config_path.exists() else Config()
    model = load_model(model_path, compile=compile,
                       implementation=config.model.implementation)
    check_vocabulary(model, vocab, model_path)
    if is_stateful(model):  # a contiguous-training checkpoint: fixed batch, carried state
        model = stateless_copy(model, config.model, vocab.size)
    latest = run.latest_checkpoint()
    state = read_state(latest) if latest else None
    return Checkpoint(model, vocab, config, run_dir, model_path, state)


def locate(path: Path) -> tuple[Path, Path]:
    """(the .keras file, the run directory) that `path` names."""
    if not path.exists():
        raise RunError(f"--checkpoint {path} does not exist; give a run directory "
                       f"(train.run_dir of a finished run)")
    if path.is_file():
        run_dir = path.parent.parent.parent if path.parent.parent.name == "checkpoints" \
            else path.parent
        return path, run_dir
    if (path / "state.json").exists() and path.parent.name == "checkpoints":
        return path / "model.keras", path.parent.parent
    if (path / "model.keras").exists():
        return path / "model.keras", path
    latest = RunDir(path).latest_checkpoint()
    if latest:
        return latest / "model.keras", path
    raise RunError(f"--checkpoint {path} holds no model.keras; is it a charlm run directory?")


def load_model(path: Path, compile: bool, implementation: str = "fused") -> keras.Model:
    """keras.saving.load_model, with one clear line when the file is not a model; the
    recurrent layers run `implementation` (model.implementation)."""
    try:
        model = keras.saving.load_model(path, compile=compile)
    except Exception as error:  # zip, h5 and Keras errors all mean "not a loadable model"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else \
            type(error).__name__
        raise RunError(f"{path} is not a loadable charlm model ({first_line[:200]}); "
                       f"it may be corrupt: use another checkpoint of the run") from None
    return set_implementation(model, implementation)


def check_vocabulary(model: keras.Model, vocab: Vocabulary, path: Path) -> None:
    outputs = model.output_shape[-1]
    if outputs != vocab.size:
        raise RunError(f"{path} predicts {outputs} tokens but the run's vocab.json has "
                       f"{vocab.size}; the checkpoint comes from a different vocabulary")
