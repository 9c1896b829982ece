"""Reading a config: YAML file, `--set section.key=value` overrides, strict validation.

    >>> cfg = load_config(None, ["model.cell=gru", "train.steps=10"])
    >>> cfg.model.cell, cfg.train.steps
    ('gru', 10)

Every error names the key (or the command-line flag) and what it accepts.
"""

from __future__ import annotations

import copy
import difflib
import re
import reprlib
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from charlm.config.schema import SECTION_CLASSES, Config
from charlm.errors import ConfigError
from charlm.files import file_problem, write_atomic


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with YAML 1.2's floats: `3e-4` is a number (YAML 1.1 wants
    `3.0e-4`). Aliases stay references: a "billion laughs" value costs its text only."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str):
    """`text` read as charlm reads every YAML it is given (see ConfigLoader)."""
    return yaml.load(text, Loader=ConfigLoader)


SHOWN = reprlib.Repr()
SHOWN.maxlevel, SHOWN.maxstring, SHOWN.maxother = 3, 60, 60
SHOWN.maxlist = SHOWN.maxtuple = SHOWN.maxdict = SHOWN.maxset = 4
SHOWN_CHARS = 100


def shown(value) -> str:
    """A repr of `value` for an error message, at most SHOWN_CHARS long however large."""
    text = SHOWN.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply `--set` overrides, validate every key.

    Args:
        path: a YAML file of sections (data, model, train, sample), or None for the
            defaults. Without train.run_dir, the run goes to runs/<file's stem>.
        overrides: `section.key=value` strings, each value parsed as YAML.

    Returns:
        The validated Config.

    Raises:
        charlm.errors.ConfigError: naming the file, the key or the override at fault.
    """
    raw = read_yaml(path) if path is not None else {}
    for override in overrides:
        apply_override(raw, override)
    return config_of(raw, path)


def config_of(raw: dict, path: str | Path | None) -> Config:
    """The validated Config of `raw`, read from the YAML file `path` if any."""
    config = config_from_dict(raw)
    if path is not None and "run_dir" not in (raw.get("train") or {}):
        config.train.run_dir = f"runs/{Path(path).stem}"  # a run per config file
    return config


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    problem = file_problem(path)
    if problem:
        raise ConfigError(f"config file {path} {problem}: give the path of a YAML file")
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"config file {path} is not valid YAML{where}: "
            f"{getattr(error, 'problem', None) or error}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {path} must be a mapping of sections "
            f"(data, model, train, sample), not a {type(raw).__name__}"
        )
    return raw


def apply_override(raw: dict, override: str) -> None:
    """Apply one `section.key=value` override; the value is parsed as YAML."""
    name, sep, text = override.partition("=")
    parts = name.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise ConfigError(
            f"--set {shown(override)}: write it as section.key=value, e.g. --set model.cell=gru"
        )
    try:
        value = parse_yaml(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    set_override(raw, name.strip(), value)


def set_override(raw: dict, dotted: str, value) -> None:
    """Set `section.key` of `raw` to `value`, checked later: `--set` and API overrides."""
    parts = dotted.split(".") if isinstance(dotted, str) else []
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {shown(dotted)}: name a key as section.key, e.g. model.cell")
    section, name = parts
    check_known(section, SECTION_CLASSES, "config section")
    check_known(
        name,
        field_names(SECTION_CLASSES[section]),
        f"key in section {section!r}",
        prefix=f"{section}.",
    )
    section_dict = raw.setdefault(section, {})
    if not isinstance(section_dict, dict):
        raise ConfigError(f"config section {section!r} must be a mapping")
    section_dict[name] = value


def build_config(config=None, overrides: dict | None = None) -> Config:
    """A validated Config from any form the Python API accepts.

    Args:
        config: a YAML path, a dict of sections, a Config, or None (the defaults).
        overrides: dotted keys to values ({"train.steps": 2000}), applied as `--set`.

    Returns:
        The validated Config (a new one: `config` is not changed).

    Raises:
        charlm.errors.ConfigError: naming the key at fault.
    """
    if isinstance(config, Config):
        raw = config.to_dict()
    elif isinstance(config, dict):
        raw = copy.deepcopy(config)
    elif config is None or isinstance(config, (str, Path)):
        raw = read_yaml(config) if config is not None else {}
    else:
        raise ConfigError(f"config must be a path, a dict or a Config; got {type(config).__name__}")
    for dotted, value in (overrides or {}).items():
        set_override(raw, dotted, value)
    return config_of(raw, config if isinstance(config, (str, Path)) else None)


def config_from_dict(raw: dict) -> Config:
    sections = {}
    for section, value in raw.items():
        check_known(section, SECTION_CLASSES, "config section")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(
                f"config section {section!r} must be a mapping of keys, got {shown(value)}"
            )
        sections[section] = section_from_dict(section, value)
    return Config(**sections)  # cross-field rules are checked as it is made


def section_from_dict(section: str, values: dict):
    """The section `values` describe; each value is checked as the section is made."""
    cls = SECTION_CLASSES[section]
    known = field_names(cls)
    for name in values:
        check_known(str(name), known, f"key in section {section!r}", prefix=f"{section}.")
    return cls(**values)


def field_names(cls) -> list[str]:
    return [f.name for f in fields(cls)]


def check_known(name: str, known, what: str, prefix: str = "") -> None:
    if name in known:
        return
    close = difflib.get_close_matches(str(name), list(known), n=1)
    hint = (
        f"did you mean {prefix}{close[0]}?"
        if close
        else f"valid: {', '.join(prefix + k for k in known)}"
    )
    raise ConfigError(f"unknown {what} {prefix}{shown(name)}: {hint}")


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
        raise ConfigError(
            f"{name} must be one of {', '.join(meta['choices'])}; got {shown(value)}{hint}"
        )
    low, above, high = meta["minimum"], meta["above"], meta["maximum"]
    if (
        (low is not None and value < low)
        or (above is not None and value <= above)
        or (high is not None and value > high)
    ):
        raise ConfigError(f"{name} must be {describe_range(meta)}; got {shown(value)}")
    return value


def check_kind(name: str, value, kind: str):
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name} must be a whole number; got {shown(value)}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number; got {shown(value)}")
        # An int past a float's range (10**400) cannot be converted, so it is not finite.
        if not -sys.float_info.max <= value <= sys.float_info.max:
            raise ConfigError(f"{name} must be a finite number; got {shown(value)}")
        return float(value)
    if kind == "str":
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{name} must be text; got {shown(value)}")
        return str(value)
    raise AssertionError(f"undeclared kind {kind}")


def check_paths(name: str, value):
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return value
    raise ConfigError(f"{name} must be a path, a glob or a list of them; got {shown(value)}")


def describe_range(meta) -> str:
    """In words: "between 1 and 64", "0 or more", "above 0 and at most 1", ..."""
    low, above, high = meta["minimum"], meta["above"], meta["maximum"]
    if above is not None:
        return f"above {above:g}" + (f" and at most {high:g}" if high is not None else "")
    if low is not None and high is not None:
        return f"between {low} and {high}"
    if low is not None:
        return f"{low:g} or more" if low == 0 else f"at least {low:g}"
    return f"at most {high}"


def has_range(meta) -> bool:
    return any(meta[bound] is not None for bound in ("minimum", "above", "maximum"))


def check_setting(section: str, name: str, value, label: str) -> Any:
    """Validate one value against the declaration of `section.name`.

    Args:
        section, name: the key (`sample`, `top_p`).
        value: the value to check, as a config file would give it.
        label: what an error calls it (a command-line flag, say).

    Returns:
        `value` converted to the declared kind (a whole float becomes an int, ...).

    Raises:
        charlm.errors.ConfigError: naming `label`, its `setting` the key.
    """
    declared = {f.name: f for f in fields(SECTION_CLASSES[section])}[name]
    try:
        return check_value(label, value, declared.metadata)
    except ConfigError as error:
        error.setting = f"{section}.{name}"
        raise


def check_cross_field(config: Config) -> None:
    train = config.train
    if train.steps is not None and train.epochs is not None:
        raise ConfigError("train.steps and train.epochs are both set: keep one of them")
    if train.anneal_over == "time_budget" and (
        train.schedule != "cosine" or train.time_budget_s is None
    ):
        raise ConfigError(
            "train.anneal_over: time_budget needs train.schedule: cosine and a train.time_budget_s"
        )


def save_config(config: Config, path: Path) -> None:
    """Write `config` as YAML to `path`, atomically (a run's config.yaml)."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
    write_atomic(path, text.encode("utf-8"))
