"""A trained run's model and task, rebuilt from its workdir without its data.

Applying a model needs its architecture, its weights and its task's output
head, not its training set; building the whole experiment read every
training image first, and transformed each for a task with `prepare` (the
instance targets): most of a `unetjax-predict` on a few DSB 2018 images.
The trainer saves in experiment.json what the model and optimizer were
built from beyond the config (the dataset's `DataInfo`, the epoch length
the schedule counts in); from it and config.json `load` rebuilds them as
training did and restores a checkpoint into them. A workdir written before
experiment.json existed is rebuilt the old way, data and all, as
`restore_experiment` does for `unetjax-evaluate`, which needs the data.
"""
import contextlib
import dataclasses
import os
from typing import Any

import jax
import ml_collections

from unetjax import data as datasets
from unetjax import tasks
from unetjax.runtime import checkpointing
from unetjax.runtime import config as config_lib
from unetjax.runtime.errors import WorkdirError
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


def load(workdir: str, checkpoint: str) -> Trained:
  """The run in `workdir` at checkpoint 'best', 'latest' or a step, its
  model and task rebuilt without its data where experiment.json allows."""
  path = os.path.join(workdir, workdir_lib.FACTS_FILE)
  if not os.path.exists(path):
    experiment, state, step = restore_experiment(workdir, checkpoint)
    return Trained(experiment.config, experiment.dataset.info,
                   experiment.task, experiment.graphdef, state, step)
  config = saved_config(workdir)
  config_lib.validate(config)
  info, steps_per_epoch, num_steps = read_facts(path)
  with _checkpoints(workdir, config) as mngr:
    step = checkpointing.resolve_step(mngr, checkpoint)
    task = tasks.build(config, info)
    schedule = schedules.build(config, steps_per_epoch, num_steps)
    graphdef, state = experiment_lib.build_state(config, task, info, schedule)
    state = jax.device_put(state, parallel.replicated(parallel.make_mesh()))
    state, _ = checkpointing.restore(mngr, step, state)
  return Trained(config, info, task, graphdef, state, step)


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


def _positive(path: str, name: str, value) -> int:
  if type(value) is not int or value < 1:  # pylint: disable=unidiomatic-typecheck
    raise WorkdirError(f"{path}: {name} must be a positive integer; got "
                       f"{value!r}")
  return value
