"""Colorization: from the lightness L of a photo, predict its colour.

The model sees L (scaled to [0, 1]) and predicts either RGB directly or the
a, b channels of Lab (the colour L leaves open; scaled by 1/128 to about
[-1, 1]), under an L1 or L2 loss. Inputs and targets are derived from the
RGB image inside the jitted step, so any RGB dataset serves. PSNR is
measured on the RGB result in [0, 1] (for ab, combined with the true L),
per image and averaged; `psnr_gray` is the PSNR of the colourless image
(a = b = 0), the baseline a model has to beat.
"""
import os

import flax
import jax.numpy as jnp
import numpy as np
from clu import metrics

from unetjax.models.layers import center_crop
from unetjax.runtime.errors import ConfigError
from unetjax.tasks import color
from unetjax.viz import plots

AB_SCALE = 128.0  # a, b span about +-128: scaled to about [-1, 1]
_TARGETS = ("ab", "rgb")
_LOSSES = ("l1", "l2")


@flax.struct.dataclass
class ColorizationMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  psnr: metrics.Average.from_output("psnr")
  psnr_gray: metrics.Average.from_output("psnr_gray")


def psnr(prediction, truth):
  """Peak signal-to-noise ratio in dB per image, values in [0, 1]."""
  mse = jnp.mean((prediction - truth) ** 2, axis=(1, 2, 3))
  return 10 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))


class Colorization:
  """Grayscale (L) in, colour out; the dataset's labels are not used."""

  metrics_class = ColorizationMetrics
  per_example_metric = "psnr"
  in_channels = 1

  def __init__(self, *, info, target: str = "ab", loss: str = "l1"):
    if info.in_channels != 3:
      raise ConfigError(f"task.name='colorization' needs RGB images; "
                        f"data.name={info.name!r} has {info.in_channels} "
                        "channel(s)")
    if target not in _TARGETS:
      raise ConfigError(f"task.target={target!r}: expected one of {_TARGETS}")
    if loss not in _LOSSES:
      raise ConfigError(f"task.loss={loss!r}: expected one of {_LOSSES}")
    self.target = target
    self.loss = loss
    self.num_outputs = 3 if target == "rgb" else 2

  def inputs(self, batch):
    return color.rgb_to_gray(batch["image"])

  def targets(self, rgb):
    if self.target == "rgb":
      return rgb
    return color.rgb_to_lab(rgb)[..., 1:] / AB_SCALE

  def to_rgb(self, outputs, rgb):
    """RGB in [0, 1] from model outputs; ab takes its L from `rgb`."""
    if self.target == "rgb":
      return jnp.clip(outputs, 0.0, 1.0)
    lightness = color.rgb_to_lab(rgb)[..., :1]
    return color.lab_to_rgb(jnp.concatenate(
        [lightness, outputs * AB_SCALE], axis=-1))

  def loss_and_outputs(self, logits, batch):
    """Mean L1/L2 error over real examples; PSNR per example."""
    logits = logits.astype(jnp.float32)
    rgb = center_crop(batch["image"], logits.shape[1], logits.shape[2])
    error = logits - self.targets(rgb)
    error = jnp.abs(error) if self.loss == "l1" else error ** 2
    per_example = error.mean(axis=(1, 2, 3))
    mask = batch.get("mask", jnp.ones(logits.shape[0], jnp.float32))
    loss = jnp.sum(per_example * mask) / jnp.maximum(mask.sum(), 1.0)
    colourless = color.lab_to_rgb(color.rgb_to_lab(rgb) * jnp.array(
        [1.0, 0.0, 0.0]))
    outputs = dict(loss=per_example, psnr=psnr(self.to_rgb(logits, rgb), rgb),
                   psnr_gray=psnr(colourless, rgb), mask=mask)
    return loss, outputs

  def predict(self, logits):
    """RGB, or ab scaled to about [-1, 1] (figures add the true L)."""
    return logits.astype(jnp.float32)

  def figures(self, batch, predictions, outputs, computed,
              plots_dir) -> dict:
    """samples.png: grayscale input | truth | prediction, with PSNR."""
    del computed
    rgb = np.asarray(center_crop(batch["image"], *predictions.shape[1:3]))
    pixels = plots.colorization_samples(
        np.asarray(self.inputs({"image": rgb})), rgb,
        np.asarray(self.to_rgb(predictions, rgb)), outputs["psnr"],
        os.path.join(plots_dir, "samples.png"))
    return {"samples": pixels}

  def learning_curves(self, records, plots_dir) -> None:
    plots.learning_curves(records, ["loss", "psnr"],
                          os.path.join(plots_dir, "learning_curves.png"))
