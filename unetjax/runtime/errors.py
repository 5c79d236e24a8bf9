"""The package's own error types.

Every problem a user can cause (a bad config, a broken data file, a
checkpoint that does not fit) raises one of these with a one-line message
naming the culprit, so the CLI can print it without a traceback.
"""
import signal


class UnetjaxError(Exception):
  """Base class: a problem the user can fix, reported in one line."""


class ConfigError(UnetjaxError):
  """A config key is unknown, has the wrong type or an impossible value."""


class DataError(UnetjaxError):
  """A data file or folder is missing, unreadable or inconsistent."""


class CheckpointError(UnetjaxError):
  """A checkpoint is missing, corrupt or belongs to another experiment."""


class WorkdirError(UnetjaxError):
  """The workdir is in use or holds an incompatible experiment."""


class DivergenceError(UnetjaxError):
  """Training produced a non-finite loss or gradient."""


class TrainingStopped(Exception):
  """SIGTERM or SIGINT stopped training after saving a checkpoint.

  Not a UnetjaxError: nothing is wrong, and the CLI exits with 128 + the
  signal number, as a shell does for a process the signal ended.
  """

  def __init__(self, step: int, signum: int):
    self.step = step
    self.signum = signum
    super().__init__(
        f"stopped by {signal.Signals(signum).name} after step {step}; a "
        "checkpoint was saved: run the same command again to resume")
