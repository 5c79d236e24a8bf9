"""What every command-line entry point does with an error the user can fix."""
import contextlib
import logging as std_logging
import sys

from absl import logging

from unetjax.errors import UnetjaxError


def fail(message: str) -> None:
  """One line on stderr, exit 1: the way out for a user error."""
  print(f"error: {' '.join(message.splitlines())}", file=sys.stderr)
  sys.exit(1)


@contextlib.contextmanager
def user_errors():
  """Reports the package's own errors as one line instead of a traceback."""
  try:
    yield
  except UnetjaxError as e:
    fail(str(e))


def quiet_library_logs(read_only: bool = False) -> None:
  """Keeps Orbax's INFO lines (several per save and restore) out of the
  tools' output; its warnings and errors still show, but for `read_only`
  tools (evaluate, predict) not its warnings that the checkpoints are
  opened read-only, which they asked for."""

  def keep(record) -> bool:
    if "orbax" not in record.pathname:
      return True
    if read_only and record.levelno < std_logging.ERROR:
      message = str(record.msg).lower().replace("_", " ")
      if "read only" in message:
        return False
    return record.levelno >= std_logging.WARNING

  logging.get_absl_handler().addFilter(keep)
