"""Evaluating a model over a split, as training and the tools do: the
task's metrics on the device, batch after batch (padding masked out), the
task's host-side object scores where it has them, and the first examples'
predictions for the figures. `experiment` is a `experiment.Experiment` and
`steps` its `steps.Steps`."""
from typing import Any, Iterator

import jax
import numpy as np

from unetjax import data as datasets
from unetjax.data import input_pipeline, normalize
from unetjax.runtime import console
from unetjax.training import parallel


def evaluate(experiment, steps, state,
             split: datasets.Split) -> dict[str, Any]:
  """Task metrics over a whole split (padding excluded), with the task's
  host-side scores (`split_scores`) where it has them."""
  if hasattr(experiment.task, "object_scores"):
    computed, rows = evaluate_objects(experiment, steps, state, split)
    return {**computed, **experiment.task.split_scores(rows)}
  sharding = parallel.data_sharding(experiment.mesh)
  metrics = None
  for local in _counted(experiment, split):
    batch_metrics = steps.eval(state, parallel.global_batch(local, sharding))
    metrics = batch_metrics if metrics is None else metrics.merge(
        batch_metrics)
  return jax.tree.map(np.asarray, metrics.compute())


def evaluate_objects(experiment, steps, state, split: datasets.Split):
  """(device metrics, per-example host scores in split order) of a task
  with `object_scores`. Each batch's predictions come to the host once and
  are scored there after the next batch was dispatched, so the device
  computes while the host scores."""
  sharding = parallel.data_sharding(experiment.mesh)
  metrics, rows, indices, pending = None, [], [], None

  def score(local, predictions):
    rows.extend(experiment.task.object_scores(
        local, parallel.local_rows(predictions)))
    indices.extend(local["index"][local["mask"] > 0].tolist())
  for local in _counted(experiment, split):
    batch_metrics, predictions = steps.eval_predict(
        state, parallel.global_batch(local, sharding))
    metrics = batch_metrics if metrics is None else metrics.merge(
        batch_metrics)
    if pending is not None:
      score(*pending)
    pending = (local, predictions)
  score(*pending)
  rows = parallel.gather_rows(rows, indices)
  return jax.tree.map(np.asarray, metrics.compute()), rows


def _counted(experiment, split):
  """`eval_batches` under a progress bar (on a terminal only). Every
  process computes ceil(examples / eval_batch_size) batches, of any sizes
  and storage (`input_pipeline._eval_plan`)."""
  total = -(-len(split) // experiment.config.eval_batch_size)
  return console.bar(iterable=eval_batches(experiment, split), total=total,
                     desc="evaluate", unit="batch", leave=False)


def eval_batches(experiment, split,
                 by_size: bool = True) -> Iterator[dict[str, np.ndarray]]:
  """Eval batches; variable-size splits of a SAME-padded model (it takes
  any multiple of 32) in size-sorted batches (`input_pipeline`)."""
  same = experiment.config.model.get("padding", "SAME") == "SAME"
  return input_pipeline.eval_batches(
      split, batch_size=experiment.config.eval_batch_size,
      process_index=jax.process_index(), process_count=jax.process_count(),
      by_size=by_size and same,
      normalization=normalize.setting(experiment.config))


def first_predictions(experiment, steps, state, split: datasets.Split,
                      count: int):
  """The first `count` examples of a split with predictions and outputs."""
  sharding = parallel.data_sharding(experiment.mesh)
  local = next(eval_batches(experiment, split, by_size=False))
  predictions, outputs = steps.predict(
      state, parallel.global_batch(local, sharding))
  count = min(count, len(split), len(local["mask"]))
  batch = {k: v[:count] for k, v in local.items()}
  outputs = {k: parallel.to_host(v)[:count] for k, v in outputs.items()}
  return batch, parallel.to_host(predictions)[:count], outputs


