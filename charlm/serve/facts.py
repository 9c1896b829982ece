"""`GET /v1/run`: the served run's facts and its validation history, for the playground."""

from __future__ import annotations


def facts(service) -> dict:
    """The run's facts and its validation curve, for the playground page."""
    from charlm.model.build import parameter_count
    from charlm.run.rundir import RunDir

    loaded = service.loaded
    state = loaded.state
    model = loaded.config.model
    history = [
        {
            "step": h["step"],
            "val_loss": h.get("val_loss"),
            "train_loss": h.get("train_loss"),
            "timeline": h.get("timeline"),  # the sample at this evaluation, if any
        }
        for h in RunDir(loaded.run_dir).history()
    ]
    return {
        "model": service.model_id,
        "cell": model.cell,
        "layers": model.layers,
        "units": model.units,
        "embedding_dim": model.embedding_dim,
        "parameters": parameter_count(loaded.model),
        "vocabulary": loaded.vocab.size,
        "steps": state.step if state else None,
        "best_val_loss": state.best_val_loss if state else None,
        "sample": {
            "length": loaded.config.sample.length,
            "temperature": loaded.config.sample.temperature,
            "top_k": loaded.config.sample.top_k,
            "top_p": loaded.config.sample.top_p,
        },
        "max_tokens": service.limits.max_tokens,
        "history": history,
    }
