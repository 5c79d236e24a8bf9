"""The input normalisation an export records, applied in numpy.

`unetjax.json` records how training scaled images ('scale': 8-bit values
/ 255; 'percentile': each image's low and high percentiles to 0 and 1, per
channel). The bioimage.io package states the same in the spec's
operations (`scale_linear`, `scale_range`); `unetjax-predict --model`
applies it here, to images read as `image_io.read_image` reads them
(already divided by 255 or 65535).
"""
import numpy as np

from unetjax.data import normalize

EPSILON = 1e-6  # scale_range's default eps


def normalize_raw(raw: np.ndarray, spec: dict) -> np.ndarray:
  """A raw [..., H, W] image (0..255 for 8-bit data) as the model's input:
  what the bioimage.io preprocessing does, per image and channel."""
  if spec["mode"] == "scale":
    return (raw / 255).astype(np.float32)
  low, high = np.percentile(raw, [spec["low"], spec["high"]],
                            axis=(-2, -1), keepdims=True)
  return ((raw - low) / (high - low + EPSILON)).astype(np.float32)


def normalize_unit(image: np.ndarray, spec: dict) -> np.ndarray:
  """An image [H, W, C] as read (values in [0, 1]) as the model's input,
  the way training made it (`data/normalize.py`, the package's one place
  for it), from the export's record."""
  return normalize.apply(image, unit_setting(spec))


def unit_setting(spec: dict) -> dict:
  """The export's record as a `data/normalize.py` setting."""
  return {"normalize": spec["mode"],
          "percentiles": [spec.get("low", 1.0), spec.get("high", 99.8)]}
