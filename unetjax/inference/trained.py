"""A trained run's model and task, rebuilt from its workdir without its data.

Applying a model needs its architecture, its weights and its task's output
head, not its training set; building the whole experiment read every
training image first, and transformed each for a task with `prepare` (the
instance targets): most of a `unetjax-predict` on a few DSB 2018 images.
The trainer saves in experiment.json what the model and optimizer were
built from beyond the config (the dataset's `DataInfo`, the epoch length
the schedule counts in); from it and config.json `load` rebuilds them as
training did and restores a checkpoint into them. experiment.json also
records how images became model input ('input': `data.normalize`, its
percentiles, the channels), which predict applies as training did. A
workdir written before experiment.json existed is rebuilt the old way,
data and all, as `restore_experiment` does. `restore_for_split` gives
`unetjax-evaluate` the experiment with only the split it scores read.
"""
import contextlib
import dataclasses
import os
from typing import Any

import jax
import ml_collections
from flax import nnx

from unetjax import data as datasets
from unetjax import tasks
from unetjax.data import normalize
from unetjax.runtime import checkpointing
from unetjax.runtime import config as config_lib
from unetjax.runtime.errors import ConfigError, WorkdirError
from unetjax.training import experiment as experiment_lib
from unetjax.training import parallel, schedules
from unetjax.training import workdir as workdir_lib


@dataclasses.dataclass
class Trained:
  config: ml_collections.ConfigDict
  info: datasets.DataInfo
  task: Any
  graphdef: Any
  state: Any  # nnx.State of (model, optimizer), as restored
  step: int
  input: dict = dataclasses.field(default_factory=lambda: normalize.check(
      None))  # how images become model input (`normalize.setting`)
  steps_per_epoch: int = 0
  num_steps: int = 0

  def model(self):
    """The model, merged from its state (a run's holds the optimizer too;
    a shipped model's only the model)."""
    merged = nnx.merge(self.graphdef, self.state)
    return merged[0] if isinstance(merged, tuple) else merged


def load(workdir: str, checkpoint: str) -> Trained:
  """The run in `workdir` at checkpoint 'best', 'latest' or a step, its
  model and task rebuilt without its data where experiment.json allows."""
  path = os.path.join(workdir, workdir_lib.FACTS_FILE)
  if not os.path.exists(path):
    experiment, state, step = restore_experiment(workdir, checkpoint)
    return Trained(experiment.config, experiment.dataset.info,
                   experiment.task, experiment.graphdef, state, step,
                   normalize.setting(experiment.config))
  config = saved_config(workdir)
  config_lib.validate(config)
  info, steps_per_epoch, num_steps = read_facts(path)
  chosen = read_input(path, config)
  with _checkpoints(workdir, config) as mngr:
    step = checkpointing.resolve_step(mngr, checkpoint)
    task = tasks.build(config, info)
    schedule = schedules.build(config, steps_per_epoch, num_steps)
    graphdef, state = experiment_lib.build_state(config, task, info, schedule)
    state = jax.device_put(state, parallel.replicated(parallel.make_mesh()))
    state, _ = checkpointing.restore(mngr, step, state)
  return Trained(config, info, task, graphdef, state, step, chosen,
                 steps_per_epoch, num_steps)


def restore_for_split(workdir: str, checkpoint: str, split: str
                      ) -> tuple[experiment_lib.Experiment, Any, int]:
  """Like `restore_experiment`, but only `split` of the data is read (and
  made into the task's targets): the model comes from experiment.json and
  the checkpoint, so scoring the test split never reads the training
  images. Old workdirs without experiment.json are rebuilt whole."""
  if not os.path.exists(os.path.join(workdir, workdir_lib.FACTS_FILE)):
    return restore_experiment(workdir, checkpoint)
  run = load(workdir, checkpoint)
  dataset = datasets.build(run.config)
  if dataset.info != run.info:
    raise WorkdirError(
        f"{workdir}: the data now gives {dataset.info}, but the run was "
        f"trained on {run.info} ({workdir_lib.FACTS_FILE})")
  if hasattr(run.task, "prepare"):
    dataset = dataset.transformed(run.task.prepare)
  dataset.split(split)  # the only split read; fails here if absent
  schedule = schedules.build(run.config, run.steps_per_epoch, run.num_steps)
  experiment = experiment_lib.Experiment(
      run.config, dataset, run.task, run.graphdef, run.state,
      parallel.make_mesh(), 0, "", run.steps_per_epoch, run.num_steps,
      schedule)
  return experiment, run.state, run.step


def restore_experiment(workdir: str, checkpoint: str
                       ) -> tuple[experiment_lib.Experiment, Any, int]:
  """The whole experiment of a workdir, data and all, its state from
  checkpoint 'best', 'latest' or a step, and that step: what `evaluate`
  starts from. The checkpoint is looked up before the experiment is built,
  so a workdir without it fails fast with CheckpointError."""
  config = saved_config(workdir)
  with _checkpoints(workdir, config) as mngr:
    step = checkpointing.resolve_step(mngr, checkpoint)
    experiment = experiment_lib.build_experiment(config)
    state, _ = checkpointing.restore(mngr, step, experiment.state)
  return experiment, state, step


def saved_config(workdir: str) -> ml_collections.ConfigDict:
  """config.json, with the defaults of keys added since the run."""
  config = config_lib.base_config()
  config.update(config_lib.load_saved(workdir))
  return config


@contextlib.contextmanager
def _checkpoints(workdir: str, config: ml_collections.ConfigDict):
  mngr = checkpointing.manager(workdir, keep=config.keep_checkpoints,
                               best_metric=config.best_metric,
                               best_mode=config.best_mode, read_only=True)
  with checkpointing.closing(mngr):
    yield mngr


def read_facts(path: str) -> tuple[datasets.DataInfo, int, int]:
  """(DataInfo, steps per epoch, steps) from experiment.json, each checked."""
  facts = workdir_lib.read_json_object(
      path, WorkdirError, "a run's facts",
      "delete it to rebuild the model from the training data instead")
  fields = [f.name for f in dataclasses.fields(datasets.DataInfo)]
  info = facts.get("data_info")
  if not isinstance(info, dict) or set(info) != set(fields):
    raise WorkdirError(f"{path}: 'data_info' must be an object with keys "
                       f"{sorted(fields)}; got {info!r:.200}")
  counts = [_positive(path, repr(key), facts.get(key))
            for key in ("steps_per_epoch", "num_steps")]
  try:
    parsed = datasets.DataInfo(
        name=str(info["name"]),
        num_classes=_positive(path, "data_info.num_classes",
                              info["num_classes"]),
        in_channels=_positive(path, "data_info.in_channels",
                              info["in_channels"]),
        class_names=tuple(str(n) for n in info["class_names"]),
        instances=bool(info["instances"]))
  except TypeError as e:
    raise WorkdirError(f"{path}: 'data_info' is malformed: {e}") from e
  return parsed, *counts


def read_input(path: str, config) -> dict:
  """experiment.json's 'input' (how images became model input), checked;
  a run recorded before it existed used its config's (then always
  'scale')."""
  facts = workdir_lib.read_json_object(
      path, WorkdirError, "a run's facts",
      "delete it to rebuild the model from the training data instead")
  recorded = facts.get("input")
  if recorded is None:
    return normalize.setting(config)
  try:
    return normalize.check({k: recorded[k]
                            for k in ("normalize", "percentiles")})
  except (KeyError, TypeError, ValueError) as e:
    raise WorkdirError(f"{path}: 'input' must hold 'normalize' and "
                       f"'percentiles'; got {recorded!r:.200}") from e
  except ConfigError as e:  # a value out of range
    raise WorkdirError(f"{path}: 'input': {e}") from e


def _positive(path: str, name: str, value) -> int:
  if type(value) is not int or value < 1:  # pylint: disable=unidiomatic-typecheck
    raise WorkdirError(f"{path}: {name} must be a positive integer; got "
                       f"{value!r}")
  return value
