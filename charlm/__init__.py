"""charlm: character-level language models on Keras 3 (SimpleRNN, LSTM, GRU)."""

import os

# Keep TensorFlow's C++ log quiet: charlm reports real problems as exceptions and says
# which device it uses; TF_CPP_MIN_LOG_LEVEL=0 shows everything again. The CLI also mutes
# the start-up notices printed before this level applies (charlm.cli.app.quiet_tensorflow_start).
DEFAULT_TF_LOG_LEVEL = "3"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_TF_LOG_LEVEL)

__version__ = "0.1.0"

# The Python API (charlm/api.py), imported on first use: `import charlm` stays light, and
# TensorFlow is loaded only by a call that needs it (PEP 562).
__all__ = ["train", "load", "LanguageModel", "Config", "__version__"]


def __getattr__(name: str):
    if name in ("train", "load", "LanguageModel"):
        from charlm import api

        return getattr(api, name)
    if name == "Config":
        from charlm.config import Config

        return Config
    raise AttributeError(f"module 'charlm' has no attribute {name!r}")
