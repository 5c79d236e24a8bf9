"""Image classification: one logit per class, softmax cross-entropy.

Metrics over a split: loss, accuracy, `accuracy_class_<k>` (the recall of
class k: the share of its examples predicted as k; NaN when the split has
none) and the confusion matrix, rows the true class. All accumulate on
device as counts, so the set-level values are exact over any batching and
the padding of the last eval batch never counts.
"""
import functools
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metrics

from unetjax.runtime.errors import ConfigError
from unetjax.tasks import metrics as metrics_lib
from unetjax.viz import plots


def class_accuracy(num_classes: int, label: int):
  """Recall of one class, read off the accumulated confusion matrix."""

  @flax.struct.dataclass
  class ClassAccuracy(metrics_lib.confusion_matrix(num_classes)):

    def compute(self):
      row = self.counts[label]
      total = row.sum()
      return jnp.where(total > 0, row[label] / jnp.maximum(total, 1.0),
                       jnp.nan)

  return ClassAccuracy


@functools.cache
def classification_metrics(num_classes: int) -> type[metrics.Collection]:
  """One collection class per class count, so jit sees a stable pytree."""
  per_class = {f"accuracy_class_{k}": class_accuracy(num_classes, k)
               for k in range(num_classes)}
  return metrics.Collection.create(
      loss=metrics.Average.from_output("loss"),
      accuracy=metrics.Average.from_output("accuracy"),
      confusion_matrix=metrics_lib.confusion_matrix(num_classes),
      **per_class)


class Classification:
  """One class id per image."""

  per_example_metric = "true_class_probability"

  def __init__(self, *, info):
    if info.num_classes < 2:
      raise ConfigError(f"task.name='classification' needs at least 2 "
                        f"classes; data.name={info.name!r} has "
                        f"{info.num_classes}")
    self.num_outputs = info.num_classes
    self.class_names = list(info.class_names)
    self.dataset_name = info.name
    self.metrics_class = classification_metrics(info.num_classes)

  def inputs(self, batch):
    return batch["image"]

  def loss_and_outputs(self, logits, batch):
    """Mean cross-entropy over real examples and per-example outputs."""
    labels = batch["label"]
    if labels.ndim != 1:
      raise ConfigError(
          f"task.name='classification' needs one class id per image, but "
          f"data.name={self.dataset_name!r} gives labels of shape "
          f"{labels.shape[1:]} per image")
    logits = logits.astype(jnp.float32)
    per_example = optax.softmax_cross_entropy_with_integer_labels(
        logits, labels)
    mask = batch.get("mask", jnp.ones(logits.shape[0], jnp.float32))
    loss = jnp.sum(per_example * mask) / jnp.maximum(mask.sum(), 1.0)
    predicted = jnp.argmax(logits, axis=-1)
    truth_one_hot = jax.nn.one_hot(labels, self.num_outputs)
    probabilities = jax.nn.softmax(logits)
    outputs = dict(
        loss=per_example,
        accuracy=(predicted == labels).astype(jnp.float32),
        confusion=truth_one_hot[:, :, None] * jax.nn.one_hot(
            predicted, self.num_outputs)[:, None, :],
        true_class_probability=jnp.sum(probabilities * truth_one_hot, -1),
        true_class=labels,
        predicted_class=predicted,
        mask=mask)
    return loss, outputs

  def predict(self, logits):
    """Class probabilities."""
    return jax.nn.softmax(logits.astype(jnp.float32))

  def figures(self, batch, predictions, outputs, computed,
              plots_dir) -> dict:
    """confusion_matrix.png of the split just evaluated."""
    del batch, predictions, outputs
    pixels = plots.confusion_matrix(
        np.asarray(computed["confusion_matrix"]), self.class_names,
        os.path.join(plots_dir, "confusion_matrix.png"),
        title=f"accuracy {float(computed['accuracy']):.4f}")
    return {"confusion_matrix": pixels}

  def learning_curves(self, records, plots_dir) -> None:
    plots.learning_curves(records, ["loss", "accuracy"],
                          os.path.join(plots_dir, "learning_curves.png"))
