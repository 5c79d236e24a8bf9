"""What every command-line entry point does with an error the user can fix."""
import contextlib
import sys

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
