"""Every config key, declared once: its type, default, allowed values and help text.

docs/config.md's table of keys (docs.py) and all validation (load.py) come from these
declarations, so they cannot drift apart. The YAML uses Keras's names where Keras has one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from charlm.errors import ConfigError

SEED_LIMIT = 2**62  # seeds live below this: a stream's seed arithmetic stays in int64


def key(
    default, help, choices=None, minimum=None, maximum=None, kind=None, optional=False, above=None
):
    """Declare a config key: its default, help text and allowed values (`above`: a
    lower bound the value must exceed)."""
    meta = dict(
        help=help,
        choices=choices,
        minimum=minimum,
        maximum=maximum,
        above=above,
        kind=kind or type(default).__name__,
        optional=optional,
    )
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


class Section:
    """A config section: every value is checked against its declaration when the section
    is made, however it is made (a file, a dict, the Python API), and kept as converted."""

    def __post_init__(self):
        from charlm.config.load import check_value

        section = SECTION_NAMES[type(self).__name__]
        for declared in dataclasses.fields(self):
            value = getattr(self, declared.name)
            name = f"{section}.{declared.name}"
            try:
                setattr(self, declared.name, check_value(name, value, declared.metadata))
            except ConfigError as error:
                error.setting = name
                raise


@dataclass
class DataConfig(Section):
    """The data section: the training text and how it is read and split (docs/config.md)."""

    corpus: Any = key(
        "builtin:pydoc",
        "Training text: a file, a directory, a glob, or a list of them (UTF-8, .gz allowed). "
        "`builtin:pydoc` is the English reference text that ships inside every CPython.",
        kind="paths",
    )
    val_corpus: Any = key(
        None,
        "Separate validation text (same forms as `corpus`). When unset, "
        "the last `val_fraction` of the corpus is held out.",
        kind="paths",
        optional=True,
    )
    val_fraction: float = key(
        0.1,
        "Fraction of the corpus (its end, contiguous) held out for "
        "validation when `val_corpus` is unset.",
        minimum=0.0,
        maximum=0.5,
    )
    val_max_chars: int = key(
        1_000_000,
        "At most this many validation characters are evaluated, so evaluation time "
        "does not grow with the corpus.",
        minimum=1,
    )
    encoding_errors: str = key(
        "strict",
        "Invalid UTF-8: `strict` stops with the file and byte "
        "offset; `replace` substitutes U+FFFD.",
        choices=["strict", "replace"],
    )


@dataclass
class ModelConfig(Section):
    """The model section: the cell, its size and the loop that runs it (docs/config.md)."""

    cell: str = key("lstm", "Recurrent cell.", choices=["simple_rnn", "lstm", "gru"])
    layers: int = key(2, "Number of stacked recurrent layers.", minimum=1, maximum=64)
    units: int = key(512, "Units per recurrent layer.", minimum=1, maximum=65536)
    embedding_dim: int = key(64, "Size of the character embedding.", minimum=1, maximum=65536)
    dropout: float = key(
        0.0, "Dropout between layers (on each recurrent layer's output).", minimum=0.0, maximum=0.95
    )
    implementation: str = key(
        "fused",
        "How the recurrent layers run: `fused` (charlm's fused loop with a custom gradient "
        "on a CPU, Keras's cuDNN kernels on a GPU) or `stock` (Keras's own loop everywhere). "
        "Same layers, weights and files either way; may change on resume.",
        choices=["fused", "stock"],
    )


@dataclass
class TrainConfig(Section):
    """The train section: the run directory, steps, optimizer, windows and devices."""

    run_dir: str = key(
        "runs/default",
        "Where checkpoints, vocabulary, history and logs go. "
        "Unset in a config file: `runs/<config file name>`.",
    )
    init_from: str = key(
        None,
        "Fine-tuning: start this new run from the weights of a trained run (its best "
        "model; or a checkpoint directory or `.keras` file in it). The model settings "
        "`cell`, `layers`, `units` and `embedding_dim` must match it; its vocabulary is "
        "kept, the corpus's new characters appended; optimizer, step and schedule start "
        "afresh. A resume ignores it.",
        kind="str",
        optional=True,
    )
    batch_size: int = key(
        64,
        "Sequences per step (the global batch under distribution).",
        minimum=1,
        maximum=1_000_000,
    )
    seq_length: int = key(
        100,
        "Characters per sequence (steps of backprop through time).",
        minimum=1,
        maximum=1_000_000,
    )
    steps: int = key(
        None,
        "Training steps. Give `steps` or `epochs` (default 1000 steps).",
        minimum=1,
        kind="int",
        optional=True,
    )
    epochs: float = key(
        None,
        "Passes over the training text, converted to steps.",
        above=0.0,
        kind="float",
        optional=True,
    )
    time_budget_s: float = key(
        None,
        "Wall-clock budget in seconds: training stops cleanly at the budget, evaluates and saves.",
        above=0.0,
        kind="float",
        optional=True,
    )
    optimizer: str = key("adam", "Optimizer.", choices=["adam", "adamw", "rmsprop", "sgd"])
    learning_rate: float = key(2e-3, "Peak learning rate.", minimum=0.0, maximum=10.0)
    schedule: str = key(
        "constant",
        "Learning-rate schedule after warm-up.",
        choices=["constant", "cosine", "exponential"],
    )
    warmup_steps: int = key(0, "Linear warm-up steps (cosine schedule).", minimum=0)
    anneal_over: str = key(
        "steps",
        "Cosine: what the schedule runs over, the run's steps or "
        "`time_budget` (the share of train.time_budget_s used: the rate "
        "reaches its end at the budget on a fast or slow machine alike, "
        "but a run is then not bit-reproducible).",
        choices=["steps", "time_budget"],
    )
    min_lr_fraction: float = key(
        0.1, "Cosine: final learning rate as a fraction of the peak.", minimum=0.0, maximum=1.0
    )
    decay_steps: int = key(
        1000, "Exponential: steps over which the rate is multiplied by `decay_rate`.", minimum=1
    )
    decay_rate: float = key(0.5, "Exponential: factor per `decay_steps`.", minimum=0.0, maximum=1.0)
    weight_decay: float = key(0.01, "AdamW weight decay.", minimum=0.0, maximum=1.0)
    clip_norm: float = key(5.0, "Global-norm gradient clipping (0 turns it off).", minimum=0.0)
    seed: int = key(0, "Seed for initialisation, data order and dropout.", minimum=0)
    windows: str = key(
        "random",
        "`random`: each sequence starts at a random place (as nanoGPT). "
        "`contiguous`: row i of step n+1 continues where row i of step n "
        "ended and the recurrent state is carried across steps (truncated "
        "backprop through time, as char-rnn); reset at each pass over the text.",
        choices=["random", "contiguous"],
    )
    eval_interval: int = key(
        200, "Steps between validation evaluations and checkpoints.", minimum=1
    )
    eval_seq_length: int = key(
        None,
        "Characters per validation window; each window is read "
        "from a fresh state and every character of it is scored, as "
        "nanoGPT scores its block (256 in its Shakespeare recipe). "
        "Unset: train.seq_length. `charlm eval` uses it too. A validation "
        "batch is as many windows as hold twice a training batch's characters, "
        "in whole multiples of train.batch_size (at least one).",
        minimum=1,
        maximum=1_000_000,
        kind="int",
        optional=True,
    )
    keep_checkpoints: int = key(
        2, "How many of the latest checkpoints to keep (the best one is kept besides).", minimum=1
    )
    early_stopping_patience: int = key(
        None,
        "Stop after this many evaluations without a new best validation loss.",
        minimum=1,
        kind="int",
        optional=True,
    )
    timeline_length: int = key(
        200,
        "Characters sampled at each evaluation into history.jsonl (the "
        "training timeline), from the sample section's prime, temperature, "
        "top_k and top_p and a fixed seed (sample.seed, else 0); 0 turns it off.",
        minimum=0,
        maximum=100_000,
    )
    precision: str = key(
        "auto",
        "`auto` is mixed_float16 on a GPU and float32 on a CPU.",
        choices=["auto", "float32", "mixed_float16", "mixed_bfloat16"],
    )
    distribute: str = key(
        "auto",
        "`none`: one device. `mirrored`: all GPUs of this machine "
        "(tf.distribute.MirroredStrategy). `multi_worker`: several machines "
        "configured by TF_CONFIG (MultiWorkerMirroredStrategy). `auto`: "
        "multi_worker when TF_CONFIG names a cluster, mirrored when there "
        "are several GPUs, else none.",
        choices=["auto", "none", "mirrored", "multi_worker"],
    )
    jit_compile: str = key(
        "auto",
        "XLA compilation of the training step. `auto` is off: "
        "measured slower on CPUs with oneDNN, and cuDNN layers cannot "
        "be compiled. `on` tries it (one device only).",
        choices=["auto", "on", "off"],
    )

    @property
    def eval_length(self) -> int:
        """The validation window: eval_seq_length, or seq_length when that is unset."""
        return self.eval_seq_length or self.seq_length

    @property
    def eval_batch_size(self) -> int:
        """Validation windows per batch: whole training batches of rows, as many as hold
        twice a training batch's characters (at least one). An evaluation keeps no
        activations for gradients, so this fits in the memory a training step takes, and
        its products over more rows are faster (docs/decisions.md, eval-batch)."""
        return self.batch_size * max(1, 2 * self.seq_length // self.eval_length)


@dataclass
class SampleConfig(Section):
    """The sample section: the defaults of `charlm sample`, the API and the server."""

    length: int = key(500, "Characters to generate.", minimum=0)
    temperature: float = key(0.8, "Softmax temperature (0 means argmax).", minimum=0.0)
    top_k: int = key(0, "Sample from the k most likely characters (0: all).", minimum=0)
    top_p: float = key(
        1.0, "Nucleus sampling: smallest set with this probability mass.", above=0.0, maximum=1.0
    )
    prime: str = key("", "Text the model reads before generating.")
    num_samples: int = key(1, "Independent samples, generated together.", minimum=1, maximum=4096)
    seed: int = key(
        None,
        "Seed of the first sample (each other sample's follows from it); the same seed, "
        "prime and options give the same text. Unset: a random seed, printed.",
        minimum=0,
        maximum=SEED_LIMIT - 1,
        kind="int",
        optional=True,
    )


@dataclass
class Config:
    """A whole config: its four sections, each checked as it is made."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self):
        from charlm.config.load import check_cross_field

        check_cross_field(self)

    def to_dict(self) -> dict:
        """{section: {key: value}}, plain values only: what a run's config.yaml holds."""
        return dataclasses.asdict(self)


SECTION_CLASSES = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "sample": SampleConfig,
}
SECTION_NAMES = {cls.__name__: name for name, cls in SECTION_CLASSES.items()}
DEFAULT_STEPS = 1000
