"""Run a named sweep of a config and tabulate it: `python -m unetjax.sweep`.

  python -m unetjax.sweep --config configs/default.py --sweep batchnorm \
      --root workdirs/sweeps/batchnorm --parallel 2

A config file defines its sweeps in `get_sweeps()`, a dict from a sweep
name to either a list of override dicts (one trial each) or one dict of
value lists (their product, in order):

  def get_sweeps():
    return {
        "batchnorm": [{"model.batchnorm": True}, {"model.batchnorm": False}],
        "lr_batch": {"optimizer.learning_rate": [1e-3, 3e-3],
                     "batch_size": [8, 16]},
    }

Each trial trains `python -m unetjax.main` in its own workdir
`root/<trial name>` (log in `root/<trial name>.log`); a trial whose
metrics.json exists is finished and skipped on a re-run, a failed one is
recorded and the sweep goes on. `root/results.csv` and `root/results.md`
get one row per trial: overrides, status, parameter count, training time,
final train and val metrics.
"""
import concurrent.futures
import csv
import importlib.util
import itertools
import json
import os
import shlex
import subprocess
import sys

from absl import app, flags

from unetjax import cli
from unetjax import config as config_lib
from unetjax.errors import ConfigError

FLAGS = flags.FLAGS


def load_trials(config_path: str, sweep: str) -> list[dict]:
  """The named sweep's override dicts, their keys checked on the config."""
  module = _load_module(config_path)
  if not hasattr(module, "get_sweeps"):
    raise ConfigError(f"{config_path} defines no get_sweeps()")
  sweeps = module.get_sweeps()
  if sweep not in sweeps:
    raise ConfigError(f"--sweep={sweep!r} is not in {config_path}; it has "
                      f"{sorted(sweeps)}")
  trials = sweeps[sweep]
  if isinstance(trials, dict):
    trials = [dict(zip(trials, values))
              for values in itertools.product(*trials.values())]
  config = module.get_config()
  for trial in trials:
    for key in trial:
      try:
        config_lib.lookup(config, key)
      except (KeyError, AttributeError):
        raise ConfigError(f"sweep {sweep!r} of {config_path} overrides "
                          f"{key!r}, which the config does not have") from None
  return trials


def trial_name(overrides: dict) -> str:
  """'model.batchnorm=False,batch_size=8': readable and a valid dir name."""
  return ",".join(f"{k}={_flag_value(v)}" for k, v in overrides.items()
                  ).replace("/", "_").replace(" ", "") or "base"


def command(config_path: str, workdir: str, overrides: dict) -> list[str]:
  return [sys.executable, "-m", "unetjax.main", f"--config={config_path}",
          f"--workdir={workdir}"] + [
              f"--config.{k}={_flag_value(v)}" for k, v in overrides.items()]


def run_sweep(config_path: str, sweep: str, root: str, *, parallel: int = 1,
              dry_run: bool = False, common: dict | None = None) -> list[dict]:
  """Runs the unfinished trials; returns the table rows (also written).

  `common` overrides apply to every trial (e.g. a shorter num_steps).
  """
  trials = load_trials(config_path, sweep)
  jobs = []
  for overrides in trials:
    workdir = os.path.join(root, trial_name(overrides))
    cmd = command(config_path, workdir, {**(common or {}), **overrides})
    finished = os.path.exists(os.path.join(workdir, "metrics.json"))
    if dry_run:
      print(("# finished: " if finished else "") + shlex.join(cmd))
    jobs.append((overrides, workdir, cmd, finished))
  if dry_run:
    return []
  os.makedirs(root, exist_ok=True)
  with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
    errors = list(pool.map(lambda job: None if job[3] else _run(*job[1:3]),
                           jobs))
  rows = [_row(overrides, workdir, error)
          for (overrides, workdir, _, _), error in zip(jobs, errors)]
  _write_tables(root, rows)
  return rows


def _run(workdir: str, cmd: list[str]) -> str | None:
  """Trains one trial; None, or the last line it printed on failure."""
  print(f"running {shlex.join(cmd)}", flush=True)
  with open(workdir + ".log", "w") as log:
    code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                          check=False).returncode
  if code == 0:
    return None
  with open(workdir + ".log") as log:
    lines = [line.strip() for line in log if line.strip()]
  return f"exit {code}: {(lines or [''])[-1][:200]}"


def _row(overrides: dict, workdir: str, error: str | None) -> dict:
  row = {"trial": os.path.basename(workdir), **overrides}
  path = os.path.join(workdir, "metrics.json")
  if error or not os.path.exists(path):
    row["status"] = f"failed ({error})" if error else "failed"
    return row
  with open(path) as f:
    metrics = json.load(f)
  row.update(status="done", num_params=metrics["num_params"],
             train_seconds=metrics["train_seconds"], step=metrics["step"])
  for split in ("train", "val"):
    row.update({f"{split}/{k}": v for k, v in metrics[split].items()})
  return row


def _write_tables(root: str, rows: list[dict]) -> None:
  columns = list(dict.fromkeys(k for row in rows for k in row))
  with open(os.path.join(root, "results.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)
  lines = ["| " + " | ".join(columns) + " |",
           "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |"
            for row in rows]
  with open(os.path.join(root, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def _cell(value) -> str:
  text = f"{value:.4g}" if isinstance(value, float) else str(value)
  return text.replace("|", "\\|")


def _flag_value(value) -> str:
  """A value as ml_collections' --config.key= flag parses it back."""
  return ",".join(map(str, value)).join("()") if isinstance(
      value, (list, tuple)) else str(value)


def _load_module(path: str):
  if not os.path.isfile(path):
    raise ConfigError(f"--config={path}: no such file")
  config_lib.make_siblings_importable(path)
  spec = importlib.util.spec_from_file_location("_sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  common = dict(item.split("=", 1) for item in FLAGS.set)
  with cli.user_errors():
    rows = run_sweep(FLAGS.config, FLAGS.sweep, FLAGS.root,
                     parallel=FLAGS.parallel,
                     dry_run=FLAGS["dry-run"].value, common=common)
  if rows:
    failed = sum(row["status"] != "done" for row in rows)
    print(f"{len(rows)} trials, {failed} failed: "
          f"{os.path.join(FLAGS.root, 'results.md')}")


def run(argv: list[str] | None = None):
  """Console-script entry point (`unetjax-sweep`); flags defined here so
  the tools, which share flag names, can be imported together."""
  flags.DEFINE_string("config", None, "Config file with get_sweeps().",
                      required=True)
  flags.DEFINE_string("sweep", None, "Name of the sweep.", required=True)
  flags.DEFINE_string("root", None, "Directory for the trial workdirs.",
                      required=True)
  flags.DEFINE_integer("parallel", 1, "Trials run at the same time.")
  flags.DEFINE_bool("dry-run", False, "Print the commands, run nothing.")
  flags.DEFINE_multi_string("set", [], "key=value override for every "
                            "trial, e.g. --set num_steps=100.")
  cli.run(main, sys.modules[__name__], argv)


if __name__ == "__main__":
  run()
