"""Configuration: the declared keys (schema), reading and validating them (load), and
docs/config.md's table of keys (docs)."""

from charlm.config.load import check_setting, load_config, save_config
from charlm.config.schema import (
    DEFAULT_STEPS,
    Config,
    DataConfig,
    ModelConfig,
    SampleConfig,
    TrainConfig,
)

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "SampleConfig",
    "DEFAULT_STEPS",
    "check_setting",
    "load_config",
    "save_config",
]
