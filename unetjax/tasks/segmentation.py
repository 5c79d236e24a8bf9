"""Binary segmentation: one logit per pixel, sigmoid, BCE (+ soft Dice).

Dice and IoU conventions: an image whose truth and prediction are both
empty scores 1 (perfect agreement); one with an empty truth but a non-empty
prediction scores 0. The same holds for the set-level scores.

The loss is bce_weight * BCE + dice_weight * (1 - soft Dice).
Class weights scale each pixel's BCE by the weight of its true class
(`pos_weight=w` is `class_weights=(1, w)`). A batch may carry a `valid`
map (variable-size datasets, padded): pixels where it is 0 count in no
loss and no metric.
"""
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metrics

from unetjax.models.layers import center_crop
from unetjax.runtime.errors import ConfigError
from unetjax.tasks import metrics as metrics_lib
from unetjax.viz import plots


@flax.struct.dataclass
class BinarySegmentationMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Average.from_output("accuracy")
  dice: metrics_lib.ratio_of_sums("dice_num", "dice_den")
  dice_per_image: metrics.Average.from_output("dice_per_image")
  iou: metrics_lib.ratio_of_sums("intersection", "union")


class BinarySegmentation:
  """Foreground (label 1) against background (label 0)."""

  metrics_class = BinarySegmentationMetrics
  num_outputs = 1
  per_example_metric = "dice_per_image"

  def __init__(self, *, info, dice_weight: float = 0.0,
               pos_weight: float = 1.0, class_weights: tuple[float, ...] = (),
               bce_weight: float = 1.0, closeup_steps: int = 0):
    if info.num_classes != 2:
      raise ConfigError(
          f"task.name='binary_segmentation' needs a dataset with 2 classes; "
          f"data.name={info.name!r} has {info.num_classes}")
    if dice_weight < 0 or bce_weight < 0 or pos_weight <= 0 or not (
        dice_weight or bce_weight):
      raise ConfigError(f"task.dice_weight={dice_weight}, task.bce_weight="
                        f"{bce_weight}: expected >= 0, not both 0, and "
                        f"task.pos_weight={pos_weight} > 0")
    if closeup_steps < 0:
      raise ConfigError(f"task.closeup_steps={closeup_steps}: expected >= 0 "
                        "(0: no close-up plot)")
    if class_weights and (len(class_weights) != 2 or pos_weight != 1.0
                          or min(class_weights) <= 0):
      raise ConfigError(
          f"task.class_weights={tuple(class_weights)}: expected two weights "
          "> 0 (background, foreground), and task.pos_weight left at 1")
    self.dice_weight = dice_weight
    self.bce_weight = bce_weight
    self.closeup_steps = closeup_steps
    self.class_weights = tuple(class_weights) or (1.0, pos_weight)

  def inputs(self, batch):
    return batch["image"]

  def targets(self, logits, batch):
    """Labels cropped to the logits (VALID-padded models output less)."""
    labels = batch["label"]
    return center_crop(labels, logits.shape[1], logits.shape[2])

  def valid_pixels(self, logits, batch):
    """1 where a pixel is real, 0 in padding; cropped like the targets."""
    if "valid" not in batch:
      return jnp.ones(logits.shape[:3], jnp.float32)
    valid = center_crop(batch["valid"], logits.shape[1], logits.shape[2])
    return valid.astype(jnp.float32)

  def loss_and_outputs(self, logits, batch):
    """Scalar training loss and the per-example metric outputs."""
    logits = logits[..., 0].astype(jnp.float32)
    truth = self.targets(logits, batch).astype(jnp.float32)
    valid = self.valid_pixels(logits, batch)
    bce = optax.sigmoid_binary_cross_entropy(logits, truth)
    weights = jnp.where(truth > 0, self.class_weights[1],
                        self.class_weights[0]) * valid
    per_example = self.bce_weight * jnp.sum(
        bce * weights, axis=(1, 2)) / jnp.maximum(
            jnp.sum(valid, axis=(1, 2)), 1.0)
    if self.dice_weight:
      per_example += self.dice_weight * soft_dice_loss(
          jax.nn.sigmoid(logits), truth, valid=valid)
    mask = batch.get("mask", jnp.ones(logits.shape[0], jnp.float32))
    loss = jnp.sum(per_example * mask) / jnp.maximum(mask.sum(), 1.0)
    outputs = overlap_outputs(logits > 0, truth > 0, valid)
    outputs.update(loss=per_example, mask=mask)
    return loss, outputs

  def predict(self, logits):
    """Foreground probability per pixel."""
    return jax.nn.sigmoid(logits[..., 0].astype(jnp.float32))

  def figures(self, batch, predictions, outputs, computed,
              plots_dir) -> dict:
    """samples.png: image | label | thresholded prediction, with Dice."""
    del computed
    predictions = predictions > 0.5
    labels = np.stack([_crop(label, *predictions.shape[1:])
                       for label in batch["label"]])
    pixels = plots.segmentation_samples(
        batch["image"], labels, predictions, outputs["dice_per_image"],
        os.path.join(plots_dir, "samples.png"))
    return {"samples": pixels}

  def learning_curves(self, records, plots_dir) -> None:
    """learning_curves.png; with closeup_steps also the first steps alone."""
    plots.learning_curves(records, ["loss", "dice", "accuracy"],
                          os.path.join(plots_dir, "learning_curves.png"))
    if self.closeup_steps:
      plots.learning_curves(
          records, ["accuracy", "loss"],
          os.path.join(plots_dir, "learning_curves_closeup.png"),
          steps=(0, self.closeup_steps),
          title=f"first {self.closeup_steps} steps")


def _crop(label, height, width):
  top = (label.shape[0] - height) // 2
  left = (label.shape[1] - width) // 2
  return label[top:top + height, left:left + width]


def overlap_outputs(pred, truth, valid=None) -> dict[str, jax.Array]:
  """Per-example overlap counts behind accuracy, Dice and IoU.

  `valid` (1 = real pixel) leaves padding out of every count.
  """
  axes = tuple(range(1, pred.ndim))
  valid = jnp.ones(pred.shape, jnp.float32) if valid is None else valid
  agree = jnp.sum(jnp.where(pred == truth, valid, 0.0), axis=axes)
  pred = pred.astype(jnp.float32) * valid
  truth = truth.astype(jnp.float32) * valid
  intersection = jnp.sum(pred * truth, axis=axes)
  sizes = jnp.sum(pred, axis=axes) + jnp.sum(truth, axis=axes)
  return dict(
      accuracy=agree / jnp.maximum(jnp.sum(valid, axis=axes), 1.0),
      dice_num=2 * intersection,
      dice_den=sizes,
      dice_per_image=jnp.where(sizes > 0, 2 * intersection /
                               jnp.maximum(sizes, 1.0), 1.0),
      intersection=intersection,
      union=sizes - intersection,
      iou_per_image=jnp.where(sizes > 0, intersection / jnp.maximum(
          sizes - intersection, 1.0), 1.0),
  )


def soft_dice_loss(probs, truth, smooth: float = 1.0, valid=None):
  """1 - soft Dice per example; `smooth` keeps empty masks finite."""
  axes = tuple(range(1, probs.ndim))
  if valid is not None:
    probs, truth = probs * valid, truth * valid
  intersection = jnp.sum(probs * truth, axis=axes)
  sizes = jnp.sum(probs, axis=axes) + jnp.sum(truth, axis=axes)
  return 1.0 - (2 * intersection + smooth) / (sizes + smooth)
