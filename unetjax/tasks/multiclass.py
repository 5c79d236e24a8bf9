"""Multi-class segmentation: one logit per class and pixel, softmax CE.

Pixel accuracy, per-class IoU and mean IoU are computed over the whole set
from an accumulated confusion matrix (rows the true class), so every pixel
weighs the same however the set is batched; an average of per-batch IoUs
would not be. A class absent from both truth and prediction over the set
has no IoU: it reports NaN and is left out of the mean IoU.
"""
import functools
import os
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metrics

from unetjax.models.layers import center_crop
from unetjax.runtime.errors import ConfigError
from unetjax.tasks import metrics as metrics_lib
from unetjax.tasks.segmentation import soft_dice_loss
from unetjax.viz import plots


def iou_per_class(counts):
  """IoU of each class from a confusion matrix; NaN where the union is 0."""
  intersection = jnp.diagonal(counts)
  union = counts.sum(axis=0) + counts.sum(axis=1) - intersection
  return jnp.where(union > 0, intersection / jnp.maximum(union, 1.0), jnp.nan)


def from_confusion(num_classes: int, summary):
  """A metric that accumulates the confusion matrix and reports summary(it)."""

  @flax.struct.dataclass
  class FromConfusion(metrics_lib.confusion_matrix(num_classes)):

    def compute(self):
      return summary(self.counts)

  return FromConfusion


def metric_name(class_name: str) -> str:
  """'Cell border' -> 'iou_cell_border': a key that logs and plots cleanly."""
  return "iou_" + re.sub(r"[^0-9a-z]+", "_", class_name.lower()).strip("_")


@functools.cache
def segmentation_metrics(class_names: tuple[str, ...]):
  """One collection class per class list, so jit sees a stable pytree."""
  n = len(class_names)
  per_class = {metric_name(name): from_confusion(
      n, lambda counts, k=k: iou_per_class(counts)[k])
               for k, name in enumerate(class_names)}
  if len(per_class) != n:
    raise ConfigError(f"class names {class_names} give clashing metric names")
  return metrics.Collection.create(
      loss=metrics.Average.from_output("loss"),
      accuracy=from_confusion(
          n, lambda counts: jnp.trace(counts) / jnp.maximum(counts.sum(), 1)),
      mean_iou=from_confusion(
          n, lambda counts: jnp.nanmean(iou_per_class(counts))),
      confusion_matrix=metrics_lib.confusion_matrix(n),
      **per_class)


class MulticlassSegmentation:
  """Every pixel gets one of the dataset's classes (ids 0..C-1)."""

  per_example_metric = "accuracy"

  def __init__(self, *, info, dice_weight: float = 0.0):
    if info.num_classes < 2:
      raise ConfigError(f"task.name='segmentation' needs at least 2 classes; "
                        f"data.name={info.name!r} has {info.num_classes}")
    if dice_weight < 0:
      raise ConfigError(f"task.dice_weight={dice_weight}: expected >= 0")
    self.dice_weight = dice_weight
    self.num_outputs = info.num_classes
    self.class_names = tuple(info.class_names)
    self.dataset_name = info.name
    self.metrics_class = segmentation_metrics(self.class_names)

  def inputs(self, batch):
    return batch["image"]

  def loss_and_outputs(self, logits, batch):
    """Mean CE (+ Dice) over real examples, per-example confusion counts."""
    if batch["label"].ndim != 3:
      raise ConfigError(
          f"task.name='segmentation' needs a class id per pixel, but "
          f"data.name={self.dataset_name!r} gives labels of shape "
          f"{batch['label'].shape[1:]} per image")
    logits = logits.astype(jnp.float32)
    labels = center_crop(batch["label"], logits.shape[1], logits.shape[2])
    per_example = optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean(axis=(1, 2))
    truth = jax.nn.one_hot(labels, self.num_outputs)
    if self.dice_weight:
      per_example += self.dice_weight * self._dice_loss(
          jax.nn.softmax(logits), truth)
    mask = batch.get("mask", jnp.ones(logits.shape[0], jnp.float32))
    loss = jnp.sum(per_example * mask) / jnp.maximum(mask.sum(), 1.0)
    predicted = jnp.argmax(logits, axis=-1)
    outputs = dict(
        loss=per_example,
        accuracy=jnp.mean(predicted == labels, axis=(1, 2)),
        confusion=jnp.einsum("nhwi,nhwj->nij", truth,
                             jax.nn.one_hot(predicted, self.num_outputs)),
        mask=mask)
    return loss, outputs

  def _dice_loss(self, probs, truth):
    """1 - soft Dice of each class, averaged over classes, per example."""
    n, h, w, c = probs.shape

    def per_class(x):
      return jnp.moveaxis(x, -1, 1).reshape(n * c, h, w)

    return soft_dice_loss(per_class(probs), per_class(truth)).reshape(
        n, c).mean(axis=1)

  def predict(self, logits):
    """The most likely class of each pixel."""
    return jnp.argmax(logits, axis=-1)

  def figures(self, batch, predictions, outputs, computed,
              plots_dir) -> dict:
    """samples.png (with a class legend) and the set's confusion matrix."""
    labels = center_crop(batch["label"], *predictions.shape[1:])
    samples = plots.multiclass_samples(
        batch["image"], labels, predictions, self.class_names,
        outputs["accuracy"], os.path.join(plots_dir, "samples.png"))
    confusion = plots.confusion_matrix(
        np.asarray(computed["confusion_matrix"]), list(self.class_names),
        os.path.join(plots_dir, "confusion_matrix.png"),
        title=f"mean IoU {float(computed['mean_iou']):.4f}")
    return {"samples": samples, "confusion_matrix": confusion}

  def learning_curves(self, records, plots_dir) -> None:
    plots.learning_curves(records, ["loss", "mean_iou", "accuracy"],
                          os.path.join(plots_dir, "learning_curves.png"))
