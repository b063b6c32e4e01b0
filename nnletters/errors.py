"""nnletters' own error types: each carries one line that names the file, key or value at fault.

The CLI turns these into ``Error: <message>`` and exit code 1; anything else is a bug.
"""


class NNLettersError(Exception):
    """Base class for every error nnletters raises on purpose."""


class ConfigError(NNLettersError):
    """A config file, key or value is wrong."""


class DataError(NNLettersError):
    """A dataset path, file, list or archive cannot be used."""


class CheckpointError(NNLettersError):
    """A checkpoint file is missing, corrupt, unsafe or does not match."""


class TrainingError(NNLettersError):
    """Training cannot go on (for example the loss diverged)."""


class FolderBusy(NNLettersError):
    """Another live process holds the run folder's lock (it is training there)."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message folded onto one line (and cut), for quoting inside ours."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__
