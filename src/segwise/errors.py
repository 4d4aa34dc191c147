"""Exceptions that carry a message a user can act on: what was wrong, where, and how to fix it."""


class SegwiseError(Exception):
    """Base class: the CLI prints these without a traceback."""


class ConfigError(SegwiseError):
    """A config key or value is invalid."""


class DataError(SegwiseError):
    """A data file or data set is unusable."""


class ModelError(SegwiseError):
    """A model cannot be built or loaded."""


class CheckpointError(SegwiseError):
    """A checkpoint does not fit the data or cannot be read."""


class TrainingError(SegwiseError):
    """Training had to stop (for example on a non-finite loss)."""


class Interrupted(SegwiseError):
    """The user stopped the command (Ctrl-C); what was finished is kept (for training: a checkpoint to resume)."""
