"""How images become the model's input values: one place for training,
evaluation and predict.

`data.normalize` picks the way:

  'scale'       the image's values scaled to [0, 1] by its type's range
                (uint8 / 255): what the package always did;
  'percentile'  then, per image and per channel, the low and high
                percentiles (`data.percentiles`, csbdeep's (1, 99.8) by
                default) mapped to 0 and 1: (x - lo) / (hi - lo + 1e-20),
                not clipped, as csbdeep's `normalize(x, 1, 99.8)` that
                StarDist and CARE train with. A dim fluorescence image
                whose 99.8th percentile is 40 of 255 then reaches the
                model on the same scale as a bright one.

The percentiles are those of the whole image (a training crop is
normalised by its image's values, as predict normalises a whole image), so
a dataset on disk computes them once per image (`stats`) and a crop never
needs the rest of its image. Percentiles are computed on the [0, 1] floats
('scale' first), so a workdir's images give the same numbers whether they
come from the training cache (uint8) or from `unetjax-predict` (which reads
files as [0, 1] floats). The setting is recorded in the workdir's
experiment.json under 'input' (`describe`), where predict and export read
it.
"""
import ml_collections
import numpy as np

from unetjax.runtime.errors import ConfigError

WAYS = ("scale", "percentile")
DEFAULT_PERCENTILES = (1.0, 99.8)
EPS = 1e-20  # csbdeep's


def setting(config: ml_collections.ConfigDict) -> dict:
  """{'normalize': way, 'percentiles': [low, high]} of a config, checked;
  configs without the keys mean 'scale'."""
  way = config.data.get("normalize", "scale")
  low, high = config.data.get("percentiles", DEFAULT_PERCENTILES)
  if way not in WAYS:
    raise ConfigError(f"data.normalize={way!r}: expected one of {WAYS}")
  if not 0 <= low < high <= 100:
    raise ConfigError(f"data.percentiles=({low}, {high}): expected "
                      "0 <= low < high <= 100")
  return {"normalize": way, "percentiles": [float(low), float(high)]}


def check(recorded) -> dict:
  """A setting read back from experiment.json (absent: 'scale')."""
  if recorded is None:
    return {"normalize": "scale", "percentiles": list(DEFAULT_PERCENTILES)}
  config = ml_collections.ConfigDict({"data": dict(recorded)})
  return setting(config)


def stats(image: np.ndarray, chosen: dict,
          divisor: float | None = None) -> np.ndarray | None:
  """[2, C] float32 (low, high) of one [H, W, C] image in [0, 1] (uint8 is
  scaled first, or stored integers divided by `divisor`); None for 'scale'.

  Integer images are counted, not copied (`stored_percentiles`); float
  images are copied once as float32 for numpy's percentile."""
  if chosen["normalize"] == "scale":
    return None
  if image.dtype == np.uint8 and divisor is None:
    divisor = 255.0
  if divisor is not None and np.issubdtype(image.dtype, np.integer):
    return stored_percentiles(image, divisor, chosen["percentiles"])
  values = as_float(image, divisor).reshape(-1, image.shape[-1])
  return np.percentile(values, chosen["percentiles"], axis=0).astype(
      np.float32)


def stored_percentiles(image: np.ndarray, divisor: float,
                       percentiles) -> np.ndarray:
  """`np.percentile` of `image / divisor` as float32 (what `stats` gives
  for floats), from a histogram of the stored integer values.

  A 14000x14000 image as float32 is 784 MB and numpy's percentile copies
  it again to partition it; counting its uint8/uint16 values in row blocks
  needs a few MB. The result is numpy's, bit for bit (tested): the values
  map to floats monotonically (float32 v / divisor, correctly rounded), so
  the order statistics numpy interpolates between are the images of the
  stored ones, and the interpolation below is numpy's `linear` method
  (numpy/lib/_function_base_impl.py: `_quantile`, `_lerp`), in its dtypes.
  """
  counts = histogram(image)
  n = int(counts[0].sum())
  q = np.true_divide(np.asarray(percentiles, np.float64), 100)
  virtual = (n - 1) * q
  before = np.floor(virtual)
  after = before + 1
  top = virtual >= n - 1  # numpy takes the maximum there
  before[top] = after[top] = n - 1
  gamma = (virtual - before).reshape(-1, 1)  # float64, like numpy's
  cumulative = np.cumsum(counts, axis=1)
  def order_statistic(k):  # [C] float32 values of rank k (from 0)
    stored = np.array([np.searchsorted(c, k, side="right")
                       for c in cumulative])
    return stored.astype(np.float32) / np.float32(divisor)
  a = np.stack([order_statistic(int(k)) for k in before])  # [2, C]
  b = np.stack([order_statistic(int(k)) for k in after])
  difference = b - a
  result = np.add(a, difference * gamma)
  np.subtract(b, difference * (1 - gamma), out=result,
              where=np.broadcast_to(gamma >= 0.5, result.shape))
  return result.astype(np.float32)


def histogram(image: np.ndarray, pixels: int = 1 << 18) -> np.ndarray:
  """[C, levels] int64 counts of the values of an integer [H, W, C] image,
  about `pixels` at a time: bincount casts its input to intp, so counting
  the whole image at once would copy it at 8 bytes a pixel."""
  if image.size and image.min() < 0:
    raise ValueError(f"negative stored values ({image.min()})")
  channels = image.shape[-1]
  levels = int(image.max(initial=0)) + 1
  counts = np.zeros((channels, levels), np.int64)
  rows = image.reshape(image.shape[0], -1, channels)
  step = max(1, pixels // max(1, rows.shape[1]))
  for start in range(0, rows.shape[0], step):
    block = rows[start:start + step].reshape(-1, channels)
    for c in range(channels):
      counts[c] += np.bincount(block[:, c], minlength=levels)
  return counts


def as_float(image: np.ndarray, divisor: float | None = None) -> np.ndarray:
  """float32 in [0, 1]: stored integers / `divisor` (uint8: / 255 without
  one), floats as they are; the same values as `image_io.to_float`."""
  if divisor is not None:
    return image.astype(np.float32) / np.float32(divisor)
  if image.dtype == np.uint8:
    return image.astype(np.float32) / np.float32(255)
  return np.asarray(image, np.float32)


def apply(image: np.ndarray, chosen: dict | None,
          image_stats: np.ndarray | None = None,
          divisor: float | None = None) -> np.ndarray:
  """The model input for one [H, W, C] image (or a crop or tile of it with
  its image's `image_stats`), as numpy: what predict calls on each tile.
  Pointwise given the stats: a tile's input equals that part of the whole
  image's."""
  if chosen is not None and chosen["normalize"] != "scale" and (
      image_stats is None):
    image_stats = stats(image, chosen, divisor)
  image = as_float(image, divisor)
  if chosen is None or chosen["normalize"] == "scale":
    return image
  low, high = image_stats
  return ((image - low) / (high - low + np.float32(EPS))).astype(np.float32)


def apply_tf(tf, image, image_stats):
  """The same as `apply`, in TensorFlow, for the input pipeline: `image`
  already float32 in [0, 1], `image_stats` [2, C] or None ('scale')."""
  if image_stats is None:
    return image
  low, high = image_stats[0], image_stats[1]
  return (image - low) / (high - low + tf.constant(EPS, tf.float32))
