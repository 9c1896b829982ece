"""charlm from Python: train a model, load it, generate, stream and score text.

    >>> import charlm
    >>> result = charlm.train("configs/tiny.yaml", overrides={"train.steps": 200})
    >>> lm = charlm.load(result.run_dir)
    >>> lm.generate("ROMEO:", length=200, seed=1)
    >>> lm.score("To be, or not to be").bits_per_char

Every call gives what the command line gives for the same arguments: `generate` is the
text `charlm sample` prints, `evaluate` the number `charlm eval` prints. Errors a caller
can fix are charlm.errors.CharlmError (a ValueError) naming the setting; nothing here ends
the process.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from charlm.config import Config, SampleConfig
from charlm.config.load import build_config


def train(
    config: str | Path | dict | Config | None = None,
    *,
    overrides: dict | None = None,
    resume: str | Path | None = None,
    init_from: str | Path | None = None,
    progress: bool = True,
):
    """Train a model (or resume one) as `charlm train` does.

    Args:
        config: a YAML path, a dict of sections ({"model": {"cell": "gru"}}), a Config, or
            None for the defaults. With `resume` and no config, the run's own config.
        overrides: dotted keys to values, {"data.corpus": "novel.txt", "train.steps": 2000},
            checked as `--set` checks them.
        resume: a run directory to continue from its latest checkpoint.
        init_from: a trained run (or checkpoint) whose weights the new run starts from
            (the key train.init_from).
        progress: show a progress bar.

    Returns:
        TrainResult: run_dir, step, best_val_loss, stopped_by, history (the records of
        history.jsonl).

    Raises:
        KeyboardInterrupt: when interrupted (Ctrl-C, a notebook's stop button); training
            stops at the next step and saves a checkpoint first.
    """
    import keras

    from charlm.run.rundir import RunDir
    from charlm.training.loop import train as run_training

    if config is None and resume is not None:
        config = RunDir(resume).config_path
    overrides = dict(overrides or {})
    if init_from is not None:
        overrides["train.init_from"] = str(init_from)
    settings = build_config(config, overrides)
    if resume is not None:
        settings.train.run_dir = str(resume)
    policy = keras.mixed_precision.global_policy()
    try:
        result = run_training(
            settings, resume=resume, reporter=reporter_for(progress), exit_on_second_interrupt=False
        )
    finally:
        keras.mixed_precision.set_global_policy(policy)
    if result.stopped_by == "interrupted":
        raise KeyboardInterrupt(
            f"training interrupted at step {result.step}; saved in {result.run_dir}"
        )
    return result


def reporter_for(progress: bool):
    from charlm.training.reporter import SilentReporter

    if not progress:
        return SilentReporter()
    from charlm.training.progress import RichReporter

    return RichReporter()


def load(path: str | Path) -> LanguageModel:
    """Load a trained run for generating, scoring and inspecting text.

    Args:
        path: a run directory, one of its checkpoint directories, or a `.keras` file
            inside a run (what `--checkpoint` takes).

    Returns:
        LanguageModel: the run's model, vocabulary and sample defaults.

    Raises:
        charlm.errors.RunError: `path` is none of these, or its files cannot be loaded.
    """
    from charlm.run.load import load_checkpoint

    return LanguageModel(load_checkpoint(Path(path)), Path(path))


class LanguageModel:
    """A trained charlm model: generate, stream and score text (see charlm.textgen)."""

    def __init__(self, loaded, path: Path):
        from charlm.textgen import TextGenerator

        self.loaded, self.path = loaded, path
        self.generator = TextGenerator(loaded.model, loaded.vocab, loaded.config.sample)

    @property
    def keras_model(self):
        """The plain Keras model: token ids (batch, time) -> logits (batch, time, vocab)."""
        return self.loaded.model

    @property
    def vocabulary(self):
        """The Vocabulary: `.chars` (a character per id), `encode(text)`, `decode(ids)`."""
        return self.loaded.vocab

    @property
    def sample_defaults(self) -> SampleConfig:
        """The run's sample section: the settings a call leaves unset."""
        return self.loaded.config.sample

    def generate(
        self,
        prime: str = "",
        *,
        length: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        n: int = 1,
        stop: str | list[str] | None = None,
        argmax: bool = False,
    ) -> str | list[str]:
        """Text as `charlm sample` prints it for the same arguments.

        Args:
            prime: text the model reads first; characters it never saw are left out, with
                an UnknownCharactersWarning.
            length, temperature, top_k, top_p: as the config's sample section; None takes
                the run's default (`sample_defaults`). temperature 0 (or argmax) takes the
                most likely character each time.
            seed: the same seed, prime and settings give the same text; None, a random one.
            n: independent samples, generated together.
            stop: a string or a list; each sample ends before the first it generates.

        Returns:
            The prime's readable part followed by the generated text: a str, or a list of
            `n` of them when n > 1.

        Raises:
            charlm.errors.ConfigError: a bad value, naming its setting (`sample.top_p`).
        """
        settings = self.generator.settings(
            length=length,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            n=n,
            stop=stop,
            argmax=argmax,
        )
        texts = self.generator.generate(prime, settings)
        return texts[0] if n == 1 else texts

    def stream(self, prime: str = "", **options) -> Iterator[str] | Iterator[list[str]]:
        """generate's text in pieces as it is made, in flat memory for any length.

        Args:
            prime: as generate's.
            **options: generate's keyword arguments (length, temperature, seed, n, …).

        Yields:
            str pieces, or with n > 1 lists of n pieces (one per sample). Joined, the
            pieces are generate's text.
        """
        settings = self.generator.settings(**options)
        for pieces in self.generator.pieces(self.generator.readable(prime), settings):
            yield pieces[0] if settings.n == 1 else pieces

    def score(self, text: str, *, top: int = 5):
        """How likely the model finds each character of `text`, each predicted from the
        state after a newline followed by the characters before it.

        Args:
            text: the characters to score; ones outside the vocabulary score as unknown.
            top: how many likely characters to list at each position.

        Returns:
            Scores: `logprobs` (len(text),) natural-log probabilities; `top` the `top` most
            likely characters and their log-probabilities at each position (also as arrays
            `top_ids`, `top_logprobs`, shaped (len(text), top)); `bits_per_char`.
        """
        return self.generator.score(text, top)

    def activations(self, text: str) -> list[dict]:
        """What each recurrent layer holds after each character of `text`, read from the
        state after a newline (as `score` reads it). See charlm.inspect.activations.

        Args:
            text: the characters to read.

        Returns:
            One dict per recurrent layer, of float32 arrays shaped (len(text), units), row
            t after text[t]. Keys: `hidden`; an LSTM's `input_gate`, `forget_gate`,
            `output_gate`, `candidate` and `cell`; a GRU's `update_gate`, `reset_gate` and
            `candidate` (Keras's convention: hidden = update_gate * previous
            + (1 - update_gate) * candidate).
        """
        from charlm.inspect.activations import activations

        return activations(self.keras_model, self.vocabulary, text)

    def find_units(self, text: str, *, top: int = 5) -> dict:
        """A heuristic: the units whose value (hidden state or a gate) correlates most
        with simple properties of `text`. A correlation on one text, not a proof of what
        a unit does. See charlm.inspect.units.

        Args:
            text: the characters to read (a few thousand give steadier correlations).
            top: units to list per property.

        Returns:
            dict: property name (inside quotes, inside brackets, position in line, start
            of word, after newline, digit, upper case) -> up to `top` Unit(layer,
            quantity, unit, correlation), strongest first.
        """
        from charlm.inspect.units import find_units

        return find_units(self.activations(text), text, top)

    def evaluate(self, path: str | Path) -> float:
        """Score a text file as validation is scored: the number `charlm eval` prints.

        Args:
            path: a UTF-8 text file of at least 2 characters.

        Returns:
            The loss in nats per character (divide by ln 2 for bits).

        Raises:
            charlm.errors.CorpusError: the file is missing, binary or too short.
        """
        from charlm.evaluate import evaluate_file

        return evaluate_file(self.path, Path(path)).loss

    def export(self, out_dir: str | Path) -> Path:
        """Write the model as a TensorFlow SavedModel with a `generate` signature, as
        `charlm export` does (its inputs: docs/serving.md).

        Args:
            out_dir: the directory to write; it must not exist yet or be empty.

        Returns:
            `out_dir`, as a Path.
        """
        from charlm.export import export_saved_model

        export_saved_model(self.path, Path(out_dir))
        return Path(out_dir)

    @property
    def info(self) -> dict:
        """What `charlm info` shows: paths, parameters, vocabulary, steps, best loss, config."""
        return run_info(self.loaded)


def run_info(loaded) -> dict:
    """A loaded run's facts, as `charlm info` prints them.

    Args:
        loaded: a LoadedRun (charlm.run.load).

    Returns:
        dict: run_dir, model_path, parameters, vocabulary_size, steps, best_val_loss
        (nats), best_val_bits, best_step, training_time_s (None for a run without a
        checkpoint state), config (the resolved config as nested dicts).
    """
    from charlm.model.build import parameter_count

    state = loaded.state
    best = state.best_val_loss if state else None
    return {
        "run_dir": str(loaded.run_dir),
        "model_path": str(loaded.model_path),
        "parameters": parameter_count(loaded.model),
        "vocabulary_size": loaded.vocab.size,
        "steps": state.step if state else None,
        "best_val_loss": best,
        "best_val_bits": best / math.log(2) if best is not None else None,
        "best_step": state.best_step if state else None,
        "training_time_s": state.elapsed_s if state else None,
        "config": loaded.config.to_dict(),
    }
