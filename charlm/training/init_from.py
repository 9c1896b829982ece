"""Fine-tuning: a new run that starts from a trained run's weights (train.init_from).

    base run ──its best model──▶ new run: same architecture, the base's vocabulary with
                                 the new corpus's unseen characters appended, a fresh
                                 optimizer, step 0, the config's own schedule

Every character the base knew keeps its id and its rows of the embedding and the output
layer bit for bit, so the base's text can still be produced. Only the unknown token's id
changes: it stays the last id (Vocabulary), behind the appended characters, and its rows
move with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from charlm.config import Config, DataConfig, ModelConfig, load_config
from charlm.data.sources import resolve_files
from charlm.data.tokens import Progress, scan_corpus
from charlm.data.vocabulary import Vocabulary
from charlm.errors import ConfigError, RunError
from charlm.run.load import check_vocabulary, load_model, locate
from charlm.run.rundir import RunDir

# The model settings that shape the weights; dropout and implementation may differ.
ARCHITECTURE = ("cell", "layers", "units", "embedding_dim")
EMBEDDING, LOGITS = "embedding", "logits"  # the layer names build_model gives


@dataclass
class InitSource:
    """What a fine-tuned run takes from its base: the weights (by layer name) and ids."""

    model_path: Path
    vocab: Vocabulary
    weights: dict[str, list[np.ndarray]]


def load_init_source(config: Config, resuming: bool) -> InitSource | None:
    """The base run `train.init_from` names, checked; None for a run that starts from
    scratch, and for a resume (its own checkpoint holds its weights). Every refusal comes
    before anything is written: a path that is not a run, a different architecture, a
    corrupt file."""
    if config.train.init_from is None or resuming:
        return None
    given = Path(config.train.init_from)
    model_path, run = locate_run(given)
    check_architecture(config.model, load_config(run.config_path).model, given)
    vocab = run.load_vocab(run.latest_checkpoint())  # refused if edited since training
    base = load_model(model_path, compile=False, implementation="stock")
    check_vocabulary(base, vocab, model_path)
    return InitSource(model_path, vocab, {layer.name: layer.get_weights() for layer in base.layers})


def locate_run(given: Path) -> tuple[Path, RunDir]:
    """The model file and the run directory `given` names, which must hold a run's
    config and vocabulary."""
    model_path, run_path = locate(given, "train.init_from")
    run = RunDir(run_path)
    for needed in (run.config_path, run.vocab_path):
        if not needed.is_file():
            raise RunError(
                f"train.init_from {given}: {run_path} has no {needed.name}; "
                f"give the directory of a run charlm trained"
            )
    return model_path, run


def check_architecture(model: ModelConfig, base: ModelConfig, given: Path) -> None:
    for name in ARCHITECTURE:
        here, there = getattr(model, name), getattr(base, name)
        if here != there:
            raise ConfigError(
                f"model.{name} is {here!r} here but {there!r} in train.init_from {given}; "
                f"fine-tuning keeps the base run's model.{', model.'.join(ARCHITECTURE)}",
                setting=f"model.{name}",
            )


def extended_vocabulary(
    source: InitSource, data: DataConfig, progress: Progress | None = None
) -> Vocabulary:
    """The base's vocabulary with the characters of `data.corpus` it never saw appended."""
    files = resolve_files(data.corpus, "data.corpus")
    stats = scan_corpus(files, data.encoding_errors, progress)  # cached: training reuses it
    return source.vocab.extended(stats.counts)


def start_from(model: keras.Model, source: InitSource, vocab: Vocabulary) -> list[str]:
    """Set `model`'s weights (built for `vocab`, an extension of the source's) from the
    source; returns the characters new to it."""
    old = source.vocab
    assert vocab.chars[: len(old.chars)] == old.chars, "the vocabulary must extend the base's"
    # Where each of the base's token ids lives now: characters in place, unknown last.
    old_ids = np.append(np.arange(len(old.chars)), vocab.unknown_id)
    new_ids = np.arange(len(old.chars), len(vocab.chars))
    for layer in model.layers:
        weights = source.weights.get(layer.name)
        if not weights:
            continue
        if layer.name == EMBEDDING:
            weights = [placed_rows(layer.get_weights()[0], weights[0], old_ids)]
        elif layer.name == LOGITS:
            weights = output_weights(layer.get_weights(), weights, old_ids, new_ids)
        layer.set_weights(weights)
    return vocab.chars[len(old.chars) :]


def placed_rows(fresh: np.ndarray, base: np.ndarray, old_ids: np.ndarray) -> np.ndarray:
    """`fresh` (as the layer's initializer made it when the model was built) with the
    base's rows at `old_ids`: new characters keep their freshly initialised rows."""
    placed = fresh.copy()
    placed[old_ids] = base
    return placed


def output_weights(fresh: list, base: list, old_ids, new_ids) -> list[np.ndarray]:
    """The output layer's kernel columns and biases of the base's tokens at `old_ids`;
    the new characters keep fresh kernel columns and get the bias of the rarest
    character the base knew: no more likely than any character the base ever produced
    (so the base's text keeps its probabilities but for the few new terms in the
    softmax), yet within the range training moves a bias through."""
    kernel, bias = fresh
    base_kernel, base_bias = base
    kernel = placed_rows(kernel.T, base_kernel.T, old_ids).T
    bias = placed_rows(bias, base_bias, old_ids)
    bias[new_ids] = base_bias[:-1].min()  # [:-1]: the unknown token is not a character
    return [kernel, bias]


def describe_start(source: InitSource, new_chars: list[str]) -> str:
    new = f"{len(new_chars)} new characters {''.join(new_chars)!r}" if new_chars else "none new"
    return f"starting from {source.model_path}: vocabulary {source.vocab.size} tokens, {new}"
