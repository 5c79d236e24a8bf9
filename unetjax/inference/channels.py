"""Inputs' channels converted for a model as its training loaders do.

Training reads a gray image for an RGB model as gray repeated, RGB(A) with
R = G = B for a gray model as its R channel, and (with `data.channels=1`)
colour as its luminance (`image_io.convert_channels`); predict refuses
only what the run's loader would have refused.
"""
import numpy as np

from unetjax.data import image_io
from unetjax.runtime.errors import DataError


def conversions(shapes: dict[str, tuple[int, int]], in_channels: int,
                colour_to_gray: bool, workdir: str) -> dict[str, int]:
  """{path: in_channels} of the inputs to convert, each checked first.

  What the training loaders convert is converted (one log line says so):
  gray repeated to RGB for a colour model; for a gray model, RGB(A) with
  R = G = B everywhere (how the DSB files are stored) as its R channel,
  and colour as its luminance only where the run's loader did that too
  (`colour_to_gray`: `data.channels=1`). Colour for a gray model trained
  without that is refused, as its loader would refuse it."""
  converted = {}
  for path, (_, count) in shapes.items():
    if count == in_channels:
      continue
    if count == 3 and in_channels == 1 and not colour_to_gray:
      first = _first_page(path)
      if not image_io.is_gray(first):
        raise DataError(f"{path}: a colour image; the model of {workdir} "
                        "takes gray images and its training did not "
                        "convert colour (data.channels=1 does): convert "
                        "the image to gray first")
    if {count, in_channels} != {1, 3}:
      raise DataError(f"{path}: {count} channel(s); the model of {workdir} "
                      f"takes {in_channels}")
    converted[path] = in_channels
  if converted:
    kind = "RGB (gray repeated)" if in_channels == 3 else "gray"
    print(f"{len(converted)} input(s) converted to {kind} as training "
          f"converts them, e.g. {next(iter(converted))}", flush=True)
  return converted


def _first_page(path: str) -> np.ndarray:
  """The pixels of an input's first page (a stack's, read alone)."""
  if path.lower().endswith(image_io.TIFF_SUFFIXES):
    return next(iter(image_io.iter_stack(path)))
  return image_io.read_pixels(path)
