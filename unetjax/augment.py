"""Training-time augmentation as stateless TensorFlow ops.

Each example's random draws come from its own seed (derived from the run
seed and the example's position in the training stream), so augmentation
is reproducible and survives resume. Geometric changes are applied to
image and mask together; masks are never interpolated (nearest neighbour).

Examples of a variable-size dataset arrive padded to a common size with
their true size in `example['size']`; random crops are drawn inside that
true size, so padding is never trained on.
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
  if config.elastic and (config.elastic_grid < 2
                         or config.elastic_sigma <= 0):
    raise ConfigError(f"augment.elastic_grid={config.elastic_grid} and "
                      f"augment.elastic_sigma={config.elastic_sigma}: "
                      "expected a grid of >= 2 points and sigma > 0 pixels")


def apply(example: dict, config: ml_collections.ConfigDict, seed) -> dict:
  """Augments one {'image': [H, W, C] float, 'label': ...} example."""
  from unetjax.input_pipeline import tensorflow  # pylint: disable=g-import-not-at-top
  tf = tensorflow()
  image, label = example["image"], example["label"]
  spatial_label = len(label.shape) == 2
  seeds = tf.random.experimental.stateless_split(seed, num=7)
  if spatial_label:
    label = label[..., None]
  if config.crop_size:
    size = example.get("size", tf.shape(image)[:2])
    image, cropped = _random_crop(tf, seeds[0], config.crop_size, size,
                                  image, label if spatial_label else None)
    label = cropped if spatial_label else label
  if config.elastic and spatial_label:
    image, label = elastic_deform(tf, seeds[6], image, label,
                                  config.elastic_grid, config.elastic_sigma)
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
  example = {k: v for k, v in example.items() if k != "size"}
  return {**example, "image": image, "label": label}


def _random_crop(tf, seed, crop: int, size, image, label):
  """The same random crop x crop window of image and label, inside `size`."""
  corner = tf.random.stateless_uniform(
      [2], seed, minval=0, maxval=tf.int32.max, dtype=tf.int32) % (
          tf.cast(size, tf.int32) - crop + 1)
  image = image[corner[0]:corner[0] + crop, corner[1]:corner[1] + crop]
  image = tf.ensure_shape(image, [crop, crop, image.shape[-1]])
  if label is not None:
    label = label[corner[0]:corner[0] + crop, corner[1]:corner[1] + crop]
    label = tf.ensure_shape(label, [crop, crop, 1])
  return image, label


def elastic_deform(tf, seed, image, label, grid: int, sigma: float):
  """Elastic deformation as in the U-Net paper, one field for both.

  Displacements drawn from N(0, sigma^2) pixels on a grid x grid lattice
  are interpolated bicubically to every pixel; the image is resampled
  bilinearly and the label by nearest neighbour at the same displaced
  coordinates (clamped at the border).
  """
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  coarse = tf.random.stateless_normal([1, grid, grid, 2], seed) * sigma
  field = tf.image.resize(coarse, [height, width], method="bicubic")[0]
  rows, cols = tf.meshgrid(tf.range(height, dtype=tf.float32),
                           tf.range(width, dtype=tf.float32), indexing="ij")
  y = tf.clip_by_value(rows + field[..., 0], 0.0,
                       tf.cast(height - 1, tf.float32))
  x = tf.clip_by_value(cols + field[..., 1], 0.0,
                       tf.cast(width - 1, tf.float32))
  nearest = tf.stack([tf.round(y), tf.round(x)], axis=-1)
  label = tf.gather_nd(label, tf.cast(nearest, tf.int32))
  return _bilinear(tf, image, y, x), label


def _bilinear(tf, image, y, x):
  """image sampled at float coordinates (y, x), each inside the image."""
  y0, x0 = tf.floor(y), tf.floor(x)
  wy, wx = (y - y0)[..., None], (x - x0)[..., None]
  y1 = tf.minimum(y0 + 1, tf.cast(tf.shape(image)[0] - 1, tf.float32))
  x1 = tf.minimum(x0 + 1, tf.cast(tf.shape(image)[1] - 1, tf.float32))

  def at(yy, xx):
    return tf.gather_nd(image, tf.cast(tf.stack([yy, xx], -1), tf.int32))
  top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
  bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
  return top * (1 - wy) + bottom * wy


def _maybe(tf, seed, op, image, label, spatial_label):
  """Applies `op` to image (and a spatial label) with probability 1/2."""
  flip = tf.random.stateless_uniform([], seed) < 0.5
  image = tf.cond(flip, lambda: op(image), lambda: image)
  if spatial_label:
    label = tf.cond(flip, lambda: op(label), lambda: label)
  return image, label
