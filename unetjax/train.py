"""Training and evaluation: config in, checkpoints, logs and plots out.

The experiment is built here (data, task, model and optimizer from their
registries) and the loop runs it. The hot loop runs one jitted step per
batch (`steps`) on a split NNX state (`nnx.split` once, `nnx.merge` inside
the traced function): no Python graph walking per step, no host sync
except at log and eval intervals, and the state buffers donated. Metrics
accumulate on device in CLU collections; evaluation over a split is
`evaluation`.

Reliability (docs/reliability.md): the step also records, on device, the
first step whose loss or gradient was not finite (`health`); the host
looks at it only when it logs or saves, so a diverged state is never
checkpointed.
SIGTERM and SIGINT end the run after the current step with a checkpoint,
and a checkpoint holds everything the loop carries, so stopped, killed and
uninterrupted runs end bit-identical on CPU.
"""
import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
import time
from typing import Any

import jax
import ml_collections
from flax import nnx, serialization

from unetjax import checkpointing
from unetjax import config as config_lib
from unetjax import datasets, history, host_memory, input_pipeline, models
from unetjax import optimizers
from unetjax import parallel, schedules, tasks, workdir as workdir_lib
from unetjax import augment, evaluation, health as health_lib
from unetjax import steps as steps_lib
from unetjax.errors import ConfigError, TrainingStopped
from unetjax.metrics import scalars


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
  augment.validate(config.augment, *train.images.shape[1:3])
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
  without the data (`unetjax.trained`)."""
  return {"data_info": dataclasses.asdict(experiment.dataset.info),
          "steps_per_epoch": experiment.steps_per_epoch,
          "num_steps": experiment.num_steps}


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
  height, width = split.images.shape[1:3]
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


# --- the training loop -----------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Trains (or resumes) the experiment in `workdir`; returns final metrics.

  The workdir is checked before anything is built and written to only
  after the experiment was built, so a rejected run changes nothing.
  """
  parallel.initialize_distributed()
  workdir = os.path.abspath(workdir)
  config_lib.validate(config)
  workdir_lib.check_path(workdir)
  workdir_lib.check_config(workdir, config)  # before the lock file, too
  with workdir_lib.locked(workdir):
    workdir_lib.check_config(workdir, config)
    experiment = build_experiment(config)
    return _train(experiment, workdir)


def _train(experiment: Experiment, workdir: str) -> dict[str, Any]:
  """The loop; the workdir is written to only once the resume worked."""
  config = experiment.config
  replicated = parallel.replicated(experiment.mesh)

  def empty_metrics():  # a new one each time: the train step donates it
    return jax.device_put(experiment.task.metrics_class.empty(), replicated)

  mngr = checkpointing.manager(workdir, keep=config.keep_checkpoints,
                               best_metric=config.best_metric,
                               best_mode=config.best_mode)
  with checkpointing.closing(mngr):
    finished = _finished(experiment, mngr, workdir)
    if finished is not None:
      return finished
    state, loop, meta = _restore_or_init(experiment, mngr, _loop_tree(
        empty_metrics(),
        jax.device_put(health_lib.initial_health(), replicated)))
    train_metrics = serialization.from_state_dict(empty_metrics(),
                                                  loop["train_metrics"])
    health = loop["health"]
    start_step, seconds_before = meta["step"], meta["train_seconds"]
    logged: dict[str, float] = meta["logged"]
    workdir_lib.save_config(workdir, config)
    _write_text(os.path.join(workdir, workdir_lib.FACTS_FILE),
                json.dumps(experiment_facts(experiment), indent=2))
    logging.info("Model %s:\n%s", config.model.name, experiment.summary)
    _write_text(os.path.join(workdir, "model_summary.txt"),
                experiment.summary)
    history.truncate_after(workdir, start_step)
    steps = steps_lib.jit_steps(experiment)
    sharding = parallel.data_sharding(experiment.mesh)
    split = train_split(config, experiment.dataset)
    first_step = steps_lib.CompilingAhead(  # while TensorFlow is imported
        steps.train, state, train_metrics, health, steps_lib.abstract_batch(
            input_pipeline.train_batch_shapes(
                split, batch_size=config.batch_size,
                augment_config=config.augment), sharding))
    with first_step, _writer(workdir) as writer, _StopSignals() as stop:
      if start_step == 0:
        writer.write_hparams(config_lib.flat_items(config.to_dict()))
      names = health_lib.quantity_names(experiment)
      skip = config.skip_nonfinite_updates
      val = experiment.dataset.split("val")
      batches = input_pipeline.train_batches(
          split, batch_size=config.batch_size, seed=config.seed,
          start_step=start_step, augment_config=config.augment,
          process_index=jax.process_index(),
          process_count=jax.process_count())
      from unetjax import writers  # pylint: disable=g-import-not-at-top
      report = writers.progress_report(experiment.num_steps, writer,
                                       config.log_every_steps)

      def save(step, metrics):
        """Checks the state is finite, then starts an async save."""
        health_lib.check_health(health, names, skip, mngr.latest_step())
        meta = {"step": step, "examples_seen": step * config.batch_size,
                "train_seconds": seconds_before + train_seconds,
                "logged": logged}
        checkpointing.save(mngr, step, state, meta, metrics,
                           _loop_tree(train_metrics, health))

      train_seconds = 0.0
      started = time.perf_counter()
      for step in range(start_step + 1, experiment.num_steps + 1):
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
          batch = parallel.global_batch(next(batches), sharding)
          if step == start_step + 1:
            first_step.wait(state, train_metrics, health, batch)
            parallel.sync_processes("compiled")  # before its all-reduce
          state, train_metrics, health = steps.train(
              state, train_metrics, health, batch)
        if step == start_step + 1:  # a mark for `benchmark --startup`
          jax.block_until_ready(health)
          logging.info("First train step done.")
          host_memory.start_done()  # the collector back on (main.run)
        report(step)
        last = step == experiment.num_steps
        if step % config.log_every_steps == 0 or last:
          skipped = health_lib.check_health(health, names, skip,
                                            mngr.latest_step())
          logged.update(_prefixed("train", scalars(train_metrics.compute())))
          logged["train/learning_rate"] = float(experiment.schedule(step - 1))
          if skip:
            logged["train/skipped_updates"] = skipped
          writer.write_scalars(step, {k: v for k, v in logged.items()
                                      if k.startswith("train/")})
          train_metrics = empty_metrics()
        if step % config.eval_every_steps == 0 or last:
          train_seconds += time.perf_counter() - started
          health_lib.check_health(health, names, skip, mngr.latest_step())
          val_metrics = evaluation.evaluate(experiment, steps, state, val)
          logged.update(_prefixed("val", scalars(val_metrics)))
          writer.write_scalars(step, {k: v for k, v in logged.items()
                                      if k.startswith("val/")})
          save(step, dict(logged))
          writer.flush()  # the curves are drawn from the flushed history
          _draw(experiment, steps, state, val, val_metrics, workdir, writer,
                step)
          writer.flush()
          host_memory.release_free_heap()  # what evaluation compiled
          started = time.perf_counter()
        if stop.signum:
          train_seconds += time.perf_counter() - started
          if mngr.latest_step() != step:
            save(step, None)  # no metrics: kept as latest, never as best
          mngr.wait_until_finished()
          writer.flush()
          raise TrainingStopped(step, stop.signum)
      mngr.wait_until_finished()
      return _final_metrics(experiment, steps, state, workdir, logged,
                            train_seconds, seconds_before, start_step, mngr)


@contextlib.contextmanager
def _writer(workdir: str):
  """The run's metric writer, closed when the block ends. Importing it
  imports TensorFlow (CLU's TensorBoard writer)."""
  from unetjax import writers  # pylint: disable=g-import-not-at-top
  writer = writers.create(workdir)
  with contextlib.closing(writer):
    yield writer


class _StopSignals:
  """Turns the first SIGTERM or SIGINT into a flag the loop checks.

  The loop then saves and exits cleanly; a second signal acts as usual
  (a second Ctrl-C interrupts at once). Signals can only be caught in the
  main thread; elsewhere this does nothing.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle)
                        for s in self.SIGNALS}
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum
    print(f"Got {signal.Signals(signum).name}: stopping after this step "
          "and saving a checkpoint.", flush=True)
    self._restore()

  def _restore(self):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def __exit__(self, *exc):
    self._restore()


def _finished(experiment: Experiment, mngr, workdir: str) -> dict | None:
  """The metrics of a run that already reached num_steps (its files left
  alone), None for a run to start or resume; a num_steps below the
  latest checkpoint is an error."""
  latest = mngr.latest_step()
  if latest is None or latest < experiment.num_steps:
    return None
  config = experiment.config
  if latest > experiment.num_steps:
    length = (f"num_steps={config.num_steps}" if config.num_steps else
              f"num_epochs={config.num_epochs} ({experiment.num_steps} "
              "steps)")
    raise ConfigError(f"{length} but {workdir} has a checkpoint at step "
                      f"{latest}: a run can only be lengthened; use a new "
                      "--workdir for a shorter one")
  path = os.path.join(workdir, workdir_lib.METRICS_FILE)
  if not os.path.exists(path):
    return None  # the final metrics were not written: compute them
  final = workdir_lib.read_json_object(path, ConfigError, "a metrics record",
                                       "move it away to compute it again")
  if not isinstance(final.get("val"), dict):
    raise ConfigError(f"{path} is not a metrics record; move it away to "
                      "compute it again")
  print(f"{workdir} already finished: its checkpoint is at step {latest} = "
        "num_steps; nothing to do, no file changed (raise num_steps to "
        "train on)", flush=True)
  return final


def _loop_tree(train_metrics, health) -> dict[str, Any]:
  """What the loop carries between steps, as a tree Orbax can save."""
  return {"train_metrics": serialization.to_state_dict(train_metrics),
          "health": health}


def _restore_or_init(experiment: Experiment, mngr,
                     loop: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
  """State, loop state and record (step, train_seconds, logged) to go on."""
  latest = mngr.latest_step()
  if latest is None:
    logging.info("Starting a new run.")
    return experiment.state, loop, {"step": 0, "train_seconds": 0.0,
                                    "logged": {}}
  state, loop, meta = checkpointing.restore_training(
      mngr, latest, experiment.state, loop)
  logging.info("Resuming from the checkpoint at step %d.", meta["step"])
  print(f"Resuming from the checkpoint at step {meta['step']}.", flush=True)
  return state, loop, meta


def _prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
  return {f"{prefix}/{k}": v for k, v in values.items()}


def _draw(experiment, steps, state, split, computed, workdir, writer,
          step) -> None:
  """Learning curves and the task's own figures, as PNG and in TensorBoard."""
  if jax.process_index() > 0:
    return
  config = experiment.config
  plots_dir = os.path.join(workdir, "plots")
  batch, predictions, outputs = evaluation.first_predictions(
      experiment, steps, state, split, config.num_sample_images)
  images = experiment.task.figures(batch, predictions, outputs, computed,
                                   plots_dir)
  experiment.task.learning_curves(history.read(workdir), plots_dir)
  writer.write_images(step, {k: v[None] for k, v in images.items()})


def _final_metrics(experiment, steps, state, workdir, logged, train_seconds,
                   seconds_before, start_step, mngr) -> dict[str, Any]:
  """Writes metrics.json: the last train/val metrics, test if it exists."""
  final = {
      "step": experiment.num_steps,
      "num_params": experiment.num_params,
      "train_seconds": round(seconds_before + train_seconds, 2),
      "train_seconds_this_run": round(train_seconds, 2),
      "steps_per_second_this_run": round(
          (experiment.num_steps - start_step) / train_seconds, 3)
          if train_seconds > 0 else None,  # no steps ran in this process
      "best_checkpoint_step": mngr.best_step(),
      "train": {k[6:]: v for k, v in logged.items() if k.startswith("train/")},
      "val": {k[4:]: v for k, v in logged.items() if k.startswith("val/")},
  }
  if experiment.dataset.has_split("test"):
    test = evaluation.evaluate(experiment, steps, state,
                    experiment.dataset.split("test"))
    final["test"] = scalars(test)
  if jax.process_index() == 0:
    _write_text(os.path.join(workdir, "metrics.json"),
                json.dumps(final, indent=2))
  logging.info("Final metrics: %s", final)
  return final


def _write_text(path: str, text: str) -> None:
  if jax.process_index() > 0:
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text + "\n")
  os.replace(tmp, path)
