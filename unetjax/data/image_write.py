"""Writing predict's pictures: class-id masks, 8-bit probability and
overlay pictures, object ids, and TIFF stacks page by page; every file
written atomically (a temporary name, then a rename), so an interrupted
run leaves no half-written output.
"""
import os

import numpy as np

from unetjax.data.image_io import TIFF_SUFFIXES
from unetjax.runtime.errors import DataError


class StackWriter:
  """Writes a TIFF stack page by page to `path` (atomically, on close):
  masks as `write_mask`, images as `write_image` convert them."""

  def __init__(self, path: str, kind: str):
    import tifffile  # pylint: disable=g-import-not-at-top
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    self.path, self.kind = path, kind
    self._tmp = f"{path}.tmp{os.path.splitext(path)[1]}"
    self._tiff = tifffile.TiffWriter(self._tmp)

  def add(self, page: np.ndarray) -> None:
    if self.kind == "instances":  # object ids, 0 = background
      pixels = page.astype(np.uint32 if page.max(initial=0) > 65535
                           else np.uint16)
    else:
      pixels = (page.astype(np.uint8) if self.kind == "mask"
                else image_pixels(page))
    self.add_pixels(pixels)

  def add_pixels(self, pixels: np.ndarray) -> None:
    """A page already converted (`image_pixels`), written as it is."""
    self._tiff.write(pixels, contiguous=True)

  def close(self) -> None:
    self._tiff.close()
    os.replace(self._tmp, self.path)

  def abort(self) -> None:
    self._tiff.close()
    os.remove(self._tmp)


def write_mask(path: str, mask: np.ndarray) -> None:
  """Writes a class-id mask as 8-bit PNG (or TIFF), atomically."""
  _write(path, mask.astype(np.uint8, copy=False))


def write_pixels(path: str, pixels: np.ndarray) -> None:
  """Writes 8-bit pixels made by `image_pixels`, atomically."""
  _write(path, pixels)


def write_instances(path: str, ids: np.ndarray) -> None:
  """Writes instance ids (0 = background) as 16-bit PNG (or TIFF),
  atomically; more than 65,535 objects need a TIFF (32-bit)."""
  ids = np.asarray(ids)
  if path.lower().endswith(TIFF_SUFFIXES) and ids.max(initial=0) > 65535:
    _write(path, ids.astype(np.uint32))
    return
  check_instances(path, ids)
  _write(path, ids.astype(np.uint16))


def check_instances(path: str, ids: np.ndarray) -> None:
  """DataError unless the ids fit the file `path` (a PNG holds 65,535
  objects; a TIFF any number): checked before any output of an input is
  written, so a refused input leaves no half of its outputs behind."""
  if (not path.lower().endswith(TIFF_SUFFIXES)
      and ids.max(initial=0) > 65535):
    raise DataError(f"{path}: {int(ids.max())} objects do not fit a 16-bit "
                    "PNG; give the input as a TIFF (predict writes TIFF "
                    "for TIFF input) or raise task.min_size")


def write_image(path: str, image: np.ndarray) -> None:
  """Writes a float [H, W] or [H, W, C] image in [0, 1] as 8-bit."""
  _write(path, image_pixels(image))


def image_pixels(image: np.ndarray) -> np.ndarray:
  """A float image in [0, 1] as the 8-bit pixels `write_image` writes:
  pointwise, so a band of rows converts to that band of the whole's."""
  image = np.clip(np.asarray(image) * 255 + 0.5, 0, 255).astype(np.uint8)
  return (image[..., 0] if image.ndim == 3 and image.shape[-1] == 1
          else image)


def _write(path: str, array: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.path.splitext(path)[1]}"
  if path.lower().endswith(TIFF_SUFFIXES):
    import tifffile  # pylint: disable=g-import-not-at-top
    tifffile.imwrite(tmp, array)
  else:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    Image.fromarray(array).save(tmp)
  os.replace(tmp, path)


