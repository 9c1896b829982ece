"""The errors a user can fix: the CLI prints their message as one line, exit code 2."""

from charlm.config import ConfigError
from charlm.corpus import CorpusError
from charlm.rundir import RunError


class TrainingError(RuntimeError):
    """Training could not go on (non-finite loss); what was saved is kept."""


USER_ERRORS = (ConfigError, CorpusError, RunError, TrainingError)
