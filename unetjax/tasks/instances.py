"""Instance segmentation: which pixels belong to which object.

The dataset's labels are instance ids (`DataInfo.instances`: 0 background,
each object its own id). Before training, each split's ids become this
task's targets once per image on the host (`prepare`), chosen by `target`:

  binary       foreground (1) against background (0), sigmoid + BCE;
  weight_map   the same, with a one-pixel seam of background put between
               touching objects (as in the paper's annotations), and each
               pixel's BCE weighted by the U-Net paper's
               w(x) = w_c(x) + w0 exp(-(d1 + d2)^2 / (2 sigma^2)), which
               makes that thin background between objects count;
  three_class  background / interior / boundary (boundary from the ids),
               softmax + class-weighted cross-entropy, so objects are
               separated by a predicted boundary;
  star         StarDist's star-convex polygons (`unetjax.instances.star`):
               per pixel an object probability (BCE against the
               normalised distance to the object's edge) and `n_rays`
               distances to the boundary (mean absolute error, weighted by
               the probability target, on `star_samples` object pixels per
               crop; cast in the step from the augmented instance ids);
               objects by polygon NMS (`objects='polygons'`).

The weight map travels with the label through every augmentation
(`Split.maps`). Objects come back from the predictions on the host
(`unetjax.instances.postprocess`), chosen by `objects`: 'components'
(connected components of the foreground, or of the interior class, grown
back over the boundary) or 'watershed' (marker-based watershed of the
foreground probability; markers from its distance transform, or from the
interior class). Each evaluation scores the objects against the true ones
(`unetjax.instances.metrics`: the 2018 Data Science Bowl score, AP and F1 at
IoU 0.5, matched IoU, the GlaS object Dice and Hausdorff) besides the
pixel metrics (loss, accuracy, foreground Dice and IoU) computed in the
jitted step.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unetjax.data import Split
from unetjax.instances import metrics as instance_metrics
from unetjax.instances import postprocess as instance_postprocess
from unetjax.instances import star as instance_star
from unetjax.instances import targets as instance_targets
from unetjax.models.layers import center_crop
from unetjax.runtime.errors import ConfigError
from unetjax.tasks import segmentation
from unetjax.viz import plots

TARGETS = ("binary", "weight_map", "three_class", "star")
OBJECTS = ("components", "watershed", "polygons")
# StarDist's defaults: loss weights (probability 1, distances 0.2) and the
# background's pull of the predicted distances towards 0.
STAR_DIST_WEIGHT, STAR_BACKGROUND_REG = 0.2, 1e-4
# The per-image object scores also logged as split metrics (means).
OBJECT_COLUMNS = ("challenge_score", "ap50", "f1_50", "mean_matched_iou",
                  "object_dice", "object_hausdorff", "num_true", "num_pred")


class InstanceSegmentation:
  """Objects from a U-Net's pixels, scored as objects."""

  metrics_class = segmentation.BinarySegmentationMetrics
  per_example_metric = "challenge_score"

  def __init__(self, *, info, target: str = "three_class",
               objects: str = "components", w0: float = 10.0,
               sigma: float = 5.0, class_weights: tuple[float, ...] = (),
               boundary_width: int = 1, min_size: int = 0,
               threshold: float = 0.5, dice_weight: float = 0.0,
               watershed_min_distance: int = 10, n_rays: int = 32,
               nms_threshold: float = 0.4, star_samples: int = 2048,
               star_distance_scale: float = 1.0):
    if not getattr(info, "instances", False):
      raise ConfigError(
          f"task.name='instances' needs instance labels; data.name="
          f"{info.name!r} gives class ids (datasets with instance ids: "
          "dsb2018, nuclei, folders or glas with data.instances=True)")
    if target not in TARGETS:
      raise ConfigError(f"task.target={target!r}: expected one of {TARGETS}")
    if objects not in OBJECTS:
      raise ConfigError(f"task.objects={objects!r}: expected one of "
                        f"{OBJECTS}")
    if (objects == "polygons") != (target == "star"):
      raise ConfigError(
          f"task.target={target!r} with task.objects={objects!r}: star "
          "targets give objects by polygon NMS (objects='polygons'), the "
          "others by 'components' or 'watershed'")
    if target == "star":
      self.n_rays = instance_star.check_n_rays(n_rays)
      if (star_samples < 1 or not 0 <= nms_threshold <= 1
          or not star_distance_scale > 0):
        raise ConfigError(
            f"task.star_samples={star_samples}, task.nms_threshold="
            f"{nms_threshold}, task.star_distance_scale="
            f"{star_distance_scale}: expected >= 1, 0..1 and > 0")
    # Pixels per unit of the distance outputs. StarDist's are pixels (1):
    # a linear head then needs many steps to reach distances of 10-20 px
    # from its start near 0 (Adam moves a weight ~lr a step); a larger
    # scale gets there sooner at short budgets.
    self.distance_scale = float(star_distance_scale)
    self.nms_threshold, self.star_samples = nms_threshold, star_samples
    num_classes = 3 if target == "three_class" else 2
    if class_weights and (len(class_weights) != num_classes
                          or min(class_weights) <= 0):
      raise ConfigError(
          f"task.class_weights={tuple(class_weights)}: expected "
          f"{num_classes} weights > 0 for target {target!r}")
    if w0 < 0 or sigma <= 0:
      raise ConfigError(f"task.w0={w0}, task.sigma={sigma}: expected w0 >= 0 "
                        "and sigma > 0 pixels")
    if boundary_width < 1 or min_size < 0 or watershed_min_distance < 1:
      raise ConfigError(
          f"task.boundary_width={boundary_width}, task.min_size={min_size}, "
          f"task.watershed_min_distance={watershed_min_distance}: expected "
          ">= 1, >= 0 and >= 1")
    if not 0 < threshold < 1 or dice_weight < 0:
      raise ConfigError(f"task.threshold={threshold}, task.dice_weight="
                        f"{dice_weight}: expected 0 < threshold < 1 and "
                        "dice_weight >= 0")
    self.target, self.objects = target, objects
    self.w0, self.sigma = float(w0), float(sigma)
    self.class_weights = tuple(float(w) for w in class_weights) or (
        1.0,) * num_classes
    self.boundary_width, self.min_size = boundary_width, min_size
    self.threshold, self.dice_weight = threshold, dice_weight
    self.min_distance = watershed_min_distance
    self.num_outputs = {"three_class": 3, "star": 1 + n_rays}.get(target, 1)
    # Star's distance channels are rays in fixed directions: a flipped
    # input permutes them, so predict's test-time flips cannot average them.
    self.dihedral_invariant = target != "star"

  # --- host: targets before training, objects after ---------------------

  def prepare(self, split: Split, name: str) -> Split:
    """Instance ids -> this task's targets (and maps), once per image.

    Evaluated splits keep the ids as the map 'instances' for the object
    scores; the training split does not need them.
    """
    ids = split.labels
    sizes = split.sizes if split.sizes is not None else np.tile(
        ids.shape[1:3], (len(ids), 1))
    if self.target == "three_class":
      labels = np.zeros(ids.shape, np.int32)
      for i, (h, w) in enumerate(sizes):
        labels[i, :h, :w] = instance_targets.three_class(
            ids[i, :h, :w], boundary_width=self.boundary_width)
    elif self.target in ("binary", "star"):
      labels = (ids > 0).astype(np.int32)
    maps = dict(split.maps)
    if self.target == "star":
      # The probability target travels with the crop; the distances are
      # cast in the step from the ids, which must then travel too.
      # Half-size types where they hold the values exactly enough (ids
      # below 2^15; a probability to 3 digits): the DSB training split
      # is 737 pieces of up to 512x512, 0.4 GB a map this way.
      prob = np.zeros(ids.shape, np.float16)
      for i, (h, w) in enumerate(sizes):
        prob[i, :h, :w] = instance_star.object_probability(ids[i, :h, :w])
      maps["star_prob"] = prob
      maps["instances"] = (ids.astype(np.int16) if ids.max(initial=0) <
                           2 ** 15 else np.asarray(ids, np.int32))
    if self.target == "weight_map":
      # As in the paper's annotations, touching objects get a seam of
      # background between them: the pixels the border term weighs.
      labels = np.zeros(ids.shape, np.int32)
      weights = np.zeros(ids.shape, np.float32)
      for i, (h, w) in enumerate(sizes):
        separated = instance_targets.separate_touching(ids[i, :h, :w])
        labels[i, :h, :w] = separated > 0
        weights[i, :h, :w] = instance_targets.unet_weight_map(
            separated, w0=self.w0, sigma=self.sigma)
      maps["weight"] = weights
    if name != "train":
      maps["instances"] = np.asarray(ids, np.int32)  # no copy
    return Split(split.images, labels, split.ids, split.sizes, maps)

  def to_instances(self, prediction: np.ndarray) -> np.ndarray:
    """Objects [H, W] (0 background) from one image's `predict` output."""
    prediction = np.asarray(prediction, np.float32)
    if self.target == "star":
      return instance_postprocess.remove_small(instance_star.to_instances(
          prediction[..., 0], prediction[..., 1:],
          prob_threshold=self.threshold, nms_threshold=self.nms_threshold),
          self.min_size)
    if self.target == "three_class":
      if self.objects == "components":
        return instance_postprocess.from_three_class(
            prediction, min_size=self.min_size)
      interior = instance_postprocess.components(
          prediction.argmax(-1) == 1, min_size=self.min_size)
      return instance_postprocess.watershed(
          1.0 - prediction[..., 0], threshold=self.threshold,
          min_size=self.min_size, markers=interior)
    if self.objects == "components":
      return instance_postprocess.components(prediction > self.threshold,
                                             min_size=self.min_size)
    return instance_postprocess.watershed(
        prediction, threshold=self.threshold, min_size=self.min_size,
        min_distance=self.min_distance)

  def pixel_prediction(self, prediction: np.ndarray) -> np.ndarray:
    """What predict writes as mask and probability of one image's
    `predict` output: the prediction itself, or star's object probability
    [H, W] without its distances."""
    prediction = np.asarray(prediction)
    return prediction[..., 0] if self.target == "star" else prediction

  def object_scores(self, batch, predictions) -> list[dict]:
    """Per-image object scores of the real examples of an eval batch.

    Returns one `instance_metrics.image_scores` dict per example whose
    `mask` is 1, in batch order; padding pixels (`valid` 0) are cut off
    first, so each image is scored at its true size.
    """
    rows = []
    predictions = np.asarray(predictions)
    for i in np.flatnonzero(np.asarray(batch["mask"]) > 0):
      truth, prediction = self._true_region(batch, predictions, i)
      rows.append(instance_metrics.image_scores(
          truth, self.to_instances(prediction)))
    return rows

  def _true_region(self, batch, predictions, i):
    """(true ids, prediction) of example i, cropped to its real pixels."""
    height, width = predictions.shape[1:3]
    truth = _center_crop(np.asarray(batch["instances"][i]), height, width)
    prediction = predictions[i]
    if "valid" in batch:
      valid = _center_crop(np.asarray(batch["valid"][i]), height, width)
      rows, cols = valid.any(axis=1).sum(), valid.any(axis=0).sum()
      truth, prediction = truth[:rows, :cols], prediction[:rows, :cols]
    return truth, prediction

  def split_scores(self, rows: list[dict]) -> dict[str, float]:
    """Split-level object metrics from every image's scores."""
    return instance_metrics.split_scores(rows)

  @property
  def split_score_names(self) -> tuple[str, ...]:
    """The names `split_scores` gives (what evaluations log under val/)."""
    empty = np.zeros((4, 4), np.int32)
    return tuple(sorted(self.split_scores(
        [instance_metrics.image_scores(empty, empty)])))

  # --- traced: loss, pixel metrics, predictions --------------------------

  def inputs(self, batch):
    return batch["image"]

  def loss_and_outputs(self, logits, batch):
    logits = logits.astype(jnp.float32)
    labels = center_crop(batch["label"], logits.shape[1], logits.shape[2])
    valid = (jnp.ones(logits.shape[:3], jnp.float32) if "valid" not in batch
             else center_crop(batch["valid"], logits.shape[1],
                              logits.shape[2]).astype(jnp.float32))
    weights = jnp.asarray(self.class_weights)[labels]
    if self.target == "weight_map":
      weights = center_crop(batch["weight"], logits.shape[1],
                            logits.shape[2]).astype(jnp.float32)
    if self.target == "three_class":
      pixel_loss = optax.softmax_cross_entropy_with_integer_labels(
          logits, labels)
      foreground = 1.0 - jax.nn.softmax(logits)[..., 0]
      predicted = logits.argmax(-1) > 0
    elif self.target == "star":
      pixel_loss, foreground = self._star_loss(logits, batch, valid)
      predicted = logits[..., 0] > 0
    else:
      pixel_loss = optax.sigmoid_binary_cross_entropy(
          logits[..., 0], labels.astype(jnp.float32))
      foreground = jax.nn.sigmoid(logits[..., 0])
      predicted = logits[..., 0] > 0
    truth = labels > 0
    per_example = jnp.sum(pixel_loss * weights * valid, axis=(1, 2)) / (
        jnp.maximum(jnp.sum(valid, axis=(1, 2)), 1.0))
    if self.dice_weight:
      per_example += self.dice_weight * segmentation.soft_dice_loss(
          foreground, truth.astype(jnp.float32), valid=valid)
    mask = batch.get("mask", jnp.ones(logits.shape[0], jnp.float32))
    loss = jnp.sum(per_example * mask) / jnp.maximum(mask.sum(), 1.0)
    outputs = segmentation.overlap_outputs(predicted, truth, valid)
    outputs.update(loss=per_example, mask=mask)
    return loss, outputs

  def _star_loss(self, logits, batch, valid):
    """Per-pixel StarDist loss [B, H, W] and the object probability.

    BCE of the probability channel against the normalised-distance target,
    plus STAR_DIST_WEIGHT times the distance loss: on the background a
    pull of the predicted distances towards 0 (STAR_BACKGROUND_REG), and
    on the objects the mean absolute error over the rays weighted by the
    probability target, measured on `star_samples` object pixels per image
    and spread over the image's object pixels (the mean of the sample
    times their number; exact where an image has fewer), so the sum over
    pixels estimates StarDist's without casting rays from every pixel.
    """
    height, width = logits.shape[1:3]
    prob = center_crop(batch["star_prob"], height, width).astype(jnp.float32)
    ids = center_crop(batch["instances"], height, width).astype(jnp.int32)
    ids = jnp.where(valid > 0, ids, 0)
    bce = optax.sigmoid_binary_cross_entropy(logits[..., 0], prob)
    dist = logits[..., 1:] * self.distance_scale
    background = (ids == 0).astype(jnp.float32)
    reg = STAR_BACKGROUND_REG * background * jnp.mean(jnp.abs(dist), -1)
    points, used = instance_star.sample_points(ids > 0, self.star_samples)
    truth = jax.lax.stop_gradient(
        instance_star.distances(ids, points, self.n_rays))
    index = points[..., 0] * width + points[..., 1]
    flat = dist.reshape(dist.shape[0], -1, self.n_rays)
    predicted = jnp.take_along_axis(flat, index[..., None], axis=1)
    weight = jnp.take_along_axis(prob.reshape(prob.shape[0], -1), index,
                                 axis=1) * used
    error = weight * jnp.mean(jnp.abs(predicted - truth), -1)
    objects = jnp.sum(1.0 - background, axis=(1, 2))
    spread = jnp.sum(error, -1) * objects / jnp.maximum(jnp.sum(used, -1), 1)
    # The objects' share goes to every pixel evenly: only the sum counts.
    per_pixel = spread / jnp.maximum(jnp.sum(valid, axis=(1, 2)), 1.0)
    pixel_loss = bce + STAR_DIST_WEIGHT * (reg + per_pixel[:, None, None])
    return pixel_loss, jax.nn.sigmoid(logits[..., 0])

  def predict(self, logits):
    """Foreground probability [B, H, W], the three classes' [B, H, W, 3],
    or star's probability and distances [B, H, W, 1 + n_rays]."""
    logits = logits.astype(jnp.float32)
    if self.target == "star":
      return jnp.concatenate([
          jax.nn.sigmoid(logits[..., :1]),
          jnp.maximum(logits[..., 1:] * self.distance_scale, 0.0)], axis=-1)
    if self.target == "three_class":
      return jax.nn.softmax(logits)
    return jax.nn.sigmoid(logits[..., 0])

  # --- pictures ------------------------------------------------------------

  def figures(self, batch, predictions, outputs, computed,
              plots_dir) -> dict:
    """samples.png: image | true objects | predicted objects, with the
    image's challenge score and object counts."""
    del outputs, computed
    from unetjax.instances import plots as instance_plots  # pylint: disable=g-import-not-at-top
    images, truths, found, titles = [], [], [], []
    predictions = np.asarray(predictions)
    for i in range(len(predictions)):
      truth, prediction = self._true_region(batch, predictions, i)
      objects = self.to_instances(prediction)
      score = instance_metrics.image_scores(truth, objects)
      images.append(np.asarray(batch["image"][i])[:truth.shape[0],
                                                  :truth.shape[1]])
      truths.append(truth)
      found.append(objects)
      titles.append(f"score {score['challenge_score']:.3f}, AP50 "
                    f"{score['ap50']:.3f}, {score['num_pred']} of "
                    f"{score['num_true']} objects")
    pixels = instance_plots.instance_samples(
        images, truths, found, titles, os.path.join(plots_dir, "samples.png"))
    return {"samples": pixels}

  def learning_curves(self, records, plots_dir) -> None:
    plots.learning_curves(records, ["loss", "dice", "challenge_score"],
                          os.path.join(plots_dir, "learning_curves.png"))


def _center_crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
  top = (array.shape[0] - height) // 2
  left = (array.shape[1] - width) // 2
  return array[top:top + height, left:left + width]
