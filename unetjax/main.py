"""Command line: `python -m unetjax.main --config configs/X.py --workdir W`.

Any config value can be overridden with `--config.key=value`. Problems the
user can fix (a bad flag, config, data file, checkpoint or workdir) are
reported in one line, without a traceback, and exit 1. SIGTERM or SIGINT
save a checkpoint and exit 128 + the signal number; re-running the same
command resumes.

The terminal shows a progress bar (steps/s, time left; plain lines when the
output is not a terminal), one line per evaluation with the task's main
scores, and the final scores; every logged value is in the workdir's
train.log, history.jsonl and TensorBoard events, the config in
config.json. --verbosity=0 (or -v 0) prints the full log to the terminal
too.
"""
import os
import re
import sys

from absl import flags, logging
from ml_collections import config_flags

from unetjax.runtime import cli, console
from unetjax.runtime import config as config_lib
from unetjax.runtime.cli import fail
from unetjax.runtime.errors import TrainingStopped, UnetjaxError

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/default.py.",
    lock_config=True)


def _complete(config, paths):
  """The dataset's and task's options the overrides name (lazily: the
  registries load their module only for such an override)."""
  from unetjax.training import options  # pylint: disable=g-import-not-at-top
  options.complete(config, paths)


cli.use_config_parser(FLAGS, "config", complete=_complete)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, plots.")
flags.DEFINE_bool(
    "fresh", False, "When --workdir holds a different experiment, train in "
    "the first of WORKDIR-2, WORKDIR-3, ... that is new or holds this one "
    "(so the same command resumes there). Nothing is deleted.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every problem reported as one line.

  An override of a key the config lacks surfaces as absl's "unknown flag"
  for a top-level key and as a bare KeyError/AttributeError from
  ml_collections for a nested one; both are reported naming the flag.
  """
  config_file = _config_file(argv)
  if config_file:
    config_lib.make_siblings_importable(config_file)
  try:
    return FLAGS(argv)
  except UnetjaxError as e:  # an override's path, checked on loading
    fail(str(e))
  except flags.Error as e:
    lines = str(e).strip().splitlines()  # may embed the file's traceback
    message = " ".join(lines[:1] + lines[1:][-1:])
    unknown = "Unknown command line flag 'config."
    if message.startswith(unknown):
      key = message[len(unknown):].split("'")[0]
      fail(f"--config.{key}: the config has no key {key!r}")
    fail(message)
  except (AttributeError, KeyError) as e:
    text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    flag, name = _unknown_override(argv, text)
    if flag:
      hint = re.search(r'Did you mean "([^"]+)"', text)
      fail(f"{flag}: the config has no key {name!r}"
           + (f" (did you mean {hint.group(1)!r}?)" if hint else ""))
    fail(f"--config {config_file} cannot be loaded: {_one_line(e)}")
  except (SyntaxError, ImportError, OSError, TypeError, ValueError) as e:
    fail(f"--config {config_file} cannot be loaded: {_one_line(e)}")


def _unknown_override(argv: list[str], message: str) -> tuple[str, str]:
  """(--config.KEY flag, missing key) behind ml_collections' lookup error.

  It says "Attempting to lookup: a.b.c" for a key under a leaf value and
  quotes the missing name ('modle') for a misspelt key or section.
  """
  overrides = [arg.split("=")[0] for arg in argv[1:]
               if arg.startswith("--config.")]
  path = re.search(r"Attempting to lookup: (\S+)", message)
  if path:
    flag = f"--config.{path.group(1)}"
    parent = path.group(1).rsplit(".", 1)
    return (flag if flag in overrides else "", parent[-1])
  quoted = re.findall(r"'([^'\\]+)'", message.splitlines()[0] if message
                      else "")
  name = quoted[0] if quoted else message.strip("\"'")
  for flag in overrides:
    if name in flag[len("--config."):].split("."):
      return flag, name
  return "", name


def _config_file(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _one_line(error: Exception) -> str:
  return " ".join(str(error).split())[:300]


def load_config():
  """The --config file with its overrides; a file that fails is one line."""
  try:
    config = _CONFIG.value
    config.to_dict()  # a file that failed to load raises its error here
    return config
  except (UnetjaxError, OSError, SyntaxError, AttributeError,
          TypeError) as e:
    fail(f"--config={FLAGS['config'].serialize().split('=', 1)[-1]} cannot be "
         f"loaded: {_one_line(e)}")


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])} (options are "
         "--config, --workdir, --fresh and --config.KEY=VALUE)")
  cli.quiet_library_logs()
  console.quiet_terminal()
  config = load_config()
  from unetjax.training import train  # pylint: disable=g-import-not-at-top
  from unetjax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  logging.info("Config:\n%s", config)
  workdir = FLAGS.workdir
  try:
    if FLAGS.fresh:
      workdir = workdir_lib.fresh_sibling(workdir, config)
      if workdir != FLAGS.workdir:
        print(f"{FLAGS.workdir} holds a different experiment; training in "
              f"{workdir}.", flush=True)
    final = train.train_and_evaluate(config, workdir)
  except UnetjaxError as e:
    fail(str(e))
  except TrainingStopped as e:
    print(str(e), file=sys.stderr)
    sys.exit(128 + e.signum)
  print(f"Done. Results in {workdir}: metrics.json (every metric), plots/, "
        f"checkpoints/ (TensorBoard: tensorboard --logdir {workdir})")
  for split in ("val", "test"):
    if split in final:
      print(f"Final {split} metrics: {headline(final[split])}")
  exit_without_teardown()


def headline(metrics: dict[str, float], limit: int = 6) -> str:
  """One short line of a split's metrics: the object scores first, then
  the pixel scores and the loss, at most `limit` (all are in
  metrics.json)."""
  order = ("challenge_score", "ap50", "f1_50", "object_dice", "pixel_dice",
           "dice", "mean_iou", "accuracy", "psnr", "loss")
  keys = [k for k in order if k in metrics][:limit]
  if not keys:  # a task with other names: the first few, as they come
    keys = [k for k in metrics if not re.fullmatch(r"ap\d\d", k)][:limit]
  return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys)


def exit_without_teardown() -> None:
  """Ends the process at once, its files all written and closed.

  What a normal exit still did after the last line was the interpreter's
  teardown: TensorFlow's and XLA's runtimes destroyed after every Python
  exit handler had run, 2.5-3.6 s on 2 cores (`unetjax-benchmark
  --startup`, docs/performance.md). Nothing is left for it: the trainer
  has closed the metric writers (TensorBoard events, history.jsonl), waited
  for and closed the checkpoint manager and released the workdir lock.
  """
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(0)  # pylint: disable=protected-access


def run(argv: list[str] | None = None):
  """Console-script entry point (`unetjax-train`). The garbage collector
  stays off until the first train step is done (`host_memory`)."""
  from unetjax.runtime import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.pause_collection_for_start()
  try:
    cli.run(main, sys.modules[__name__], argv, flags_parser=parse_flags)
  finally:  # a run that stopped before its first step (errors, --help)
    host_memory.start_done()


if __name__ == "__main__":
  run()
