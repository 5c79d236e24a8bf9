"""The experiment built from a config: dataset, task, model and optimizer
from their registries, the initial state on the mesh, and the checks that
run before anything is written (input size, best metric)."""
import dataclasses
from typing import Any

import jax
import ml_collections
from flax import nnx

from unetjax import data as datasets
from unetjax import models, tasks
from unetjax.data import augment, normalize
from unetjax.runtime import config as config_lib
from unetjax.runtime import host_memory
from unetjax.runtime.errors import ConfigError
from unetjax.training import optimizers, parallel, preflight, schedules


@dataclasses.dataclass
class Experiment:
  """Everything built from a config, before any training."""
  config: ml_collections.ConfigDict
  dataset: datasets.Dataset
  task: Any
  graphdef: Any
  state: Any  # nnx.State of (model, optimizer), replicated over the mesh
  mesh: jax.sharding.Mesh
  num_params: int
  summary: str
  steps_per_epoch: int
  num_steps: int
  schedule: Any


def build_experiment(config: ml_collections.ConfigDict) -> Experiment:
  """Dataset, task, model and optimizer from their registries."""
  config_lib.validate(config)
  for key in ("batch_size", "eval_batch_size"):
    parallel.check_batch_size(key, config[key])
  dataset = datasets.build(config)
  task = tasks.build(config, dataset.info)
  if hasattr(task, "prepare"):
    dataset = dataset.transformed(task.prepare)
  train = train_split(config, dataset)
  for name in dataset.loaders:  # every split's files, before any write
    dataset.split(name)
  if config.batch_size > len(train):
    raise ConfigError(f"batch_size={config.batch_size} is larger than the "
                      f"training split ({len(train)} examples)")
  check_best_metric(config, task)
  augment.validate(config.augment, *train.shape)
  preflight.check_data(config, train)
  steps_per_epoch = max(1, len(train) // config.batch_size)
  num_steps = config.num_steps or config.num_epochs * steps_per_epoch
  schedule = schedules.build(config, steps_per_epoch, num_steps)
  graphdef, state = build_state(config, task, dataset.info, schedule)
  # Shapes only: a model merged from the arrays would hold them, in the
  # reference cycles of its module graph, until the next full collection.
  model, _ = nnx.merge(graphdef, jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state))
  _check_input_shape(model, config, train)
  mesh = parallel.make_mesh()
  parallel.sync_processes("built")  # the first collective comes next
  state = jax.device_put(state, parallel.replicated(mesh))
  return Experiment(config, dataset, task, graphdef, state, mesh,
                    models.count_params(model), models.summary(model),
                    steps_per_epoch, num_steps, schedule)


def build_state(config: ml_collections.ConfigDict, task,
                info: datasets.DataInfo, schedule) -> tuple[Any, Any]:
  """(graphdef, state) of the initialised model and its optimizer."""

  def create():
    model = models.build(
        config, in_channels=tasks.model_in_channels(task, info),
        num_outputs=task.num_outputs,
        rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    return model, nnx.Optimizer(model, optimizers.build(config, schedule),
                                wrt=nnx.Param)

  return initialize(create)


def initialize(create) -> tuple[Any, Any]:
  """(graphdef, state) of the modules `create()` builds, initialised by one
  compiled program instead of eagerly, op by op (each eager op is an XLA
  program of its own: dozens of compiles, or cache look-ups, for a U-Net).
  The same random ops run, traced. On CPU the program, which runs once, is
  compiled without LLVM's optimisations: 9 against 31 s for the default
  U-Net and its optimizer on a loaded 2-core machine, values the same to
  within 9e-8 (float rounding of the normal samplers). The graph
  definition, which holds no arrays, is kept from that one trace: building
  the modules once more abstractly (`nnx.eval_shape`) only for it cost
  0.35-0.6 s of every start."""
  graphdefs = []

  def init():
    graphdef, state = nnx.split(create())
    graphdefs.append(graphdef)
    return state

  options = ({"xla_backend_optimization_level": 0}
             if jax.default_backend() == "cpu" else None)
  with host_memory.garbage_collection_paused():
    state = jax.jit(init).lower().compile(compiler_options=options)()
  return graphdefs[0], state


def experiment_facts(experiment: Experiment) -> dict[str, Any]:
  """What the model and optimizer were built from besides the config (the
  dataset's facts, the epoch length), saved so that tools can rebuild them
  without the data (`unetjax.inference.trained`)."""
  return {"data_info": dataclasses.asdict(experiment.dataset.info),
          "steps_per_epoch": experiment.steps_per_epoch,
          "num_steps": experiment.num_steps,
          # How images become model input, for predict and export.
          "input": {**normalize.setting(experiment.config),
                    "channels": experiment.dataset.info.in_channels}}


def train_split(config, dataset) -> datasets.Split:
  """The training split, cut to `data.train_examples` when that is set."""
  split = dataset.split("train")
  count = config.data.train_examples
  if count:
    if count > len(split):
      raise ConfigError(f"data.train_examples={count} but the training "
                        f"split has only {len(split)} examples")
    split = split.take(count)
  return split


def metric_names(config, task) -> dict[str, list[str]]:
  """The scalars training logs under train/ and val/, without training.

  Only the shapes of an empty collection's results are looked at, so they
  are traced, not computed: computing eagerly compiled each of its ops as
  a program of its own on a cold cache."""
  computed = jax.eval_shape(lambda: task.metrics_class.empty().compute())
  names = sorted(k for k, v in computed.items() if len(v.shape) == 0)
  extra = ["learning_rate"] + (["skipped_updates"]
                               if config.skip_nonfinite_updates else [])
  host = list(getattr(task, "split_score_names", ()))  # evaluations only
  return {"train": sorted(names + extra), "val": sorted(names + host)}


def check_best_metric(config, task) -> None:
  """best_metric must be one the run logs, or choosing the best fails late."""
  prefix, _, name = config.best_metric.partition("/")
  names = metric_names(config, task)
  if name not in names.get(prefix, []):
    raise ConfigError(
        f"best_metric={config.best_metric!r}: task {config.task.name!r} "
        f"logs {', '.join(f'val/{n}' for n in names['val'])} (and the same "
        "under train/)")


def _check_input_shape(model, config, split: datasets.Split) -> None:
  height, width = split.shape
  if not hasattr(model, "check_input"):
    return
  crop = config.augment.crop_size
  if not crop:
    model.check_input(height, width)
    return
  try:
    model.check_input(crop, crop)
  except ConfigError as e:  # the model calls it an image size
    reason = str(e).split(": ", 1)[-1]
    raise ConfigError(f"augment.crop_size={crop}: the crop size does not fit "
                      f"model {config.model.name!r}: {reason}") from None
