"""The runs a comparison is made of: config files trained first, one after another, and
run directories read as they are; then, for each, the facts the report shows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from charlm.errors import RunError

LN2 = math.log(2)


@dataclass
class RunSummary:
    """One row of the comparison, and the curves and texts under it."""

    name: str
    path: Path
    cell: str
    layers: int
    units: int
    parameters: int
    steps: int
    train_chars_per_s: float | None
    wall_s: float
    best_val_loss: float | None
    best_step: int | None
    history: list[dict]
    val_digest: str | None
    sample: str = ""
    timeline: list[tuple[int, str]] = field(default_factory=list)

    @property
    def best_bits(self) -> float | None:
        """The best validation loss in bits per character; None before any evaluation."""
        return None if self.best_val_loss is None else self.best_val_loss / LN2


def is_config(source: Path) -> bool:
    return source.is_file() and source.suffix in (".yaml", ".yml")


def check_sources(sources: list[Path]) -> None:
    """Refuse, before anything is trained, a source that is neither a config file nor a
    run directory."""
    for source in sources:
        if is_config(source):
            continue
        if not source.is_dir():
            raise RunError(
                f"{source}: no such run directory or config file; give run directories "
                f"(as `charlm train` makes) or YAML configs"
            )
        if not (source / "history.jsonl").is_file():
            raise RunError(
                f"{source} is not a trained charlm run (it has no history.jsonl); give a run "
                f"directory `charlm train` wrote, or a YAML config to train"
            )


def run_names(sources: list[Path]) -> list[str]:
    """A distinct short name per source: its file or directory name."""
    names = []
    for source in sources:
        name = source.stem if is_config(source) else source.name
        names.append(name if name not in names else f"{name}-{len(names) + 1}")
    return names


def train_configs(
    sources: list[Path], names: list[str], overrides: list[str], runs_dir: Path, make_reporter
) -> list[Path]:
    """Train every config among `sources` (each with `overrides`) into runs_dir/<name>;
    returns the run directory of every source, in order. All configs are loaded (and
    checked) before the first one trains."""
    from charlm.config import load_config

    configs = {
        index: load_config(source, overrides)
        for index, source in enumerate(sources)
        if is_config(source)
    }
    paths = []
    for index, source in enumerate(sources):
        if index not in configs:
            paths.append(source)
            continue
        config = configs[index]
        config.train.run_dir = str(runs_dir / names[index])
        from charlm.training.loop import train

        paths.append(train(config, reporter=make_reporter(names[index])).run_dir)
    return paths


def summarise(name: str, path: Path, prime: str, sample_length: int, seed: int) -> RunSummary:
    """The facts of one trained run, and its sample from `prime` and `seed`."""
    from charlm.model.build import parameter_count
    from charlm.run.load import load_checkpoint
    from charlm.run.rundir import RunDir
    from charlm.training.timeline import timeline_of

    loaded = load_checkpoint(path)
    history = RunDir(path).history()
    if not history:
        raise RunError(f"{path} has an empty history.jsonl: train it first")
    state = loaded.state
    best_loss, best_step = best_record(state, history)
    model_config = loaded.config.model
    return RunSummary(
        name=name,
        path=Path(path),
        cell=model_config.cell,
        layers=model_config.layers,
        units=model_config.units,
        parameters=parameter_count(loaded.model),
        steps=state.step if state else history[-1]["step"],
        train_chars_per_s=training_speed(history, loaded.config.train),
        wall_s=state.elapsed_s if state else history[-1]["elapsed_s"],
        best_val_loss=best_loss,
        best_step=best_step,
        history=history,
        val_digest=history[-1].get("val_digest"),
        sample=run_sample(loaded, prime, sample_length, seed),
        timeline=timeline_of(history),
    )


def best_record(state, history: list[dict]) -> tuple[float | None, int | None]:
    """The best validation loss and its step, as `charlm info` reads them (the latest
    checkpoint's state), else from the history."""
    if state is not None:
        return state.best_val_loss, state.best_step
    scored = [h for h in history if h.get("val_loss") is not None]
    best = min(scored, key=lambda h: h["val_loss"], default=None)
    return (best["val_loss"], best["step"]) if best else (None, None)


def training_speed(history: list[dict], train_config) -> float | None:
    """Characters trained per second of training (model.fit alone, evaluations left
    out), over the whole run: each segment's characters over its time."""
    chars_per_step = train_config.batch_size * train_config.seq_length
    chars = seconds = 0.0
    previous = 0
    for record in history:
        steps, previous = record["step"] - previous, record["step"]
        rate = record.get("train_chars_per_s")
        if rate and steps > 0:
            chars += steps * chars_per_step
            seconds += steps * chars_per_step / rate
    return chars / seconds if seconds else None


def run_sample(loaded, prime: str, length: int, seed: int) -> str:
    """`length` characters from the run's best model after `prime`, from `seed`, with
    the default sampling settings (the same for every run)."""
    if length == 0:
        return prime
    from charlm.config import Config
    from charlm.training.timeline import sample_text

    return sample_text(loaded.model, loaded.vocab, Config().sample, prime, length, seed)


def validation_warning(summaries: list[RunSummary]) -> str | None:
    """A warning when the runs were not validated on the same text (their losses then do
    not compare), naming each group."""
    digests = {summary.val_digest for summary in summaries}
    if len(digests) <= 1 and None not in digests:
        return None
    groups: dict = {}
    for summary in summaries:
        groups.setdefault(summary.val_digest, []).append(summary.name)
    described = "; ".join(
        ", ".join(names) + (f" ({digest})" if digest else " (not recorded)")
        for digest, names in groups.items()
    )
    return (
        f"the runs were not validated on the same text, so their losses may not compare: "
        f"{described}"
    )
