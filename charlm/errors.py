"""The errors a user can fix. The CLI prints their message as one line
(`charlm: error: ...`) and exits with code 2; nothing prints a traceback for them."""

INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C (128 + SIGINT)


class CharlmError(ValueError):
    """Something the user can fix; the message says what is wrong and how to fix it."""


class ConfigError(CharlmError):
    """A config problem; the message names the key, and `setting` is that key
    (`sample.top_p`) when one setting is at fault, so that a front end can name its own
    flag or field for it instead (see `relabelled`)."""

    def __init__(self, message: str, setting: str | None = None):
        super().__init__(message)
        self.setting = setting


def relabelled(error: ConfigError, labels: dict[str, str]) -> str:
    """`error`'s message with its setting named as `labels` names it (a flag, a field)."""
    label = labels.get(error.setting or "")
    return str(error).replace(error.setting, label, 1) if label else str(error)


class CorpusError(CharlmError):
    """A corpus problem; the message names the file."""


class RunError(CharlmError):
    """A run-directory or checkpoint problem; the message names the path."""


class TrainingError(CharlmError):
    """Training could not go on (a non-finite loss); what was saved is kept."""
