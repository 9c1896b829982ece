"""The training loop: model.fit in segments between evaluations, checkpoints, resume.

    step 0 ──fit──▶ eval_interval ──eval, checkpoint──▶ ... ──▶ steps (or budget, or Ctrl-C)

Each segment is one `model.fit` call on a dataset that starts at the current
step (data is a pure function of seed and step, see data/pipeline.py), so resuming
at step k replays exactly what an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras

from charlm.config import Config
from charlm.data.pipeline import contiguous_steps, evaluation_dataset, training_dataset
from charlm.data.split import prepare_corpus
from charlm.errors import CorpusError, TrainingError
from charlm.model.build import (
    is_stateful,
    parameter_count,
    recurrent_layers,
    restore_recurrent_states,
    restore_rng_states,
    stateless_copy,
)
from charlm.model.fused import describe_loops
from charlm.run.rundir import (
    RunDir,
    TrainState,
    read_carried_states,
    read_state,
)
from charlm.run.worker import WorkerRunDir
from charlm.training import keras_compat
from charlm.training.callbacks import (
    StepMonitor,
    StopRequest,
    TimeAnnealedLearningRate,
    signal_handlers,
)
from charlm.training.devices import describe_device, resolve_jit, resolve_precision
from charlm.training.distribute import (
    agree_to_stop,
    choose_strategy,
    describe_strategy,
    distribute_training_data,
    is_chief,
    is_multi_worker,
    shard_evaluation_data,
    strategy_name,
)
from charlm.training.evaluation import evaluate_and_save, validation_digest
from charlm.training.gradient_health import GradientHealth
from charlm.training.init_from import (
    InitSource,
    describe_start,
    extended_vocabulary,
    load_init_source,
    start_from,
)
from charlm.training.model_setup import load_or_build, resolve_total_steps
from charlm.training.preflight import (
    check_distributable,
    check_memory,
    check_run_dir,
    model_file_bytes,
)
from charlm.training.reporter import Reporter, SilentReporter
from charlm.training.timeline import Timeline


@dataclass
class TrainResult:
    """Where a training call stopped and why; `history` holds history.jsonl's records."""

    run_dir: Path
    state: TrainState
    stopped_by: str  # "steps", "time budget", "early stopping", "interrupted"
    history: list = field(default_factory=list)

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def best_val_loss(self) -> float | None:
        """Nats per character; None without validation text."""
        return self.state.best_val_loss


class Run:
    """One invocation of `charlm train`: holds what the loop's steps share."""

    def __init__(
        self, config: Config, run_dir: RunDir, reporter: Reporter, exit_on_second_interrupt=False
    ):
        self.config = config
        self.run_dir = run_dir
        self.reporter = reporter
        self.stop = StopRequest(exit_on_second_interrupt)
        self.nonfinite_step: int | None = None
        self.chars_per_step = config.train.batch_size * config.train.seq_length
        self.started = time.perf_counter()
        self.state = TrainState()
        self.elapsed_before = 0.0
        self.steps_per_pass = 0  # contiguous training: steps in one pass over the text
        self.eval_model = None  # contiguous training: a stateless twin for evaluation
        self.gradient_health = None  # a GradientHealth, set once the model is built
        self.timeline = Timeline(config)
        self.vocab = None
        self.val_digest = None  # tells whether two runs were validated on the same text
        self.train_chars_per_s = None  # the last segment's, set by StepMonitor

    def elapsed(self) -> float:
        """Training time of the whole run, earlier invocations (before --resume) included."""
        return self.elapsed_before + time.perf_counter() - self.started

    def over_budget(self) -> bool:
        budget = self.config.train.time_budget_s
        return budget is not None and self.elapsed() >= budget


def train(
    config: Config,
    resume: str | Path | None = None,
    reporter: Reporter | None = None,
    exit_on_second_interrupt: bool = False,
) -> TrainResult:
    """Train (or resume) the run `config` describes; returns where it stopped and why.
    A first interrupt (SIGINT, SIGTERM) stops at the next step and saves; a second SIGINT
    raises KeyboardInterrupt, or with `exit_on_second_interrupt` (the command line) ends
    the process at once."""
    reporter = reporter or SilentReporter()
    # The strategy comes first: MultiWorkerMirroredStrategy must exist before any TF op.
    name = strategy_name(config.train.distribute)
    if name == "multi_worker":
        keras_compat.patch_keras_for_multi_worker()  # refuses a Keras it was not made for
    strategy = choose_strategy(name)
    path = resume or config.train.run_dir
    run_dir = RunDir(path) if is_chief() else WorkerRunDir(path)
    try:
        # train.init_from is checked before the run directory is made: a refusal writes nothing.
        source = load_init_source(config, resume is not None)
        run_dir.lock()
        return train_locked(
            config,
            run_dir,
            resume is not None,
            reporter,
            strategy,
            source,
            exit_on_second_interrupt,
        )
    finally:
        reporter.close()
        run_dir.unlock()


def train_locked(
    config: Config,
    run_dir: RunDir,
    resuming: bool,
    reporter: Reporter,
    strategy,
    source: InitSource | None = None,
    exit_on_second_interrupt: bool = False,
) -> TrainResult:
    run_dir.remove_partial_saves()
    checkpoint = check_run_dir(config, run_dir, resuming, reporter.message)
    vocab = run_dir.load_vocab(checkpoint) if resuming else None
    if source is not None:
        vocab = extended_vocabulary(source, config.data, reporter.corpus_progress)
    prepared = prepare_corpus(
        config.data,
        config.train.seq_length,
        vocab,
        reporter.corpus_progress,
        config.train.eval_seq_length,
    )
    check_memory(config, prepared.vocab.size)
    check_distributable(config, strategy)
    resolve_precision(config.train.precision, reporter)
    total = resolve_total_steps(config, len(prepared.train))
    jit = resolve_jit(config.train.jit_compile, strategy.num_replicas_in_sync)
    with strategy.scope():
        model = load_or_build(config, prepared.vocab.size, checkpoint, total, jit)
        if source is not None:
            new_chars = start_from(model, source, prepared.vocab)
            reporter.message(describe_start(source, new_chars))
    run = Run(config, run_dir, reporter, exit_on_second_interrupt)
    with strategy.scope():  # its sums are variables of the strategy, like the weights
        run.gradient_health = GradientHealth(model)
    run.vocab, run.val_digest = prepared.vocab, validation_digest(prepared)
    if checkpoint:
        resume_state(run, model, checkpoint)
    else:
        run_dir.check_writable(needed_bytes=3 * model_file_bytes(model))
        run_dir.save_config(config)
        run_dir.save_vocab(prepared.vocab)
    if is_stateful(model):
        prepare_contiguous(run, model, prepared, jit)
    reporter.message(
        "; ".join(
            filter(
                None,
                [
                    describe_device(),
                    describe_strategy(strategy),
                    describe_loops(recurrent_layers(model)),
                    f"model {model.name}: {parameter_count(model):,} parameters",
                    f"vocabulary {prepared.vocab.size}",
                    f"{len(prepared.train):,} training characters",
                ],
            )
        )
    )
    return run_loop(run, model, prepared, total)


def resume_state(run: Run, model: keras.Model, checkpoint: Path) -> None:
    """Step, best record and every random or carried state the checkpoint kept."""
    run.state = read_state(checkpoint)
    run.elapsed_before = run.state.elapsed_s
    restore_rng_states(model, run.state.rng_states or [])
    restore_recurrent_states(model, read_carried_states(checkpoint))
    run.gradient_health.restore(run.state.gradient_health)
    run.reporter.message(f"resuming {run.run_dir.path} at step {run.state.step}")


def prepare_contiguous(run: Run, model: keras.Model, prepared, jit: bool) -> None:
    """Contiguous windows: steps per pass over the text, and a stateless twin to evaluate."""
    config = run.config
    run.steps_per_pass = contiguous_steps(
        prepared.train, config.train.batch_size, config.train.seq_length
    )
    if run.steps_per_pass < 1:
        need = config.train.batch_size * (config.train.seq_length + 1)
        raise CorpusError(
            f"contiguous windows need at least train.batch_size x (train.seq_length + 1) "
            f"= {need} training characters, the corpus has {len(prepared.train)}; give "
            f"more text, lower them, or set train.windows: random"
        )
    run.eval_model = stateless_copy(model, config.model, prepared.vocab.size)
    # Sharing the optimizer makes model.keras carry its state, as in random-window runs.
    run.eval_model.compile(optimizer=model.optimizer, loss=model.loss, jit_compile=jit)


# ---------------------------------------------------------------- the loop


def run_loop(run: Run, model: keras.Model, prepared, total: int) -> TrainResult:
    config = run.config.train
    val_data = (
        evaluation_dataset(prepared.val, config.eval_batch_size, config.eval_length)
        if prepared.val is not None
        else None
    )
    if val_data is not None and model.distribute_strategy.num_replicas_in_sync > 1:
        val_data = shard_evaluation_data(val_data)
    run.reporter.start(total, run.state.step)
    stopped_by = "steps"
    with signal_handlers(run.stop):
        while run.state.step < total:
            train_loss = fit_segment(run, model, prepared, total)
            if run.nonfinite_step is not None:
                raise TrainingError(nonfinite_message(run))
            evaluate_and_save(run, model, val_data, train_loss)
            if agree_to_stop(model.distribute_strategy, run.stop.reason):
                stopped_by = run.stop.reason or "another worker's stop"
                break
    if stopped_by == "steps" and not run.run_dir.latest_checkpoint():
        evaluate_and_save(run, model, val_data, math.nan)
    return TrainResult(run.run_dir.path, run.state, stopped_by, run.run_dir.history())


def fit_segment(run: Run, model: keras.Model, prepared, total: int) -> float:
    """Train up to the next evaluation step; returns the mean training loss of the segment."""
    config = run.config.train
    start = run.state.step
    stop = min(total, (start // config.eval_interval + 1) * config.eval_interval)
    data = distribute_training_data(
        model.distribute_strategy,
        lambda rows: training_dataset(
            prepared.train,
            config.batch_size,
            config.seq_length,
            config.seed,
            start,
            stop,
            config.windows,
            rows,
        ),
        config.batch_size,
    )
    callbacks = [
        StepMonitor(run, start, stop_mid_segment=not is_multi_worker(model.distribute_strategy))
    ]
    if config.anneal_over == "time_budget":
        callbacks.append(TimeAnnealedLearningRate(run, start))
    model.fit(
        data, steps_per_epoch=stop - start, epochs=1, verbose=0, shuffle=False, callbacks=callbacks
    )
    run.state.step = int(model.optimizer.iterations.numpy())
    return callbacks[0].segment_loss


def nonfinite_message(run: Run) -> str:
    kept = run.run_dir.latest_checkpoint()
    kept_text = f"the last good checkpoint {kept} is kept" if kept else "nothing was saved"
    return (
        f"the training loss became non-finite (NaN or inf) at step {run.nonfinite_step}; "
        f"{kept_text}; lower train.learning_rate or train.clip_norm and resume"
    )
