"""Reading images and masks from files, refusing anything ambiguous.

Every loader returns arrays of a known kind or raises `DataError` naming
the file: a truncated PNG, a zero-byte file, a palette image read as
indices, a 16-bit image squashed to 8 bits, or an RGB mask are the silent
wrong results this module exists to prevent.

Images of any size are read: Pillow's decompression-bomb limit (meant for
untrusted files from the web) is lifted for this reader, since the user's
own images (whole slides, large EM sections) are what predict promises to
handle.
"""
import os
from typing import Iterator

import numpy as np

from unetjax.runtime.errors import DataError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")


def read_image(path: str, channels: int | None = None) -> np.ndarray:
  """An image as float32 [H, W, C] in [0, 1], C = 1 (gray) or 3 (RGB).

  8-bit images are divided by 255, 16-bit by 65535; palette images are
  converted to their colours; an alpha channel is dropped (composited on
  nothing: the colour values are kept as stored).

  channels: None keeps the channels as stored. 1 gives gray: a gray image
  as it is, an RGB one with R = G = B its R channel, any other its
  luminance (0.299 R + 0.587 G + 0.114 B, ITU-R 601, rounded to the
  file's bit depth). 3 gives RGB, gray repeated. 0 gives gray when the
  image is gray (stored so, or R = G = B) and RGB otherwise.
  """
  return to_float(read_stored(path, channels), path)


def read_stored(path: str, channels: int | None = None) -> np.ndarray:
  """`read_image` before the division: the stored values [H, W, C], which
  for 8-bit images take a quarter of the float32 image's memory."""
  array = read_pixels(path)
  if channels is not None:
    array = convert_channels(array, channels, path)
  return array


def read_pixels(path: str) -> np.ndarray:
  """An image's stored values, [H, W, 1 or 3], alpha dropped, not scaled."""
  array = _read(path)
  if array.ndim == 3 and array.shape[0] > 1 and path.lower().endswith(
      TIFF_SUFFIXES) and array.shape[-1] not in (1, 3, 4):
    raise DataError(f"{path}: a multi-page TIFF stack; read it with "
                    "read_stack")
  return _channels_last(array, path)


def is_gray(array: np.ndarray) -> bool:
  """True for [H, W, 1] and for [H, W, 3] with R = G = B everywhere."""
  return array.shape[-1] == 1 or bool(
      np.array_equal(array[..., 0], array[..., 1]) and
      np.array_equal(array[..., 0], array[..., 2]))


def convert_channels(array: np.ndarray, channels: int,
                     path: str) -> np.ndarray:
  """[H, W, 1 or 3] pixels as stored -> `channels` (see read_image)."""
  if channels not in (0, 1, 3):
    raise DataError(f"{path}: channels={channels}; expected 1 (gray), 3 "
                    "(RGB) or 0 (as the image is)")
  gray = is_gray(array)
  if channels == 0:
    channels = 1 if gray else 3
  if channels == 3:
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array
  if gray:
    return array[..., :1]
  weights = np.array([0.299, 0.587, 0.114])
  gray = np.empty(array.shape[:-1] + (1,), array.dtype)
  step = max(1, (1 << 20) // max(1, array[0].size))  # rows a block: the
  for start in range(0, len(array), step):  # float64 copy stays small
    luminance = array[start:start + step].astype(np.float64) @ weights
    if np.issubdtype(array.dtype, np.integer):
      luminance = np.round(luminance)
    gray[start:start + step, ..., 0] = luminance
  return gray


def read_stack(path: str) -> np.ndarray:
  """A TIFF, one page or many, as float32 [N, H, W, C] in [0, 1]."""
  return np.stack([to_float(page, path) for page in _stack_stored(path)])


def _stack_stored(path: str) -> np.ndarray:
  """A TIFF's pages as stored, [N, H, W, C], alpha dropped.

  TIFF's own axis names tell a page of RGB samples ('YXS') from a stack of
  gray pages ('IYX'); array shapes alone confuse an RGB page 3 pixels high
  with three gray pages.
  """
  import tifffile  # pylint: disable=g-import-not-at-top
  _check_file(path)
  try:
    with tifffile.TiffFile(path) as tiff:
      series = tiff.series[0]
      array, axes = series.asarray(), series.axes
  except Exception as e:
    raise DataError(f"{path}: not a readable TIFF ({_first_line(e)})") from e
  if not axes.endswith("S"):  # gray pages; planar "samples" are pages too,
    array = array[..., None]  # as older tifffile wrote 3- and 4-page stacks
  if array.ndim == 3:
    array = array[None]
  if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
    raise DataError(f"{path}: TIFF of shape {array.shape}; expected pages of "
                    "gray or RGB images")
  return array[..., :3]


def stack_shape(path: str) -> tuple[int, int, int, int]:
  """(pages, height, width, channels) of a TIFF from its header alone."""
  import tifffile  # pylint: disable=g-import-not-at-top
  _check_file(path)
  try:
    with tifffile.TiffFile(path) as tiff:
      series = tiff.series[0]
      shape, axes, dtype = series.shape, series.axes, series.dtype
  except Exception as e:
    raise DataError(f"{path}: not a readable TIFF ({_first_line(e)})") from e
  page = shape[-3:] if axes.endswith("S") else shape[-2:] + (1,)
  pages = int(np.prod(shape[:len(shape) - (3 if axes.endswith("S") else 2)]))
  if len(page) != 3 or page[-1] not in (1, 3, 4) or pages < 1:
    raise DataError(f"{path}: TIFF of shape {shape}; expected pages of "
                    "gray or RGB images")
  if not (dtype in (np.uint8, np.uint16, bool) or np.issubdtype(
      dtype, np.integer) or np.issubdtype(dtype, np.floating)):
    raise DataError(f"{path}: pixel type {dtype} is not supported")
  return pages, page[0], page[1], min(page[2], 3)


def iter_stack(path: str) -> Iterator[np.ndarray]:
  """`read_stack`'s pages one at a time, each read only when asked for, so
  a stack larger than memory can be processed page by page."""
  for page in iter_stack_stored(path):
    yield to_float(page, path)


def iter_stack_stored(path: str) -> Iterator[np.ndarray]:
  """`iter_stack` before the division: each page's stored values [H, W,
  C] (`to_float` converts them)."""
  import tifffile  # pylint: disable=g-import-not-at-top
  pages, height, width, channels = stack_shape(path)
  with tifffile.TiffFile(path) as tiff:
    series = tiff.series[0]
    if len(series.pages) != pages or "S" in series.axes[:-1]:
      # planar samples, as tifffile writes 3- and 4-page stacks: one TIFF
      # page holds them all, so the whole (small) series is read at once.
      yield from _stack_stored(path)
      return
    for index in range(pages):
      try:
        page = tiff.asarray(key=index, series=0)
      except Exception as e:
        raise DataError(f"{path}: page {index} is not readable "
                        f"({_first_line(e)})") from e
      page = page[..., None] if page.ndim == 2 else page
      if page.shape[:2] != (height, width):
        raise DataError(f"{path}: page {index} has shape {page.shape}; "
                        f"expected {height}x{width}")
      yield page[..., :3]


def read_mask(path: str) -> np.ndarray:
  """A label image as int32 [H, W] of its stored values (not rescaled).

  Palette PNGs give their indices (that is how label maps are stored);
  gray images their values, also when stored as RGB with R = G = B. A fully
  opaque alpha channel (gray+alpha, RGBA) is dropped; a transparent one is
  refused, as are colour masks: which colour means which class is not
  something to guess.
  """
  array = _read(path, palette_as_indices=True)
  if array.ndim == 3 and array.shape[-1] in (2, 4):
    alpha = array[..., -1]
    opaque = np.iinfo(alpha.dtype).max if np.issubdtype(
        alpha.dtype, np.integer) else 1
    if not np.all(alpha == opaque):
      raise DataError(f"{path}: mask with a transparent alpha channel (alpha "
                      f"down to {alpha.min()} of {opaque}); expected no alpha "
                      "or a fully opaque one")
    array = array[..., :-1]
  if array.ndim == 3:
    if array.shape[-1] == 1 or (array.shape[-1] == 3 and np.all(
        array == array[..., :1])):
      array = array[..., 0]
    else:
      raise DataError(f"{path}: a colour mask of shape {array.shape}; expected "
                      "one channel of class values")
  if array.ndim != 2:
    raise DataError(f"{path}: mask of shape {array.shape}; expected 2-D")
  return _integer_mask(array, path)


def _integer_mask(array: np.ndarray, path: str) -> np.ndarray:
  if np.issubdtype(array.dtype, np.floating):
    if not np.all(np.isfinite(array)):
      raise DataError(f"{path}: mask holds non-finite values (NaN or inf)")
    if not np.all(array == np.round(array)):
      raise DataError(f"{path}: mask holds non-integer values")
  if array.size and (array.min() < np.iinfo(np.int32).min or
                     array.max() > np.iinfo(np.int32).max):
    raise DataError(f"{path}: mask values up to {array.max()} do not fit "
                    "int32")
  return array.astype(np.int32)


def read_mask_stack(path: str) -> np.ndarray:
  """A multi-page TIFF of label images as int32 [N, H, W] of stored values."""
  array = _read(path)
  if array.ndim == 2:
    array = array[None]
  if array.ndim != 3:
    raise DataError(f"{path}: label TIFF of shape {array.shape}; expected "
                    "pages of one-channel class values")
  return np.stack([_integer_mask(page, path) for page in array])


def find_partner(folder: str, stem: str) -> str | None:
  """The one image file `stem.<image suffix>` in folder, None if absent."""
  matches = [name for name in sorted(os.listdir(folder))
             if os.path.splitext(name)[0] == stem
             and name.lower().endswith(IMAGE_SUFFIXES)]
  if len(matches) > 1:
    raise DataError(f"{folder}: several files for {stem!r}: {matches}")
  return os.path.join(folder, matches[0]) if matches else None


def map_mask_values(mask: np.ndarray, values: dict[int, int],
                    path: str) -> np.ndarray:
  """Stored values -> class ids; a value not in `values` is an error."""
  found = np.unique(mask)
  unknown = [int(v) for v in found if int(v) not in values]
  if unknown:
    raise DataError(f"{path}: mask values {unknown[:10]} are not among the "
                    f"declared values {sorted(values)}")
  lookup = np.zeros(int(found.max()) + 1, np.int32)
  for value, cls in values.items():
    if value <= found.max():
      lookup[value] = cls
  return lookup[mask]


def check_classes(mask: np.ndarray, num_classes: int, path: str) -> None:
  """Fails on values outside 0..num_classes-1, naming what was found."""
  found = np.unique(mask)
  if found.min() < 0 or found.max() >= num_classes:
    shown = [int(v) for v in found[:10]]
    raise DataError(f"{path}: mask values {shown} found; expected class ids "
                    f"0..{num_classes - 1} (map other values with "
                    "data.mask_values, or binarise masks with edge values "
                    "by data.mask_threshold)")


def _check_file(path: str) -> None:
  if not os.path.exists(path):
    raise DataError(f"{path}: no such file")
  if not os.path.isfile(path):
    raise DataError(f"{path}: not a file")
  if not os.access(path, os.R_OK):
    raise DataError(f"{path}: not readable (permissions)")
  if os.path.getsize(path) == 0:
    raise DataError(f"{path}: empty file (0 bytes)")


def _read(path: str, palette_as_indices: bool = False) -> np.ndarray:
  """Raw pixel values with their stored dtype."""
  _check_file(path)
  if path.lower().endswith(TIFF_SUFFIXES):
    import tifffile  # pylint: disable=g-import-not-at-top
    try:
      return tifffile.imread(path)
    except Exception as e:
      raise DataError(f"{path}: not a readable TIFF ({_first_line(e)})") from e
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  Image.MAX_IMAGE_PIXELS = None  # any size (module docstring)
  try:
    with Image.open(path) as image:
      image.load()
      if image.mode == "P" and not palette_as_indices:
        image = image.convert("RGBA" if "transparency" in image.info
                              else "RGB")
      elif image.mode in ("1", "L", "P", "RGB", "RGBA", "LA", "I;16",
                          "I;16B", "I;16L", "I", "F"):
        pass
      else:
        image = image.convert("RGB")
      array = as_array(image)
      if image.mode == "1":
        array = array.astype(np.uint8)
      return array
  except UnidentifiedImageError as e:
    raise DataError(f"{path}: not an image file") from e
  except Image.DecompressionBombError as e:
    raise DataError(f"{path}: larger than Pillow's size limit "
                    f"({_first_line(e)})") from e
  except MemoryError as e:
    raise DataError(f"{path}: too large to read into memory") from e
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(f"{path}: corrupt or truncated image "
                    f"({_first_line(e)})") from e


def as_array(image, rows: int = 256) -> np.ndarray:
  """`np.asarray(image)` of a Pillow image, `rows` rows at a time: Pillow's
  array interface joins the whole image's bytes from chunks, so besides
  Pillow's own buffer it held two copies at once (2 bytes a pixel more
  for a gray 14000x14000 PNG, 6 for RGB); block by block it holds one."""
  width, height = image.size
  first = np.asarray(image.crop((0, 0, width, min(rows, height))))
  array = np.empty((height,) + first.shape[1:], first.dtype)
  array[:len(first)] = first
  for top in range(rows, height, rows):
    array[top:top + rows] = np.asarray(image.crop(
        (0, top, width, min(top + rows, height))))
  return array


def _channels_last(array: np.ndarray, path: str) -> np.ndarray:
  if array.ndim == 2:
    return array[..., None]
  if array.ndim == 3 and array.shape[-1] in (1, 3):
    return array
  if array.ndim == 3 and array.shape[-1] in (2, 4):  # LA or RGBA
    return array[..., :-1]
  raise DataError(f"{path}: image of shape {array.shape}; expected gray, "
                  "RGB or RGBA")


def to_float(array: np.ndarray, path: str) -> np.ndarray:
  """Stored values -> float32 in [0, 1] (8-bit / 255, 16-bit / 65535)."""
  return as_unit(array, unit_divisor(array, path))


def unit_divisor(array: np.ndarray, path: str) -> float | None:
  """What `to_float` divides an image's stored values by (None: floats and
  booleans, taken as they are), its values checked: predict decides it
  once for a whole image and converts tile by tile (`as_unit`)."""
  if array.dtype == bool:
    return None
  if array.dtype == np.uint8:
    return 255.0
  if array.dtype in (np.uint16, np.dtype(">u2"), np.dtype("<u2")):
    return 65535.0
  if np.issubdtype(array.dtype, np.integer):
    info = np.iinfo(array.dtype)
    low, high = array.min(initial=0), array.max(initial=0)
    if low < 0 or high > 65535:
      raise DataError(f"{path}: {array.dtype} values in [{low}, {high}]; "
                      "expected 8- or 16-bit intensities")
    return 255.0 if high <= 255 and info.max <= 255 else 65535.0
  if np.issubdtype(array.dtype, np.floating):
    if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
      raise DataError(f"{path}: float image with values outside [0, 1]")
    return None
  raise DataError(f"{path}: pixel type {array.dtype} is not supported")


def as_unit(array: np.ndarray, divisor: float | None) -> np.ndarray:
  """Stored values (all of an image, or a tile) / `divisor`, float32."""
  if divisor is None:
    return array.astype(np.float32)
  return array.astype(np.float32) / divisor


def _first_line(error: Exception) -> str:
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
