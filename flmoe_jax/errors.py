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


class DatasetError(FlmoeError):
  """A raw dataset folder (or TFDS source) has missing files, bad ids or unreadable content."""


class EncoderError(FlmoeError):
  """A frozen encoder cannot be loaded or run, or feature extraction cannot proceed.

  Examples: a model that is neither a local folder nor in the offline cache, unreadable images, a partial
  extraction or an existing store made with a different encoder.
  """


class ExplainError(FlmoeError):
  """Bad input to the explanation pipeline (K out of range, mismatched stores, bad maps, ...)."""


class ProbeError(FlmoeError):
  """Bad input to a probe: a game, player map, pair list, budget or memory knob that cannot work."""
