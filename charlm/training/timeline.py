"""The training timeline: at each evaluation, a short sample from a fixed prime and seed
goes into history.jsonl, so that a run can be watched learning words, then lines, then
style. Every sample of a run is made with the same settings; only the weights change."""

from __future__ import annotations

from charlm.config import Config

TIMELINE_SEED = 0  # the seed when the config's sample section sets none


def timeline_sample(model, vocab, config: Config) -> str | None:
    """`config.train.timeline_length` characters from `model` (stateless: the model
    `charlm sample` would load) after the sample section's prime; None when off."""
    length = config.train.timeline_length
    if not length:
        return None
    settings = config.sample
    seed = TIMELINE_SEED if settings.seed is None else settings.seed
    return sample_text(model, vocab, settings, settings.prime, length, seed)


def sample_text(model, vocab, defaults, prime: str, length: int, seed: int) -> str:
    """`prime` (the part of it the vocabulary knows) and `length` characters generated
    after it from `seed`; temperature, top_k and top_p from `defaults` (a sample config
    section)."""
    from charlm.textgen import TextGenerator

    # A generator reads the weights when it is built: a new one sees the latest weights.
    generator = TextGenerator(model, vocab, defaults)
    return generator.generate(prime, generator.settings(length=length, seed=seed))[0]


def timeline_of(history: list[dict]) -> list[tuple[int, str]]:
    """The timeline a run's history holds: (step, sample) at each evaluation that made one."""
    return [(record["step"], record["timeline"]) for record in history if "timeline" in record]
