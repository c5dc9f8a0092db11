"""User-facing errors: the CLI prints their message on one line and exits with code 2.

Raise these for anything the user can fix (a bad config key, a missing file, an image that
is not an image); internal bugs keep raising ordinary exceptions with a traceback.
"""


class TfvisionError(Exception):
    """Base class: something the user gave us is wrong; the message says what to do."""


class ConfigError(TfvisionError):
    """A config file, key or value is invalid."""


class DataError(TfvisionError):
    """A data source is missing, empty or holds unreadable files."""


class ModelError(TfvisionError):
    """A model, run directory or weights file cannot be used."""


class ExportError(TfvisionError):
    """An export cannot be written or read."""


class TrainingError(TfvisionError):
    """Training cannot go on (the loss diverged, a worker failed); what was kept is said."""


class MissingExtraError(TfvisionError):
    """What was asked for needs an optional extra; the message names the pip command."""
