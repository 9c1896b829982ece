"""The training timeline: at each evaluation, a short sample from a fixed prime and seed
goes into history.jsonl, so that a run can be watched learning words, then lines, then
style. Every sample of a run is made with the same settings; only the weights change."""

from __future__ import annotations

from charlm.config import Config

TIMELINE_SEED = 0  # the seed when the config's sample section sets none


class Timeline:
    """A run's timeline samples, made by one generator compiled at the first evaluation:
    its weights are variables read again from the model at each one (CharacterStep's
    `live`), so no evaluation waits for XLA to compile."""

    def __init__(self, config: Config):
        self.config = config
        self.generator = None

    def sample(self, model, vocab) -> str | None:
        """`config.train.timeline_length` characters from `model` (the stateless model
        `charlm sample` would load) as it is now, after the sample section's prime; None
        when the timeline is off.

        Args:
            model: the model being trained (or its stateless twin), the same object at
                every call.
            vocab: the run's Vocabulary.
        """
        length = self.config.train.timeline_length
        if not length:
            return None
        if self.generator is None:
            from charlm.generate import Sampler
            from charlm.textgen import TextGenerator

            sampler = Sampler(model, vocab, live=True)
            self.generator = TextGenerator(model, vocab, self.config.sample, sampler)
        else:
            self.generator.sampler.model_step.refresh()
        settings = self.config.sample
        seed = TIMELINE_SEED if settings.seed is None else settings.seed
        generator = self.generator
        return generator.generate(settings.prime, generator.settings(length=length, seed=seed))[0]


def sample_text(model, vocab, defaults, prime: str, length: int, seed: int) -> str:
    """`prime` (the part of it the vocabulary knows) and `length` characters generated
    after it from `seed`; temperature, top_k and top_p from `defaults` (a sample config
    section)."""
    from charlm.textgen import TextGenerator

    generator = TextGenerator(model, vocab, defaults)
    return generator.generate(prime, generator.settings(length=length, seed=seed))[0]


def timeline_of(history: list[dict]) -> list[tuple[int, str]]:
    """The timeline a run's history holds: (step, sample) at each evaluation that made one."""
    return [(record["step"], record["timeline"]) for record in history if "timeline" in record]
