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


def override_paths(argv: list[str], name: str = "config") -> dict[str, str]:
  """{KEY: VALUE text} of every --config.KEY[=VALUE] in `argv`."""
  prefix = f"--{name}."
  return dict((arg[len(prefix):].split("=", 1) + [""])[:2]
              for arg in argv[1:] if arg.startswith(prefix))


def check_override_paths(config, paths: list[str], flag=None) -> None:
  """Every override names a key the config has, through sections only.

  ml_collections reports a key under a value (`--config.model.name.x`) as
  a bare TypeError that reads like a broken config file, and a missing one
  by its last name only; this names the flag, the key and what it is under.
  `flag(path)` gives the name to blame (default `--config.PATH`).
  """
  import difflib  # pylint: disable=g-import-not-at-top

  import ml_collections  # pylint: disable=g-import-not-at-top

  from unetjax.runtime.errors import ConfigError  # pylint: disable=g-import-not-at-top
  flag = flag or (lambda path: f"--config.{path}")
  for path in paths:
    node, keys = config, path.split(".")
    for depth, key in enumerate(keys):
      where = ".".join(keys[:depth])
      if not isinstance(node, (ml_collections.ConfigDict, dict)):
        raise ConfigError(f"{flag(path)}: {where} is a value ({node!r:.60}),"
                          f" not a section, so it has no key {key!r}")
      if key not in node:
        close = difflib.get_close_matches(key, list(node.keys()), n=1)
        raise ConfigError(
            f"{flag(path)}: the config has no key {key!r}"
            + (f" (did you mean {close[0]!r}?)" if close else ""))
      node = node[key]


class ConfigFileParser(flags.ArgumentParser):
  """ml_collections' config-file parser, then two steps before any
  `--config.KEY` override is applied: `complete(config, paths)` adds the
  documented options the overrides name that the file leaves out (a
  dataset's or task's keyword arguments), and every override path is
  checked (`check_override_paths`)."""

  def __init__(self, inner, argv: list[str] | None, complete=None):
    self.inner, self.argv, self.complete = inner, argv, complete

  def parse(self, argument):
    config = self.inner.parse(argument)
    import ml_collections  # pylint: disable=g-import-not-at-top
    if not isinstance(config, ml_collections.ConfigDict):
      return config  # a file that failed: its error is raised on use
    overrides = override_paths(
        self.argv if self.argv is not None else sys.argv, self.inner.name)
    if self.complete:
      with config.unlocked():
        self.complete(config, overrides)
    check_override_paths(config, list(overrides), self.blame)
    return config

  def blame(self, path: str) -> str:
    return f"--{self.inner.name}.{path}"

  def flag_type(self):
    return self.inner.flag_type()


def use_config_parser(flag_values, name: str = "config",
                      argv: list[str] | None = None, complete=None,
                      blame=None) -> None:
  """Puts `ConfigFileParser` in front of the config-file flag `name`."""
  flag = flag_values[name]
  parser = ConfigFileParser(flag.parser, argv, complete)
  if blame:
    parser.blame = blame
  flag.parser = parser
