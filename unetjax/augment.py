"""Training-time augmentation as stateless TensorFlow ops.

Each example's random draws come from its own seed (derived from the run
seed and the example's position in the training stream), so augmentation
is reproducible and survives resume. Geometric changes are applied to
image and mask together; masks are never interpolated.
"""
import ml_collections

from unetjax.errors import ConfigError


def validate(config: ml_collections.ConfigDict, height: int,
             width: int) -> None:
  """Rejects settings that cannot apply to images of this size."""
  if config.crop_size < 0 or config.crop_size > min(height, width):
    raise ConfigError(f"augment.crop_size={config.crop_size}: expected 0 (no "
                      f"crop) up to the image size {height}x{width}")
  out_h = config.crop_size or height
  out_w = config.crop_size or width
  if config.rot90 and out_h != out_w:
    raise ConfigError(f"augment.rot90 needs square images or crops; images "
                      f"are {height}x{width}: set augment.crop_size")
  if not 0 <= config.brightness <= 1 or not 0 <= config.contrast <= 1:
    raise ConfigError(f"augment.brightness={config.brightness} and "
                      f"augment.contrast={config.contrast}: expected 0..1")


def apply(example: dict, config: ml_collections.ConfigDict, seed) -> dict:
  """Augments one {'image': [H, W, C] float, 'label': ...} example."""
  from unetjax.input_pipeline import tensorflow  # pylint: disable=g-import-not-at-top
  tf = tensorflow()
  image, label = example["image"], example["label"]
  spatial_label = len(label.shape) == 2
  seeds = tf.random.experimental.stateless_split(seed, num=6)
  if spatial_label:
    label = label[..., None]
  if config.crop_size:
    both = tf.concat([image, tf.cast(label, image.dtype)], axis=-1) \
        if spatial_label else image
    size = [config.crop_size, config.crop_size, both.shape[-1]]
    both = tf.image.stateless_random_crop(both, size, seed=seeds[0])
    image = both[..., :image.shape[-1]]
    if spatial_label:
      label = tf.cast(both[..., image.shape[-1]:], label.dtype)
  if config.flip:
    image, label = _maybe(tf, seeds[1], tf.image.flip_left_right, image, label,
                          spatial_label)
    image, label = _maybe(tf, seeds[2], tf.image.flip_up_down, image, label,
                          spatial_label)
  if config.rot90:
    turns = tf.random.stateless_uniform([], seeds[3], 0, 4, dtype=tf.int32)
    image = tf.image.rot90(image, turns)
    if spatial_label:
      label = tf.image.rot90(label, turns)
  if config.brightness:
    image = tf.image.stateless_random_brightness(image, config.brightness,
                                                 seeds[4])
  if config.contrast:
    image = tf.image.stateless_random_contrast(
        image, 1 - config.contrast, 1 + config.contrast, seeds[5])
  if config.brightness or config.contrast:
    image = tf.clip_by_value(image, 0.0, 1.0)
  if spatial_label:
    label = label[..., 0]
  return {**example, "image": image, "label": label}


def _maybe(tf, seed, op, image, label, spatial_label):
  """Applies `op` to image (and a spatial label) with probability 1/2."""
  flip = tf.random.stateless_uniform([], seed) < 0.5
  image = tf.cond(flip, lambda: op(image), lambda: image)
  if spatial_label:
    label = tf.cond(flip, lambda: op(label), lambda: label)
  return image, label
