"""Run a named sweep of a config and tabulate it: `python -m unetjax.sweep`.

  python -m unetjax.sweep --config configs/mnist_cnn.py --sweep variants \
      --root workdirs/sweeps/mnist --set data.dir=../shared/data/mnist

A config file defines its sweeps in `get_sweeps()`, a dict from a sweep
name to either a list of override dicts (one trial each) or one dict of
value lists (their product, in order):

  def get_sweeps():
    return {
        "batchnorm": [{"model.batchnorm": True}, {"model.batchnorm": False}],
        "lr_batch": {"optimizer.learning_rate": [1e-3, 3e-3],
                     "batch_size": [8, 16]},
    }

Two keys of a trial dict are not overrides: `"trial"` names the trial
(default: its overrides, `model.batchnorm=False`) and `"config"` trains it
from another config file, relative to this one's folder (an MLP trial in a
CNN config's sweep). `get_sweep_columns()`, optional, gives each sweep's
default table columns ({sweep name: [column, ...]}); `--columns` replaces
them.

Before any trial runs, every trial's config is resolved as `unetjax.main`
would resolve it (the trial's overrides, then `--set`), so an unknown key,
a bad value or a `--set` without `=` is one line and exit 1. A trial is
finished only if its workdir's metrics.json exists AND its config.json
equals the resolved config; a workdir holding a different experiment
(other than in how long it trains, which resumes) is refused before
anything runs: a sweep never lists a stale row as done, and never deletes a
trial. Each trial trains `python -m unetjax.main` in `root/<trial name>`
(log in `root/<trial name>.log`); a failed trial is recorded and the sweep
goes on, and the exit status is 1 when any trial failed. The root gets
`results.csv` and `results.md` (one row per trial) and `curves.png` (every
trial's train and val curves overlaid, one colour per trial).
"""
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from unetjax.runtime import cli, history
from unetjax.runtime import config as config_lib
from unetjax.runtime.errors import ConfigError, UnetjaxError
from unetjax.training import workdir as workdir_lib
from unetjax.viz import sweep_report

FLAGS = flags.FLAGS
TRIAL_KEYS = ("trial", "config")  # a trial dict's keys that are not overrides


@dataclasses.dataclass
class Trial:
  """One trial: its name, config file, overrides and resolved config."""
  name: str
  config_path: str
  overrides: dict
  flags: list[str]  # --config.key=value, the trial's then --set's
  resolved: dict  # the config as unetjax.main will save it
  config: ml_collections.ConfigDict  # the same, as unetjax.main trains it
  workdir: str = ""
  finished: bool = False


def load_sweep(config_path: str, sweep: str) -> tuple[list[dict], list[str]]:
  """(the named sweep's trial dicts, its default columns or [])."""
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
  if not trials:
    raise ConfigError(f"sweep {sweep!r} of {config_path} has no trials")
  columns = getattr(module, "get_sweep_columns", dict)().get(sweep, [])
  return [dict(t) for t in trials], list(columns)


def load_trials(config_path: str, sweep: str,
                common: dict[str, str] | None = None) -> list[Trial]:
  """The sweep's trials, each resolved and checked; `common` is --set."""
  specs, _ = load_sweep(config_path, sweep)
  common = common or {}
  _check_common(specs, common, sweep)
  trials = []
  for spec in specs:
    path = config_path
    if "config" in spec:
      path = os.path.join(os.path.dirname(config_path), spec["config"])
    overrides = {k: v for k, v in spec.items() if k not in TRIAL_KEYS}
    flag_args = [f"--config.{k}={_flag_value(v)}" for k, v in overrides.items()
                 if k not in common]
    flag_args += [f"--config.{k}={v}" for k, v in common.items()]
    where = f"sweep {sweep!r} of {config_path}, trial {trial_name(spec)!r}"
    config = resolve(path, flag_args, where, set_keys=tuple(common))
    trials.append(Trial(trial_name(spec), path, overrides, flag_args,
                        json.loads(config_lib.to_json(config)), config))
  names = [t.name for t in trials]
  twice = sorted(n for n in names if names.count(n) > 1)
  if twice:
    raise ConfigError(f"sweep {sweep!r} of {config_path} has two trials "
                      f"named {twice[0]!r}")
  return trials


def _check_common(specs: list[dict], common: dict[str, str],
                  sweep: str) -> None:
  """--set may not change what the sweep compares."""
  for key in common:
    values = {json.dumps(spec.get(key), default=str) for spec in specs}
    if len(values) > 1:
      raise ConfigError(f"--set {key}: sweep {sweep!r} compares values of "
                        f"{key!r}; --set can only change what every trial "
                        "shares")


def resolve(config_path: str, flag_args: list[str], where: str,
            set_keys: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  """The config `unetjax.main --config=PATH FLAGS` trains; errors name
  the flag, as `--set KEY` for one of `set_keys`."""
  if not os.path.isfile(config_path):
    raise ConfigError(f"{where}: config file {config_path} does not exist")
  config_lib.make_siblings_importable(config_path)
  argv = ["sweep", f"--config={config_path}", *flag_args]
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file(
      "config", flag_values=values, lock_config=True, sys_argv=argv)
  from unetjax.training import options  # pylint: disable=g-import-not-at-top
  cli.use_config_parser(
      values, "config", argv=argv, complete=options.complete,
      blame=lambda p: f"--set {p}" if p in set_keys else f"--config.{p}")
  try:
    values(argv)
    config = holder.value
    config.to_dict()
  except flags.Error as e:
    text = _one_line(e)
    unknown = re.match(r"Unknown command line flag 'config\.([^']+)'", text)
    if unknown:
      key = unknown[1]
      flag = f"--set {key}" if key in set_keys else f"--config.{key}"
      text = f"{flag}: the config has no key {key!r}"
    raise ConfigError(f"{where}: {text}") from None
  except (AttributeError, KeyError) as e:
    text = str(e.args[0] if e.args else e)
    name = (re.findall(r"[\w.-]+", text.splitlines()[0]) or [text])[0]
    hint = re.search(r'Did you mean "([^"]+)"', text)
    culprit = [a.split("=")[0] for a in flag_args
               if name in a.split("=")[0].split(".")]
    culprit = [f"--set {c[9:]}" if c[9:] in set_keys else c for c in culprit]
    raise ConfigError(f"{where}: {' '.join(culprit) or config_path}: the "
                      f"config has no key {name!r}"
                      + (f" (did you mean {hint[1]!r}?)" if hint else "")
                      ) from None
  except (UnetjaxError, SyntaxError, ImportError, OSError, TypeError,
          ValueError) as e:
    raise ConfigError(f"{where}: {_one_line(e)}") from None
  try:
    from unetjax.training import preflight  # pylint: disable=g-import-not-at-top
    preflight.check_config(config)
  except ConfigError as e:
    raise ConfigError(f"{where}: {e}") from None
  return config


def trial_name(spec: dict) -> str:
  """spec['trial'], or 'model.batchnorm=False,batch_size=8': a dir name."""
  if "trial" in spec:
    name = str(spec["trial"])
  else:
    name = ",".join(f"{k}={_flag_value(v)}" for k, v in spec.items()
                    if k not in TRIAL_KEYS) or os.path.splitext(
                        os.path.basename(spec.get("config", "base")))[0]
  return name.replace("/", "_").replace(" ", "")


def command(trial: Trial) -> list[str]:
  return [sys.executable, "-m", "unetjax.main",
          f"--config={trial.config_path}", f"--workdir={trial.workdir}",
          *trial.flags]


def plan(config_path: str, sweep: str, root: str, *,
         common: dict[str, str] | None = None) -> list[Trial]:
  """Every trial with its workdir and whether it is finished; refuses a
  root that is a file and a trial workdir holding another experiment."""
  if os.path.exists(root) and not os.path.isdir(root):
    raise ConfigError(f"--root={root} is a file; expected a directory (it "
                      "is created if missing)")
  trials = load_trials(config_path, sweep, common)
  for trial in trials:
    trial.workdir = os.path.join(root, trial.name)
    saved = os.path.join(trial.workdir, workdir_lib.CONFIG_FILE)
    if not os.path.exists(saved):
      continue
    try:
      with open(saved) as f:
        changes = workdir_lib.diff(json.load(f), trial.resolved)
    except (OSError, ValueError, AttributeError) as e:
      raise ConfigError(f"{saved} is unreadable ({_one_line(e)}); not "
                        "touching this trial") from None
    blocking = {k: v for k, v in changes.items()
                if k not in workdir_lib.RESUMABLE_CHANGES}
    if blocking:
      key, (old, new) = next(iter(blocking.items()))
      raise ConfigError(
          f"trial {trial.name!r}: {trial.workdir} holds a different "
          f"experiment ({key}: {old!r} -> {new!r}); use a new --root, or "
          "remove that workdir yourself")
    trial.finished = not changes and os.path.exists(
        os.path.join(trial.workdir, "metrics.json"))
  return trials


def run_sweep(config_path: str, sweep: str, root: str, *, parallel: int = 1,
              dry_run: bool = False, common: dict[str, str] | None = None,
              columns: list[str] | None = None, lock: str = "",
              runner=None, tabulate: bool = False) -> list[dict]:
  """Runs the unfinished trials; returns the table rows (also written).

  `common` overrides (flag strings) apply to every trial; `lock` names a
  file each trial holds an exclusive lock on while it trains. `runner`
  trains one Trial and returns None or its error: by default
  `unetjax.main` in a subprocess, `run_in_process` trains in this one.
  `tabulate` trains nothing: the tables list the unfinished as not run.
  """
  if not isinstance(parallel, int) or parallel < 1:
    raise ConfigError(f"--parallel={parallel}: expected an integer >= 1")
  trials = plan(config_path, sweep, root, common=common)
  if not columns:
    columns = load_sweep(config_path, sweep)[1]
  columns = sweep_report.check_columns(
      columns or sweep_report.DEFAULT_COLUMNS,
      {k for t in trials for k in t.overrides})
  if dry_run:
    for trial in trials:
      print(("# finished: " if trial.finished else "")
            + shlex.join(command(trial)))
    return []
  os.makedirs(root, exist_ok=True)
  runner = runner or run_subprocess

  def run_one(trial):
    if trial.finished:
      return None
    if tabulate:
      return sweep_report.NOT_RUN
    with _locked(lock):
      return runner(trial)

  with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
    errors = list(pool.map(run_one, trials))
  rows = [sweep_report.row(t.name, t.overrides, t.workdir, error)
          for t, error in zip(trials, errors)]
  sweep_report.write_tables(root, rows, columns)
  sweep_report.write_curves(
      root, {t.name: history.read(t.workdir) for t in trials}, columns)
  return rows


def run_subprocess(trial: Trial) -> str | None:
  """Trains one trial; None, or the last line it printed on failure."""
  cmd = command(trial)
  print(f"running {shlex.join(cmd)}", flush=True)
  with open(trial.workdir + ".log", "w") as log:
    code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                          check=False).returncode
  if code == 0:
    return None
  with open(trial.workdir + ".log") as log:
    lines = [line.strip() for line in log if line.strip()]
  return f"exit {code}: {(lines or [''])[-1][:200]}"


def run_in_process(trial: Trial) -> str | None:
  """Trains one trial in this process (tests: TFDS mock data holds here)."""
  from unetjax.training import train  # pylint: disable=g-import-not-at-top
  try:
    train.train_and_evaluate(trial.config, trial.workdir)
  except UnetjaxError as e:
    return f"error: {e}"
  return None


@contextlib.contextmanager
def _locked(path: str):
  if not path:
    yield
    return
  with open(path, "a") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


def parse_set(items: list[str]) -> dict[str, str]:
  """['key=value', ...] -> {key: value}; one line for a malformed item."""
  common = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set "
                        "num_steps=100")
    common[key.strip()] = value
  return common


def _flag_value(value) -> str:
  """A value as ml_collections' --config.key= flag parses it back."""
  return ",".join(map(str, value)).join("()") if isinstance(
      value, (list, tuple)) else str(value)


def _one_line(error: Exception) -> str:
  lines = str(error).strip().splitlines()  # absl may embed a traceback
  return " ".join(" ".join(lines[:1] + lines[1:][-1:]).split())[:300]


def _load_module(path: str):
  if not os.path.isfile(path):
    raise ConfigError(f"--config={path}: no such file")
  config_lib.make_siblings_importable(path)
  spec = importlib.util.spec_from_file_location("_sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except (SyntaxError, ImportError, NameError, AttributeError) as e:
    raise ConfigError(f"--config={path} cannot be loaded: "
                      f"{_one_line(e)}") from None
  return module


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  with cli.user_errors():
    columns = [c.strip() for c in FLAGS.columns.split(",") if c.strip()]
    rows = run_sweep(FLAGS.config, FLAGS.sweep, FLAGS.root,
                     parallel=FLAGS.parallel,
                     dry_run=FLAGS["dry-run"].value,
                     common=parse_set(FLAGS.set), columns=columns,
                     lock=FLAGS.lock, tabulate=FLAGS.tabulate)
  if rows:
    statuses = [row["status"] for row in rows]
    not_run = statuses.count(sweep_report.NOT_RUN)
    failed = len(rows) - statuses.count("done") - not_run
    print(f"{len(rows)} trials, {failed} failed"
          + (f", {not_run} not run" if not_run else "")
          + f": {os.path.join(FLAGS.root, 'results.md')}")
    if failed:
      sys.exit(1)


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
  flags.DEFINE_bool("tabulate", False, "Write the tables and curves of the "
                    "finished trials, train nothing (others: 'not run').")
  flags.DEFINE_multi_string("set", [], "key=value override for every "
                            "trial, e.g. --set num_steps=100.")
  flags.DEFINE_string("columns", "", "Comma-separated table columns, e.g. "
                      "num_params,train/loss,val/dice (default: the "
                      "sweep's own from get_sweep_columns(), else all).")
  flags.DEFINE_string("lock", "", "A file each trial holds an exclusive "
                      "lock on while it trains (heavy jobs one at a time).")
  cli.run(main, sys.modules[__name__], argv)


if __name__ == "__main__":
  run()
