"""The training loop: model.fit in segments between evaluations, checkpoints, resume.

    step 0 ──fit──▶ eval_interval ──eval, checkpoint──▶ ... ──▶ steps (or budget, or Ctrl-C)

Each segment is one `model.fit` call on a dataset that starts at the current
step (data is a pure function of seed and step, see dataset.py), so resuming
at step k replays exactly what an uninterrupted run would have seen.
"""

from __future__ import annotations

import functools
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf

from charlm import corpus as corpus_module
from charlm.config import DEFAULT_STEPS, Config, ConfigError, load_config
from charlm.dataset import evaluation_dataset, lane_steps, training_dataset
from charlm.errors import TrainingError
from charlm.devices import describe_device, resolve_jit, resolve_precision
from charlm.distribute import (choose_strategy, describe_strategy, distribute_training_data,
                               is_chief, shard_evaluation_data)
from charlm.fused import describe_loops
from charlm.model import (build_model, estimated_bytes, is_stateful, parameter_count,
                          recurrent_layers, recurrent_states, reset_recurrent_states, restore_recurrent_states,
                          restore_rng_states, rng_states, stateless_copy)
from charlm.rundir import (RunDir, RunError, TrainState, WorkerRunDir, read_carried_states,
                           read_state)

# Keys that may differ between a run's saved config and the one given with --resume.
RESUMABLE_CHANGES = {"train.steps", "train.epochs", "train.time_budget_s",
                     "train.eval_interval", "train.keep_checkpoints",
                     "train.early_stopping_patience", "train.run_dir", "data.val_max_chars",
                     "train.distribute", "train.jit_compile", "model.implementation"}
MEMORY_LIMIT_FRACTION = 0.8


@dataclass
class TrainResult:
    run_dir: Path
    state: TrainState
    stopped_by: str  # "steps", "time budget", "early stopping", "interrupted"
    history: list = field(default_factory=list)


class SilentReporter:
    """What train() tells the user; the CLI passes a Rich one."""

    def start(self, total_steps: int, step: int) -> None: ...
    def advance(self, step: int, loss: float, chars_per_s: float) -> None: ...
    def evaluated(self, step: int, val_loss: float | None) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class StopRequest:
    """Set by SIGINT/SIGTERM, the time budget or early stopping; read at step boundaries."""

    def __init__(self):
        self.reason: str | None = None

    def handle_signal(self, signum, frame):
        if self.reason == "interrupted" and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: leave now
        self.reason = "interrupted"


class StepMonitor(keras.callbacks.Callback):
    """Per step: progress, non-finite loss, stop requests and the time budget."""

    def __init__(self, run: "Run", first_step: int, stop_mid_segment: bool = True):
        super().__init__()
        self.run = run
        self.step = first_step
        # Workers of a multi-worker run must stop at the same step: they agree at the end
        # of each segment instead (see agree_to_stop).
        self.stop_mid_segment = stop_mid_segment
        self.started = time.perf_counter()
        self.segment_loss = math.nan

    def on_train_batch_begin(self, batch, logs=None):
        # Contiguous training: every lane starts again from the top of its text.
        if self.run.steps_per_pass and self.step % self.run.steps_per_pass == 0:
            reset_recurrent_states(self.model)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        loss = float(logs["loss"])  # the mean over this segment so far
        if not math.isfinite(loss):
            self.run.nonfinite_step = self.step
            self.model.stop_training = True
            return
        self.segment_loss = loss
        chars = (batch + 1) * self.run.chars_per_step
        self.run.reporter.advance(self.step, loss, chars / (time.perf_counter() - self.started))
        if self.run.over_budget():
            self.run.stop.reason = self.run.stop.reason or "time budget"
        if self.run.stop.reason and self.stop_mid_segment:
            self.model.stop_training = True


class Run:
    """One invocation of `charlm train`: holds what the loop's steps share."""

    def __init__(self, config: Config, run_dir: RunDir, reporter):
        self.config = config
        self.run_dir = run_dir
        self.reporter = reporter
        self.stop = StopRequest()
        self.nonfinite_step: int | None = None
        self.chars_per_step = config.train.batch_size * config.train.seq_length
        self.started = time.perf_counter()
        self.state = TrainState()
        self.elapsed_before = 0.0
        self.steps_per_pass = 0  # contiguous training: steps in one pass over the text
        self.eval_model = None  # contiguous training: a stateless twin for evaluation

    def elapsed(self) -> float:
        """Training time of the whole run, earlier invocations (before --resume) included."""
        return self.elapsed_before + time.perf_counter() - self.started

    def over_budget(self) -> bool:
        budget = self.config.train.time_budget_s
        return budget is not None and self.elapsed() >= budget


class TimeAnnealedLearningRate(keras.callbacks.Callback):
    """train.anneal_over: time_budget. Sets the learning rate before every step from the
    share of the time budget used, so the cosine ends at the budget whatever the
    machine's speed; a step-based schedule tuned on one machine is cut short on a slower
    one (its rate still high) and wastes the end of the budget on a faster one."""

    def __init__(self, run: "Run", first_step: int):
        super().__init__()
        self.run = run
        self.step = first_step

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        optimizer.learning_rate = time_annealed_rate(self.run.config.train, self.step + batch,
                                                     self.run.elapsed())


def time_annealed_rate(config, step: int, elapsed_s: float) -> float:
    """Linear warm-up over steps, times a cosine over the share of the budget used."""
    progress = min(1.0, elapsed_s / config.time_budget_s)
    floor = config.min_lr_fraction
    cosine = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    return config.learning_rate * cosine * warmup


def train(config: Config, resume: str | Path | None = None, reporter=None) -> TrainResult:
    """Train (or resume) the run `config` describes; returns where it stopped and why."""
    reporter = reporter or SilentReporter()
    # The strategy comes first: MultiWorkerMirroredStrategy must exist before any TF op.
    strategy = choose_strategy(config.train.distribute)
    path = resume or config.train.run_dir
    run_dir = RunDir(path) if is_chief() else WorkerRunDir(path)
    run_dir.lock()
    try:
        return train_locked(config, run_dir, resume is not None, reporter, strategy)
    finally:
        reporter.close()
        run_dir.unlock()


def train_locked(config: Config, run_dir: RunDir, resuming: bool, reporter,
                 strategy) -> TrainResult:
    run_dir.remove_partial_saves()
    checkpoint = check_run_dir(config, run_dir, resuming)
    vocab = corpus_module.Vocabulary.load(run_dir.vocab_path) if resuming else None
    prepared = corpus_module.prepare_corpus(config.data, config.train.seq_length, vocab,
                                            reporter_progress(reporter),
                                            config.train.eval_seq_length)
    check_memory(config, prepared.vocab.size)
    check_distributable(config, strategy)
    resolve_precision(config.train.precision, reporter)
    total = resolve_total_steps(config, len(prepared.train))
    jit = resolve_jit(config.train.jit_compile, strategy.num_replicas_in_sync)
    with strategy.scope():
        model = load_or_build(config, prepared.vocab.size, checkpoint, total, jit)
    run = Run(config, run_dir, reporter)
    if checkpoint:
        resume_state(run, model, checkpoint)
    else:
        run_dir.check_writable(needed_bytes=3 * model_file_bytes(model))
        run_dir.save_config(config)
        run_dir.save_vocab(prepared.vocab)
    if is_stateful(model):
        prepare_contiguous(run, model, prepared, jit)
    reporter.message("; ".join(filter(None, [
        describe_device(), describe_strategy(strategy),
        describe_loops(recurrent_layers(model)),
        f"model {model.name}: {parameter_count(model):,} parameters",
        f"vocabulary {prepared.vocab.size}", f"{len(prepared.train):,} training characters"])))
    return run_loop(run, model, prepared, total)


def resume_state(run: Run, model: keras.Model, checkpoint: Path) -> None:
    """Step, best record and every random or carried state the checkpoint kept."""
    run.state = read_state(checkpoint)
    run.elapsed_before = run.state.elapsed_s
    restore_rng_states(model, run.state.rng_states or [])
    restore_recurrent_states(model, read_carried_states(checkpoint))
    run.reporter.message(f"resuming {run.run_dir.path} at step {run.state.step}")


def prepare_contiguous(run: Run, model: keras.Model, prepared, jit: bool) -> None:
    """Contiguous windows: steps per pass over the text, and a stateless twin to evaluate."""
    config = run.config
    run.steps_per_pass = lane_steps(prepared.train, config.train.batch_size,
                                    config.train.seq_length)
    if run.steps_per_pass < 1:
        need = config.train.batch_size * (config.train.seq_length + 1)
        raise corpus_module.CorpusError(
            f"contiguous windows need at least train.batch_size x (train.seq_length + 1) "
            f"= {need} training characters, the corpus has {len(prepared.train)}; give "
            f"more text, lower them, or set train.windows: random")
    run.eval_model = stateless_copy(model, config.model, prepared.vocab.size)
    # Sharing the optimizer makes model.keras carry its state, as in random-window runs.
    run.eval_model.compile(optimizer=model.optimizer, loss=model.loss, jit_compile=jit)


def check_distributable(config: Config, strategy) -> None:
    replicas = strategy.num_replicas_in_sync
    if config.train.batch_size % replicas:
        raise ConfigError(f"train.batch_size {config.train.batch_size} must be a multiple of "
                          f"the {replicas} replicas")
    if config.train.anneal_over == "time_budget" and isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy):
        raise ConfigError("train.anneal_over: time_budget needs one process (each worker's "
                          "clock would give it another learning rate); anneal over steps")
    if replicas > 1 and config.train.windows == "contiguous":
        raise ConfigError("train.windows: contiguous runs on one device only (its carried "
                          "state has a fixed batch); use random windows to distribute")


def check_run_dir(config: Config, run_dir: RunDir, resuming: bool) -> Path | None:
    """The checkpoint to resume from, or None for a new run; refuses to overwrite a run."""
    if not resuming:
        if run_dir.has_checkpoints() or run_dir.best_model_path.exists():
            raise RunError(f"run directory {run_dir.path} already holds a run; resume it with "
                           f"--resume {run_dir.path} or set train.run_dir to a new directory")
        return None
    checkpoint = run_dir.latest_checkpoint()
    if checkpoint is None or not run_dir.vocab_path.exists():
        raise RunError(f"--resume {run_dir.path}: no checkpoint there to resume from")
    if run_dir.config_path.exists():
        check_resumable(config, load_config(run_dir.config_path))
    return checkpoint


def check_resumable(config: Config, saved: Config) -> None:
    """Refuse a resume whose config changes the model, the data or the optimizer."""
    new, old = flatten(config.to_dict()), flatten(saved.to_dict())
    changed = [k for k in new if new[k] != old.get(k) and k not in RESUMABLE_CHANGES
               and not k.startswith("sample.")]
    if changed:
        k = changed[0]
        raise ConfigError(f"--resume: {k} is {new[k]!r} here but {old.get(k)!r} in the run; "
                          f"a resumed run keeps its model, data and optimizer settings "
                          f"(only {', '.join(sorted(RESUMABLE_CHANGES))} may change)")


def flatten(tree: dict) -> dict:
    return {f"{section}.{k}": v for section, values in tree.items() for k, v in values.items()}


def check_memory(config: Config, vocab_size: int) -> None:
    """Refuse, with the estimate, a model that cannot fit in this machine's memory."""
    need = estimated_bytes(config.model, vocab_size, config.train.batch_size,
                           config.train.seq_length)
    total = physical_memory_bytes()
    if total and need > MEMORY_LIMIT_FRACTION * total:
        raise ConfigError(f"this model needs about {need / 2**30:.1f} GiB to train but the "
                          f"machine has {total / 2**30:.1f} GiB; lower model.units, "
                          f"model.layers, train.batch_size or train.seq_length")


def physical_memory_bytes() -> int | None:
    try:
        import os
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def model_file_bytes(model: keras.Model) -> int:
    """A checkpoint holds the weights and (Adam) two optimizer slots, in float32."""
    return 3 * 4 * parameter_count(model) + 1_000_000


def load_or_build(config: Config, vocab_size: int, checkpoint: Path | None,
                  total_steps: int, jit: bool) -> keras.Model:
    if checkpoint is not None:
        model = load_training_model(checkpoint / "model.keras", config.model.implementation)
        model.jit_compile = jit  # the device may have changed since the checkpoint
        return model
    contiguous = config.train.windows == "contiguous"
    model = build_model(config.model, vocab_size, config.train.seed,
                        stateful_batch_size=config.train.batch_size if contiguous else None)
    model.compile(optimizer=build_optimizer(config, total_steps),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    return model


def load_training_model(path: Path, implementation: str) -> keras.Model:
    from charlm.checkpoint import load_model
    return load_model(path, compile=True, implementation=implementation)


def build_optimizer(config: Config, total_steps: int) -> keras.optimizers.Optimizer:
    train_config = config.train
    rate = learning_rate_schedule(train_config, total_steps)
    clip = {"global_clipnorm": train_config.clip_norm} if train_config.clip_norm > 0 else {}
    if train_config.optimizer == "adam":
        return keras.optimizers.Adam(rate, **clip)
    if train_config.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=train_config.weight_decay, **clip)
    if train_config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(rate, **clip)
    return keras.optimizers.SGD(rate, momentum=0.9, **clip)


def learning_rate_schedule(train_config, total_steps: int):
    rate = train_config.learning_rate
    if train_config.anneal_over == "time_budget":
        return time_annealed_rate(train_config, 0, 0.0)  # then set per step by a callback
    if train_config.schedule == "cosine":
        warmup = min(train_config.warmup_steps, total_steps - 1)
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else rate,
            decay_steps=max(1, total_steps - warmup), alpha=train_config.min_lr_fraction,
            warmup_target=rate if warmup else None, warmup_steps=warmup)
    if train_config.schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            rate, decay_steps=train_config.decay_steps, decay_rate=train_config.decay_rate)
    return rate


def resolve_total_steps(config: Config, train_chars: int) -> int:
    if config.train.epochs is not None:
        per_step = config.train.batch_size * config.train.seq_length
        return max(1, math.ceil(config.train.epochs * train_chars / per_step))
    return config.train.steps or DEFAULT_STEPS


def reporter_progress(reporter):
    return getattr(reporter, "corpus_progress", None)


# ---------------------------------------------------------------- the loop

def run_loop(run: Run, model: keras.Model, prepared, total: int) -> TrainResult:
    config = run.config.train
    val_data = evaluation_dataset(prepared.val, config.batch_size, config.eval_length) \
        if prepared.val is not None else None
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
        lambda rows: training_dataset(prepared.train, config.batch_size, config.seq_length,
                                      config.seed, start, stop, config.windows, rows),
        config.batch_size)
    callbacks = [StepMonitor(run, start, stop_mid_segment=not is_multi_worker(model))]
    if config.anneal_over == "time_budget":
        callbacks.append(TimeAnnealedLearningRate(run, start))
    model.fit(data, steps_per_epoch=stop - start, epochs=1, verbose=0, shuffle=False,
              callbacks=callbacks)
    run.state.step = int(model.optimizer.iterations.numpy())
    return callbacks[0].segment_loss


def evaluate_and_save(run: Run, model, val_data, train_loss: float) -> None:
    state, config = run.state, run.config.train
    stateless = model
    if run.eval_model is not None:
        run.eval_model.set_weights(model.get_weights())
        stateless = run.eval_model
    val_loss = float(stateless.evaluate(val_data, verbose=0, return_dict=True)["loss"]) \
        if val_data is not None else None
    improved = val_loss is None or state.best_val_loss is None or val_loss < state.best_val_loss
    if improved:
        state.best_val_loss, state.best_step, state.evals_since_best = val_loss, state.step, 0
    else:
        state.evals_since_best += 1
    state.elapsed_s = run.elapsed()
    state.rng_states = rng_states(model)
    run.run_dir.save_checkpoint(model, state, config.keep_checkpoints, recurrent_states(model))
    if improved:
        run.run_dir.save_best(stateless)
    record = {"step": state.step, "train_loss": nan_to_none(train_loss), "val_loss": val_loss,
              "learning_rate": current_learning_rate(model), "elapsed_s": round(state.elapsed_s, 2)}
    run.run_dir.append_history(record)
    run.reporter.evaluated(state.step, val_loss)
    patience = config.early_stopping_patience
    if patience and state.evals_since_best >= patience and not run.stop.reason:
        run.stop.reason = "early stopping"


def is_multi_worker(model) -> bool:
    return isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy)


def agree_to_stop(strategy, reason: str | None) -> bool:
    """Whether to stop now; under several workers, if any of them wants to (all-reduce)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return reason is not None
    return float(stop_vote(strategy)(tf.constant(1.0 if reason else 0.0))) > 0


@functools.lru_cache(maxsize=None)
def stop_vote(strategy):
    """How many workers want to stop (compiled once: eager collectives are slow)."""
    @tf.function
    def vote(wants):
        return strategy.reduce("SUM", strategy.run(tf.identity, args=(wants,)), axis=None)
    return vote


def current_learning_rate(model) -> float:
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    rate = optimizer.learning_rate
    return float(rate.numpy() if hasattr(rate, "numpy") else rate)


def nan_to_none(value: float):
    return None if value is None or not math.isfinite(value) else value


def nonfinite_message(run: Run) -> str:
    kept = run.run_dir.latest_checkpoint()
    kept_text = f"the last good checkpoint {kept} is kept" if kept else "nothing was saved"
    return (f"the training loss became non-finite (NaN or inf) at step {run.nonfinite_step}; "
            f"{kept_text}; lower train.learning_rate or train.clip_norm and resume")


class signal_handlers:
    """SIGINT and SIGTERM request a stop at the next step boundary (main thread only)."""

    def __init__(self, stop: StopRequest):
        self.stop = stop
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self.stop.handle_signal)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
