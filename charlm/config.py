"""Typed, validated configuration: YAML file + `--set key=value` overrides.

Every key is declared once, below, with its type, default, allowed range and
help text. The README's table of keys and all validation come from this one
declaration, so they cannot drift apart.

    >>> cfg = load_config(None, ["model.cell=gru", "train.steps=10"])
    >>> cfg.model.cell, cfg.train.steps
    ('gru', 10)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config problem a user can fix; the message names the key."""


def key(default, help, choices=None, minimum=None, maximum=None, kind=None, optional=False):
    """Declare a config key: its default, help text and allowed values."""
    meta = dict(help=help, choices=choices, minimum=minimum, maximum=maximum,
                kind=kind or type(default).__name__, optional=optional)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    corpus: Any = key("builtin:pydoc", "Training text: a file, a directory, a glob, or a list of "
                      "them (UTF-8, .gz allowed). `builtin:pydoc` is the English reference text "
                      "that ships inside every CPython.", kind="paths")
    val_corpus: Any = key(None, "Separate validation text (same forms as `corpus`). When unset, "
                          "the last `val_fraction` of the corpus is held out.",
                          kind="paths", optional=True)
    val_fraction: float = key(0.1, "Fraction of the corpus (its end, contiguous) held out for "
                              "validation when `val_corpus` is unset.", minimum=0.0, maximum=0.5)
    val_max_chars: int = key(1_000_000, "At most this many validation characters are evaluated, "
                             "so evaluation time does not grow with the corpus.", minimum=1)
    encoding_errors: str = key("strict", "Invalid UTF-8: `strict` stops with the file and byte "
                               "offset; `replace` substitutes U+FFFD.", choices=["strict", "replace"])


@dataclass
class ModelConfig:
    cell: str = key("lstm", "Recurrent cell.", choices=["simple_rnn", "lstm", "gru"])
    layers: int = key(2, "Number of stacked recurrent layers.", minimum=1, maximum=64)
    units: int = key(512, "Units per recurrent layer.", minimum=1, maximum=65536)
    embedding_dim: int = key(64, "Size of the character embedding.", minimum=1, maximum=65536)
    dropout: float = key(0.0, "Dropout between layers (on each recurrent layer's output).",
                         minimum=0.0, maximum=0.95)
    implementation: str = key("fused", "How the recurrent layers run: `fused` (charlm's fused "
                              "loop with a custom gradient on a CPU, Keras's cuDNN kernels on "
                              "a GPU) or `stock` (Keras's own loop everywhere). Same layers, "
                              "weights and files either way; may change on resume.",
                              choices=["fused", "stock"])


@dataclass
class TrainConfig:
    run_dir: str = key("runs/default", "Where checkpoints, vocabulary, history and logs go. "
                       "Unset in a config file: `runs/<config file name>`.")
    batch_size: int = key(64, "Sequences per step (the global batch under distribution).",
                          minimum=1, maximum=1_000_000)
    seq_length: int = key(100, "Characters per sequence (steps of backprop through time).",
                          minimum=1, maximum=1_000_000)
    steps: int = key(None, "Training steps. Give `steps` or `epochs` (default 1000 steps).",
                     minimum=1, kind="int", optional=True)
    epochs: float = key(None, "Passes over the training text, converted to steps.",
                        minimum=0.0, kind="float", optional=True)
    time_budget_s: float = key(None, "Wall-clock budget in seconds: training stops cleanly at "
                               "the budget, evaluates and saves.", minimum=0.0, kind="float",
                               optional=True)
    optimizer: str = key("adam", "Optimizer.", choices=["adam", "adamw", "rmsprop", "sgd"])
    learning_rate: float = key(2e-3, "Peak learning rate.", minimum=0.0, maximum=10.0)
    schedule: str = key("constant", "Learning-rate schedule after warm-up.",
                        choices=["constant", "cosine", "exponential"])
    warmup_steps: int = key(0, "Linear warm-up steps (cosine schedule).", minimum=0)
    anneal_over: str = key("steps", "Cosine: what the schedule runs over, the run's steps or "
                           "`time_budget` (the share of train.time_budget_s used: the rate "
                           "reaches its end at the budget on a fast or slow machine alike, "
                           "but a run is then not bit-reproducible).",
                           choices=["steps", "time_budget"])
    min_lr_fraction: float = key(0.1, "Cosine: final learning rate as a fraction of the peak.",
                                 minimum=0.0, maximum=1.0)
    decay_steps: int = key(1000, "Exponential: steps over which the rate is multiplied by "
                           "`decay_rate`.", minimum=1)
    decay_rate: float = key(0.5, "Exponential: factor per `decay_steps`.", minimum=0.0,
                            maximum=1.0)
    weight_decay: float = key(0.01, "AdamW weight decay.", minimum=0.0, maximum=1.0)
    clip_norm: float = key(5.0, "Global-norm gradient clipping (0 turns it off).", minimum=0.0)
    seed: int = key(0, "Seed for initialisation, data order and dropout.", minimum=0)
    windows: str = key("random", "`random`: each sequence starts at a random place (as nanoGPT). "
                       "`contiguous`: row i of step n+1 continues where row i of step n "
                       "ended and the recurrent state is carried across steps (truncated "
                       "backprop through time, as char-rnn); reset at each pass over the text.",
                       choices=["random", "contiguous"])
    eval_interval: int = key(200, "Steps between validation evaluations and checkpoints.",
                             minimum=1)
    eval_seq_length: int = key(None, "Characters per validation window; each window is read "
                               "from a fresh state and every character of it is scored, as "
                               "nanoGPT scores its block (256 in its Shakespeare recipe). "
                               "Unset: train.seq_length. `charlm eval` uses it too.",
                               minimum=1, maximum=1_000_000, kind="int", optional=True)
    keep_checkpoints: int = key(2, "How many of the latest checkpoints to keep (the best one "
                                "is kept besides).", minimum=1)
    early_stopping_patience: int = key(None, "Stop after this many evaluations without a new "
                                       "best validation loss.", minimum=1, kind="int",
                                       optional=True)
    precision: str = key("auto", "`auto` is mixed_float16 on a GPU and float32 on a CPU.",
                         choices=["auto", "float32", "mixed_float16", "mixed_bfloat16"])
    distribute: str = key("auto", "`none`: one device. `mirrored`: all GPUs of this machine "
                          "(tf.distribute.MirroredStrategy). `multi_worker`: several machines "
                          "configured by TF_CONFIG (MultiWorkerMirroredStrategy). `auto`: "
                          "multi_worker when TF_CONFIG names a cluster, mirrored when there "
                          "are several GPUs, else none.",
                          choices=["auto", "none", "mirrored", "multi_worker"])
    jit_compile: str = key("auto", "XLA compilation of the training step. `auto` is off: "
                           "measured slower on CPU with oneDNN here, and cuDNN layers cannot "
                           "be compiled. `on` tries it (one device only).",
                           choices=["auto", "on", "off"])

    @property
    def eval_length(self) -> int:
        """The validation window: eval_seq_length, or seq_length when that is unset."""
        return self.eval_seq_length or self.seq_length


@dataclass
class SampleConfig:
    length: int = key(500, "Characters to generate.", minimum=0)
    temperature: float = key(0.8, "Softmax temperature (0 means argmax).", minimum=0.0)
    top_k: int = key(0, "Sample from the k most likely characters (0: all).", minimum=0)
    top_p: float = key(1.0, "Nucleus sampling: smallest set with this probability mass.",
                       minimum=0.0, maximum=1.0)
    prime: str = key("", "Text the model reads before generating.")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {f.name: f.type for f in fields(Config)}
SECTION_CLASSES = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                   "sample": SampleConfig}
DEFAULT_STEPS = 1000


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (or defaults when `path` is None), apply overrides, validate."""
    raw = read_yaml(path) if path is not None else {}
    for override in overrides:
        apply_override(raw, override)
    config = config_from_dict(raw)
    if path is not None and "run_dir" not in (raw.get("train") or {}):
        config.train.run_dir = f"runs/{Path(path).stem}"  # a run per config file
    return config


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found: give the path of a YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: "
                          f"{getattr(error, 'problem', None) or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must be a mapping of sections "
                          f"(data, model, train, sample), not a {type(raw).__name__}")
    return raw


def apply_override(raw: dict, override: str) -> None:
    """Apply one `section.key=value` override; the value is parsed as YAML."""
    name, sep, text = override.partition("=")
    parts = name.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {override!r}: write it as section.key=value, "
                          f"e.g. --set model.cell=gru")
    section, name = parts
    check_known(section, SECTIONS, "config section")
    check_known(name, field_names(SECTION_CLASSES[section]), f"key in section {section!r}",
                prefix=f"{section}.")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    section_dict = raw.setdefault(section, {})
    if not isinstance(section_dict, dict):
        raise ConfigError(f"config section {section!r} must be a mapping")
    section_dict[name] = value


def config_from_dict(raw: dict) -> Config:
    sections = {}
    for section, value in raw.items():
        check_known(section, SECTIONS, "config section")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"config section {section!r} must be a mapping of keys, "
                              f"got {value!r}")
        sections[section] = section_from_dict(section, value)
    config = Config(**sections)
    check_cross_field(config)
    return config


def section_from_dict(section: str, values: dict):
    cls = SECTION_CLASSES[section]
    known = {f.name: f for f in fields(cls)}
    checked = {}
    for name, value in values.items():
        check_known(str(name), list(known), f"key in section {section!r}", prefix=f"{section}.")
        checked[name] = check_value(f"{section}.{name}", value, known[name].metadata)
    return cls(**checked)


def field_names(cls) -> list[str]:
    return [f.name for f in fields(cls)]


def check_known(name: str, known, what: str, prefix: str = "") -> None:
    if name in known:
        return
    close = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f"did you mean {prefix}{close[0]}?" if close else \
        f"valid: {', '.join(prefix + k for k in known)}"
    raise ConfigError(f"unknown {what} {prefix}{name!r}: {hint}")


def check_value(name: str, value, meta) -> Any:
    """Return `value` converted to the declared kind, or raise a ConfigError naming `name`."""
    if value is None:
        if meta["optional"]:
            return None
        raise ConfigError(f"{name} must be set (got an empty value)")
    kind = meta["kind"]
    if kind == "paths":
        return check_paths(name, value)
    if isinstance(value, bool) and meta["choices"] and "on" in meta["choices"]:
        value = "on" if value else "off"  # YAML 1.1 reads a bare on/off as a boolean
    value = check_kind(name, value, kind)
    if meta["choices"] and value not in meta["choices"]:
        close = difflib.get_close_matches(str(value), meta["choices"], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{name} must be one of {', '.join(meta['choices'])}; "
                          f"got {value!r}{hint}")
    if meta["minimum"] is not None and value < meta["minimum"] or \
            meta["maximum"] is not None and value > meta["maximum"]:
        raise ConfigError(f"{name} must be {describe_range(meta)}; got {value!r}")
    return value


def check_kind(name: str, value, kind: str):
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name} must be a whole number; got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number; got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number; got {value!r}")
        return float(value)
    if kind == "str":
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{name} must be text; got {value!r}")
        return str(value)
    raise AssertionError(f"undeclared kind {kind}")


def check_paths(name: str, value):
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return value
    raise ConfigError(f"{name} must be a path, a glob or a list of them; got {value!r}")


def describe_range(meta) -> str:
    low, high = meta["minimum"], meta["maximum"]
    if low is not None and high is not None:
        return f"between {low} and {high}"
    if low == 1:
        return "a positive whole number" if meta["kind"] == "int" else "at least 1"
    return f"at least {low}" if low is not None else f"at most {high}"


def check_cross_field(config: Config) -> None:
    train = config.train
    if train.steps is not None and train.epochs is not None:
        raise ConfigError("train.steps and train.epochs are both set: keep one of them")
    if train.epochs is not None and train.epochs <= 0:
        raise ConfigError(f"train.epochs must be positive; got {train.epochs}")
    if train.time_budget_s is not None and train.time_budget_s <= 0:
        raise ConfigError(f"train.time_budget_s must be positive; got {train.time_budget_s}")
    if train.anneal_over == "time_budget" and (train.schedule != "cosine"
                                               or train.time_budget_s is None):
        raise ConfigError("train.anneal_over: time_budget needs train.schedule: cosine and a "
                          "train.time_budget_s")
    if config.sample.top_p == 0:
        raise ConfigError("sample.top_p must be above 0 (1 keeps every character)")


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True),
                    encoding="utf-8")


def config_keys_markdown() -> str:
    """The README's table of config keys, made from the declarations above."""
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for section, cls in SECTION_CLASSES.items():
        for f in fields(cls):
            meta = f.metadata
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            allowed = ", ".join(meta["choices"]) if meta["choices"] else \
                (describe_range(meta) if meta["minimum"] is not None or meta["maximum"] is not None
                 else meta["kind"])
            rows.append(f"| `{section}.{f.name}` | `{default}` | {allowed} | {meta['help']} |")
    return "\n".join(rows)


def update_readme(path: Path) -> None:
    """Rewrite the README's table of config keys from the declarations above."""
    text = path.read_text(encoding="utf-8")
    start = text.index("-->", text.index("<!-- keys:")) + len("-->\n")
    end = text.index("\n<!-- /keys -->")
    path.write_text(text[:start] + config_keys_markdown() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    update_readme(Path(__file__).resolve().parent.parent / "README.md")
