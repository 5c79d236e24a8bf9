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


def stats(image: np.ndarray, chosen: dict) -> np.ndarray | None:
  """[2, C] float32 (low, high) of one [H, W, C] image in [0, 1] (uint8 is
  scaled first); None for 'scale'."""
  if chosen["normalize"] == "scale":
    return None
  values = as_float(image).reshape(-1, image.shape[-1])
  return np.percentile(values, chosen["percentiles"], axis=0).astype(
      np.float32)


def as_float(image: np.ndarray) -> np.ndarray:
  """float32 in [0, 1]: uint8 / 255, floats as they are."""
  if image.dtype == np.uint8:
    return image.astype(np.float32) / np.float32(255)
  return np.asarray(image, np.float32)


def apply(image: np.ndarray, chosen: dict | None,
          image_stats: np.ndarray | None = None) -> np.ndarray:
  """The model input for one [H, W, C] image (or a crop of it with its
  image's `image_stats`), as numpy: what predict calls."""
  image = as_float(image)
  if chosen is None or chosen["normalize"] == "scale":
    return image
  if image_stats is None:
    image_stats = stats(image, chosen)
  low, high = image_stats
  return ((image - low) / (high - low + np.float32(EPS))).astype(np.float32)


def apply_tf(tf, image, image_stats):
  """The same as `apply`, in TensorFlow, for the input pipeline: `image`
  already float32 in [0, 1], `image_stats` [2, C] or None ('scale')."""
  if image_stats is None:
    return image
  low, high = image_stats[0], image_stats[1]
  return (image - low) / (high - low + tf.constant(EPS, tf.float32))
