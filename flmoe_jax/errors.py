"""User-facing errors.

Anything a user can cause (a bad store, a bad config, a bad flag) raises a subclass of `FlmoeError`.
The CLI prints its message on one line and exits with status 2; a bare traceback means a bug.
"""


class FlmoeError(Exception):
  """Base class of errors caused by user input (exit code 2 on the CLI)."""


class StoreError(FlmoeError):
  """A feature store is missing, malformed or disagrees with its manifest."""


class ConfigError(FlmoeError):
  """A config file or override is invalid, or disagrees with the feature store."""


class RunDirError(FlmoeError):
  """A run directory cannot be used (different config, no finished checkpoint, ...)."""
