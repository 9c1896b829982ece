"""The errors a user can fix. The CLI prints their message as one line
(`charlm: error: ...`) and exits with code 2; nothing prints a traceback for them."""

INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C (128 + SIGINT)


class CharlmError(ValueError):
    """Something the user can fix; the message says what is wrong and how to fix it."""


class ConfigError(CharlmError):
    """A config problem; the message names the key."""


class CorpusError(CharlmError):
    """A corpus problem; the message names the file."""


class RunError(CharlmError):
    """A run-directory or checkpoint problem; the message names the path."""


class TrainingError(CharlmError):
    """Training could not go on (a non-finite loss); what was saved is kept."""
