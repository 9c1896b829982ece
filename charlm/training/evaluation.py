"""After each training segment: validate, keep the best-validation record, checkpoint,
log the evaluation (with the gradients' health and the timeline's sample), and decide on
early stopping."""

from __future__ import annotations

import hashlib
import math

from charlm.model.build import recurrent_states, rng_states
from charlm.run.rundir import checkpoint_model
from charlm.training.distribute import is_chief
from charlm.training.optimizer import current_learning_rate


def evaluate_and_save(run, model, val_data, train_loss: float) -> None:
    """`run` is the loop's Run; `model` the model being trained."""
    evaluated = stateless_twin(run, model)
    val_loss = (
        float(evaluated.evaluate(val_data, verbose=0, return_dict=True)["loss"])
        if val_data is not None
        else None
    )
    improved = update_best(run.state, val_loss)
    # Zeroed at the scheduled steps only, before the checkpoint keeps them (see
    # gradient_health): a resumed run then sums what an uninterrupted one does.
    gradients = run.gradient_health.report(
        reset=run.state.step % run.config.train.eval_interval == 0
    )
    save(run, model, evaluated, improved)
    timeline = run.timeline.sample(evaluated, run.vocab) if is_chief() else None
    log_evaluation(run, model, train_loss, val_loss, gradients, timeline)
    patience = run.config.train.early_stopping_patience
    if patience and run.state.evals_since_best >= patience and not run.stop.reason:
        run.stop.reason = "early stopping"


def stateless_twin(run, model):
    """The model to evaluate and to save as model.keras: the trained one, or (contiguous
    training) its stateless twin with the same weights."""
    if run.eval_model is None:
        return model
    run.eval_model.set_weights(model.get_weights())
    return run.eval_model


def update_best(state, val_loss: float | None) -> bool:
    """Record a new best validation loss; whether this evaluation is the best so far."""
    improved = val_loss is None or state.best_val_loss is None or val_loss < state.best_val_loss
    if improved:
        state.best_val_loss, state.best_step, state.evals_since_best = val_loss, state.step, 0
    else:
        state.evals_since_best += 1
    return improved


def save(run, model, evaluated, improved: bool) -> None:
    """A checkpoint for resuming (with every random and carried state), and model.keras
    when this is the best model so far."""
    run.state.elapsed_s = run.elapsed()
    run.state.rng_states = rng_states(model)
    run.state.gradient_health = run.gradient_health.state()
    checkpoint = run.run_dir.save_checkpoint(
        model, run.state, run.config.train.keep_checkpoints, recurrent_states(model)
    )
    if improved:
        same_model = evaluated is model and checkpoint is not None
        run.run_dir.save_best(evaluated, checkpoint_model(checkpoint) if same_model else None)


def log_evaluation(
    run, model, train_loss: float, val_loss: float | None, gradients: dict, timeline: str | None
) -> None:
    state = run.state
    record = {
        "step": state.step,
        "train_loss": nan_to_none(train_loss),
        "val_loss": val_loss,
        "learning_rate": current_learning_rate(model),
        "elapsed_s": round(state.elapsed_s, 2),
        "train_chars_per_s": run.train_chars_per_s and round(run.train_chars_per_s),
        **gradients,
        "val_digest": run.val_digest,
    }
    if timeline is not None:
        record["timeline"] = timeline
    run.run_dir.append_history(record)
    run.reporter.evaluated(state.step, val_loss)


def nan_to_none(value: float):
    return None if value is None or not math.isfinite(value) else value


def validation_digest(prepared) -> str | None:
    """A short digest of the validation text: runs with the same one were validated on
    the same characters, so their losses compare."""
    val = prepared.val
    if val is None:
        return None
    text = prepared.vocab.decode(val.tokens.read(val.start, len(val)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
