"""Training and evaluation: config in, checkpoints, logs and plots out.

The experiment is built by `experiment` (data, task, model and optimizer
from their registries) and the loop here runs it. The hot loop runs one jitted step per
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
import json
import logging
import os
import signal
import threading
import time
from typing import Any

import jax
import ml_collections
from flax import serialization

from unetjax.data import input_pipeline, normalize
from unetjax.runtime import checkpointing, console, history, host_memory
from unetjax.runtime import config as config_lib
from unetjax.runtime.errors import ConfigError, TrainingStopped
from unetjax.tasks.metrics import scalars
from unetjax.training import evaluation, parallel
from unetjax.training import health as health_lib
from unetjax.training import steps as steps_lib
from unetjax.training import workdir as workdir_lib
from unetjax.training.experiment import (
    Experiment,
    build_experiment,
    experiment_facts,
    train_split,
)


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
    workdir_lib.check_step_folders(workdir)
    experiment = build_experiment(config)
    return _train(experiment, workdir)


def _train(experiment: Experiment, workdir: str) -> dict[str, Any]:
  """The loop; the workdir is written to only once the resume worked."""
  config = experiment.config
  mngr = checkpointing.manager(workdir, keep=config.keep_checkpoints,
                               best_metric=config.best_metric,
                               best_mode=config.best_mode)
  with checkpointing.closing(mngr):
    finished = _finished(experiment, mngr, workdir)
    if finished is not None:
      return finished
    loop = _Loop(experiment, workdir, mngr)  # a bad checkpoint: no file
    with console.log_file(workdir):
      loop.write_run_files()
      return loop.run()


class _Loop:
  """One process's run of the loop from where the checkpoint left it: what
  the loop carries (state, train metrics, health, the logged scalars) and
  the work done at each step, log point, evaluation point and stop."""

  def __init__(self, experiment: Experiment, workdir: str, mngr):
    self.experiment, self.config = experiment, experiment.config
    self.workdir, self.mngr = workdir, mngr
    self.replicated = parallel.replicated(experiment.mesh)
    self.state, loop, meta = _restore_or_init(experiment, mngr, _loop_tree(
        self.empty_metrics(),
        jax.device_put(health_lib.initial_health(), self.replicated)))
    self.train_metrics = serialization.from_state_dict(self.empty_metrics(),
                                                       loop["train_metrics"])
    self.health = loop["health"]
    self.start_step = meta["step"]
    self.seconds_before = meta["train_seconds"]
    self.train_seconds = 0.0  # of this process
    self.logged: dict[str, float] = meta["logged"]
    self.names = health_lib.quantity_names(experiment)
    self.skip = self.config.skip_nonfinite_updates
    self.steps = self.writer = self.progress = None

  def empty_metrics(self):  # a new one each time: the train step donates it
    return jax.device_put(self.experiment.task.metrics_class.empty(),
                          self.replicated)

  def write_run_files(self) -> None:
    """config.json, experiment.json, the model summary; history.jsonl cut
    back to the checkpoint's step."""
    experiment, workdir = self.experiment, self.workdir
    workdir_lib.save_config(workdir, self.config)
    _write_text(os.path.join(workdir, workdir_lib.FACTS_FILE),
                json.dumps(experiment_facts(experiment), indent=2))
    logging.info("Model %s:\n%s", self.config.model.name, experiment.summary)
    _write_text(os.path.join(workdir, "model_summary.txt"),
                experiment.summary)
    history.truncate_after(workdir, self.start_step)
    if jax.process_index() == 0:
      shown = os.path.relpath(workdir)
      shown = workdir if shown.startswith("..") else shown
      console.say(
          f"Training {self.config.model.name} ({experiment.num_params:,} "
          f"parameters) on {experiment.dataset.info.name} for "
          f"{experiment.num_steps} steps in {shown} (config.json, "
          f"{console.LOG_FILE}: the full log; TensorBoard: tensorboard "
          f"--logdir {shown})")

  def run(self) -> dict[str, Any]:
    """Steps from the checkpoint's to num_steps; the final metrics."""
    experiment, config = self.experiment, self.config
    self.steps = steps_lib.jit_steps(experiment)
    sharding = parallel.data_sharding(experiment.mesh)
    split = train_split(config, experiment.dataset)
    first_step = steps_lib.CompilingAhead(  # while TensorFlow is imported
        self.steps.train, self.state, self.train_metrics, self.health,
        steps_lib.abstract_batch(input_pipeline.train_batch_shapes(
            split, batch_size=config.batch_size,
            augment_config=config.augment), sharding))
    with first_step, _writer(self.workdir) as writer, _StopSignals() as stop:
      self.writer = writer
      if self.start_step == 0:
        writer.write_hparams(config_lib.flat_items(config.to_dict()))
      val = experiment.dataset.split("val")
      batches = input_pipeline.train_batches(
          split, batch_size=config.batch_size, seed=config.seed,
          start_step=self.start_step, augment_config=config.augment,
          process_index=jax.process_index(),
          process_count=jax.process_count(),
          normalization=normalize.setting(config))
      from unetjax.training import writers  # pylint: disable=g-import-not-at-top
      report = writers.progress_report(experiment.num_steps, writer,
                                       config.log_every_steps)
      started = time.perf_counter()
      self.progress = console.TrainProgress(experiment.num_steps,
                                            self.start_step)
      for step in range(self.start_step + 1, experiment.num_steps + 1):
        self.train_step(step, next(batches), sharding, first_step)
        report(step)
        self.progress.step()
        last = step == experiment.num_steps
        if step % config.log_every_steps == 0 or last:
          self.log_train(step)
        if step % config.eval_every_steps == 0 or last:
          self.train_seconds += time.perf_counter() - started
          with self.progress.pause():
            self.evaluate_and_save(step, val)
          started = time.perf_counter()
        if stop.signum:
          self.train_seconds += time.perf_counter() - started
          self.stop(step, stop.signum)
      self.mngr.wait_until_finished()
      self.progress.close()
      return _final_metrics(experiment, self.steps, self.state, self.workdir,
                            self.logged, self.train_seconds,
                            self.seconds_before, self.start_step, self.mngr)

  def train_step(self, step: int, host_batch, sharding, first_step) -> None:
    """One jitted step; the first one waits for the compile done ahead."""
    first = step == self.start_step + 1
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      batch = parallel.global_batch(host_batch, sharding)
      if first:
        first_step.wait(self.state, self.train_metrics, self.health, batch)
        parallel.sync_processes("compiled")  # before its all-reduce
      self.state, self.train_metrics, self.health = self.steps.train(
          self.state, self.train_metrics, self.health, batch)
    if first:  # a mark for `benchmark --startup`
      jax.block_until_ready(self.health)
      logging.info("First train step done.")
      host_memory.start_done()  # the collector back on (main.run)

  def check_health(self) -> int:
    """Raises on a non-finite loss or gradient; the updates skipped."""
    return health_lib.check_health(self.health, self.names, self.skip,
                                   self.mngr.latest_step())

  def log_train(self, step: int) -> None:
    """The train metrics since the last log point, then a fresh count."""
    skipped = self.check_health()
    self.logged.update(_prefixed("train",
                                 scalars(self.train_metrics.compute())))
    self.logged["train/learning_rate"] = float(
        self.experiment.schedule(step - 1))
    if self.skip:
      self.logged["train/skipped_updates"] = skipped
    self.writer.write_scalars(step, {k: v for k, v in self.logged.items()
                                     if k.startswith("train/")})
    self.train_metrics = self.empty_metrics()
    self.progress.logged(step, {k[6:]: v for k, v in self.logged.items()
                                if k.startswith("train/")})

  def evaluate_and_save(self, step: int, val) -> None:
    """Validation metrics, a checkpoint, the figures."""
    self.check_health()
    val_metrics = evaluation.evaluate(self.experiment, self.steps, self.state,
                                      val)
    self.logged.update(_prefixed("val", scalars(val_metrics)))
    self.progress.evaluated(step, "val", scalars(val_metrics))
    self.writer.write_scalars(step, {k: v for k, v in self.logged.items()
                                     if k.startswith("val/")})
    self.save(step, dict(self.logged))
    self.writer.flush()  # the curves are drawn from the flushed history
    _draw(self.experiment, self.steps, self.state, val, val_metrics,
          self.workdir, self.writer, step)
    self.writer.flush()
    host_memory.release_free_heap()  # what evaluation compiled

  def save(self, step: int, metrics: dict | None) -> None:
    """Checks the state is finite, then starts an async save."""
    self.check_health()
    meta = {"step": step, "examples_seen": step * self.config.batch_size,
            "train_seconds": self.seconds_before + self.train_seconds,
            "logged": self.logged}
    checkpointing.save(self.mngr, step, self.state, meta, metrics,
                       _loop_tree(self.train_metrics, self.health))

  def stop(self, step: int, signum: int) -> None:
    """A signal came: checkpoint this step (if not yet) and end the run."""
    self.progress.close()
    if self.mngr.latest_step() != step:
      self.save(step, None)  # no metrics: kept as latest, never as best
    self.mngr.wait_until_finished()
    self.writer.flush()
    raise TrainingStopped(step, signum)


@contextlib.contextmanager
def _writer(workdir: str):
  """The run's metric writer, closed when the block ends. Importing it
  imports TensorFlow (CLU's TensorBoard writer)."""
  from unetjax.training import writers  # pylint: disable=g-import-not-at-top
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
