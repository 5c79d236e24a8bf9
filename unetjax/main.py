"""Command line: `python -m unetjax.main --config configs/X.py --workdir W`.

Any config value can be overridden with `--config.key=value`. Problems the
user can fix are reported in one line, without a traceback, and exit 1.
"""
import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from unetjax.errors import UnetjaxError

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/default.py.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, plots.")
flags.mark_flags_as_required(["config", "workdir"])


def quiet_library_logs() -> None:
  """Keeps Orbax's per-save INFO lines out of the training log."""
  logging.get_absl_handler().addFilter(
      lambda record: "orbax" not in record.pathname
      or record.levelno >= std_logging.WARNING)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  quiet_library_logs()
  from unetjax import train  # pylint: disable=g-import-not-at-top
  logging.info("Config:\n%s", _CONFIG.value)
  try:
    final = train.train_and_evaluate(_CONFIG.value, FLAGS.workdir)
  except UnetjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"Done. Results in {FLAGS.workdir}: metrics.json, plots/, "
        f"checkpoints/ (TensorBoard: tensorboard --logdir {FLAGS.workdir})")
  print("Final val metrics: " + ", ".join(
      f"{k} {v:.4f}" for k, v in final["val"].items()))


def run():
  """Console-script entry point (`unetjax-train`)."""
  app.run(main)


if __name__ == "__main__":
  run()
