"""What every command-line entry point does with help and with an error the
user can fix."""
import contextlib
import logging as std_logging
import os
import sys
import types
from typing import Callable

from absl import app, flags, logging

from unetjax.runtime.errors import UnetjaxError

# absl's --help exits 1 and, under a console script, lists no flags (it
# lists the flags of `__main__`, which is then the script, not the tool).
HELP = ("--help", "-help", "-h", "--h", "-?", "--helpshort")
HELP_FULL = ("--helpfull", "-helpfull")


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


def run(main: Callable, module: types.ModuleType,
        argv: list[str] | None = None, flags_parser: Callable | None = None):
  """`app.run(main)`, but --help prints the tool's description and flags
  and exits 0, whether started as `python -m` or as a console script."""
  argv = list(sys.argv if argv is None else argv)
  asked = [arg.split("=")[0] for arg in argv[1:]]
  if any(arg in HELP + HELP_FULL for arg in asked):
    try:
      print_help(module, full=any(arg in HELP_FULL for arg in asked))
      sys.stdout.flush()
    except BrokenPipeError:  # `--help | head`
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
  app.run(main, argv=argv, flags_parser=flags_parser or parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, a bad or missing flag reported in one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e).strip().splitlines()[0])


def no_arguments(argv: list[str]) -> None:
  """A tool takes flags only: a stray word is a one-line error."""
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])} (see --help)")


def print_help(module: types.ModuleType, full: bool = False) -> None:
  """The module's docstring, then its flags (all flags with `full`)."""
  print((module.__doc__ or "").strip())
  print("\nflags:\n")
  if full:
    print(flags.FLAGS.get_help())
  else:
    print(flags.FLAGS.module_help(module))
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
