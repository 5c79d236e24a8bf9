"""The jitted functions of an experiment: one optimizer step, evaluation and
prediction of a batch, and compiling a step ahead of its first call (in a
thread, `CompilingAhead`, while the rest of the start goes on).
`jit_steps` binds them to a `experiment.Experiment`'s model and task."""
import dataclasses
import functools
import logging
import threading
from typing import Any

import jax
from flax import nnx

from unetjax.runtime import host_memory
from unetjax.training import health as health_lib
from unetjax.training import parallel


def train_step(graphdef, task, skip_nonfinite, state, metrics, health,
               batch):
  """One optimizer step; returns the new state, metrics and health.

  With `skip_nonfinite` a step with any non-finite quantity leaves the
  state and metrics as they were (like `optax.apply_if_finite`, but for the
  whole state: BatchNorm statistics and RNG counts too).
  """
  before = jax.tree.leaves(state)
  model, optimizer = nnx.merge(graphdef, state)
  model.train()

  def loss_fn(model):
    logits = model(task.inputs(batch))
    return task.loss_and_outputs(logits, batch)

  (loss, outputs), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  optimizer.update(model, grads)
  new_state = nnx.state((model, optimizer))
  new_metrics = metrics.merge(
      task.metrics_class.single_from_model_output(**outputs))
  bad = health_lib.nonfinite_flags(loss, grads)
  if skip_nonfinite:
    after, new_metrics = jax.lax.cond(
        bad.any(), lambda: (before, metrics),
        lambda: (jax.tree.leaves(new_state), new_metrics))
    new_state = jax.tree.unflatten(jax.tree.structure(new_state), after)
  return new_state, new_metrics, health_lib.record_health(health, bad)


def eval_step(graphdef, task, state, batch):
  """Metrics of one eval batch, model in inference mode."""
  model, _ = nnx.merge(graphdef, state)
  model.eval()
  _, outputs = task.loss_and_outputs(model(task.inputs(batch)), batch)
  return task.metrics_class.single_from_model_output(**outputs)


def eval_predict_step(graphdef, task, state, batch):
  """Metrics and predictions of one eval batch."""
  model, _ = nnx.merge(graphdef, state)
  model.eval()
  logits = model(task.inputs(batch))
  _, outputs = task.loss_and_outputs(logits, batch)
  return (task.metrics_class.single_from_model_output(**outputs),
          task.predict(logits))


def predict_step(graphdef, task, state, batch):
  """Predictions and per-example metric outputs of one batch."""
  model, _ = nnx.merge(graphdef, state)
  model.eval()
  logits = model(task.inputs(batch))
  _, outputs = task.loss_and_outputs(logits, batch)
  return task.predict(logits), outputs


@dataclasses.dataclass
class Steps:
  """The compiled step functions of one experiment."""
  train: Any
  eval: Any
  predict: Any
  eval_predict: Any


def jit_steps(experiment) -> Steps:
  bound = (experiment.graphdef, experiment.task)
  replicated = parallel.replicated(experiment.mesh)
  skip = experiment.config.skip_nonfinite_updates
  return Steps(
      train=jax.jit(functools.partial(train_step, *bound, skip),
                    donate_argnums=(0, 1, 2),
                    out_shardings=(replicated,) * 3),
      eval=jax.jit(functools.partial(eval_step, *bound)),
      predict=jax.jit(functools.partial(predict_step, *bound)),
      eval_predict=jax.jit(functools.partial(eval_predict_step, *bound)))


def compile_ahead(step, *args):
  """Compiles a jitted step for these arguments before its first run, with
  Python's garbage collector paused while it is traced, then gives the heap
  the compiler freed back to the OS (both `host_memory`), so the step's
  buffers do not come on top of it. Later calls of `step` reuse this
  compilation; the compiled executable is returned for its analyses."""
  return _compiled(_lowered(step, *args))


def _lowered(step, *args):
  """`step` traced and lowered for `args`, the collector paused meanwhile."""
  with host_memory.garbage_collection_paused():
    return step.lower(*args)


def _compiled(lowered):
  """XLA's executable for `lowered`; then the heap the compiler freed goes
  back to the OS."""
  try:
    return lowered.compile()
  finally:
    host_memory.release_free_heap()


def abstract_batch(shapes: dict[str, tuple[tuple[int, ...], Any]],
                   sharding) -> dict[str, jax.ShapeDtypeStruct]:
  """Stand-ins for a global batch of these (shape, dtype)s
  (`input_pipeline.train_batch_shapes`), laid out as `sharding`."""
  return {name: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
          for name, (shape, dtype) in shapes.items()}


def _signature(args) -> list[tuple[tuple[int, ...], Any]]:
  return [(tuple(x.shape), x.dtype) for x in jax.tree.leaves(args)]


class CompilingAhead:
  """`step` lowered here for `args` (arrays, or `jax.ShapeDtypeStruct`s for
  arrays not made yet) and compiled in a thread meanwhile: XLA's compiler
  releases the GIL, so a cold compile of the train step (seconds, on
  several cores) overlaps what the start does next (importing TensorFlow,
  creating the writers, starting the input pipeline). Lowering stays in
  the calling thread, with the garbage collector paused (`compile_ahead`),
  so no two threads trace or import at once.

  `wait(*real_args)` before the step's first call: it joins the thread,
  re-raises what the compile raised, and checks the real arguments have
  the shapes and dtypes the step was compiled for; where they do not (a
  stand-in that was wrong) it says so in a warning and compiles for them,
  so a wrong stand-in costs a compile, never a result. Use it as a context
  manager so the thread is joined however the block ends.
  """

  def __init__(self, step, *args):
    self._step = step
    self._expected = _signature(args)
    self._compiled, self._error = None, None
    self._thread = threading.Thread(target=self._compile,
                                    args=(_lowered(step, *args),),
                                    name="compile-ahead")
    self._thread.start()

  def _compile(self, lowered):
    try:
      self._compiled = _compiled(lowered)
    except BaseException as e:  # pylint: disable=broad-except
      self._error = e  # re-raised by `wait`, in the caller's thread

  def wait(self, *args):
    """The compiled step, for the arguments of its first call."""
    self._thread.join()
    if self._error is not None:
      raise self._error
    real = _signature(args)
    if real != self._expected:
      differ = [f"{e} (compiled for) != {r}"
                for e, r in zip(self._expected, real) if e != r]
      logging.warning("The step was compiled ahead for other shapes than "
                      "its first call's; compiling again: %s",
                      "; ".join(differ[:3]) or "different structure")
      return compile_ahead(self._step, *args)
    return self._compiled

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._thread.join()
