"""What predict reads and where it writes, decided before anything is
written: the inputs a path, folder or glob names, their shapes, the output
paths and the checks on them (`segment.predict_files` calls these).

Inputs are read as stored (`image_io.read_stored`): an 8-bit image stays
8-bit until its tiles are cut, a quarter of its float32 size.
"""
import glob
import os
from typing import Iterator

import numpy as np

from unetjax.data import image_io
from unetjax.runtime.errors import ConfigError, DataError

OUTPUT_KINDS = ("mask", "prob", "overlay", "instances")


def input_paths(pattern: str, output: str | None = None) -> list[str]:
  """The files a path, a directory (its image files) or a glob names,
  sorted, decided before anything is written. Files in `output` named like
  this tool's outputs of another input (`a_mask.png` next to `a.png`) are
  left out: they are an earlier run's results, not new inputs."""
  if os.path.isdir(pattern):
    paths = sorted(p for p in glob.glob(os.path.join(glob.escape(pattern),
                                                     "*"))
                   if os.path.isfile(p)
                   and p.lower().endswith(image_io.IMAGE_SUFFIXES))
    if not paths:
      raise DataError(f"--input={pattern!r} is a folder without image files "
                      f"({', '.join(image_io.IMAGE_SUFFIXES)})")
  else:
    paths = sorted(p for p in glob.glob(pattern) if not os.path.isdir(p))
  if output is not None:
    earlier = earlier_outputs(paths, output)
    if earlier:
      print(f"Not reading {len(earlier)} file(s) in {output} named like "
            f"outputs of the other inputs ({os.path.basename(earlier[0])}"
            f"{', ...' if len(earlier) > 1 else ''})", flush=True)
      paths = [p for p in paths if p not in earlier]
  if not paths and not glob.has_magic(pattern):
    paths = [pattern]  # read_input names what is wrong with it
  if not paths:
    raise DataError(f"--input={pattern!r} matches no file")
  names = [_stem(p) for p in paths]
  clashes = sorted({n for n in names if names.count(n) > 1})
  if clashes:
    raise DataError(f"--input={pattern!r}: several inputs are named "
                    f"{clashes[:3]}; their outputs would overwrite each other")
  return paths


def earlier_outputs(paths: list[str], output: str) -> list[str]:
  """The inputs that are this tool's outputs of another input, in `output`."""
  stems = {_stem(p) for p in paths}
  folder = os.path.realpath(output)
  return [p for p in paths
          if os.path.dirname(os.path.realpath(p)) == folder
          and any(_stem(p) == f"{stem}_{kind}" for stem in stems
                  for kind in OUTPUT_KINDS)]


def output_paths(path: str, output: str, kinds: list[str]) -> list[str]:
  """Where the outputs of one input go: `<output>/<stem>_<kind><suffix>`."""
  suffix = ".tif" if path.lower().endswith(image_io.TIFF_SUFFIXES) else ".png"
  return [os.path.join(output, f"{_stem(path)}_{kind}{suffix}")
          for kind in kinds]


def check_outputs(paths: list[str], output: str, kinds: list[str],
                  overwrite: bool) -> None:
  """Refuses, before anything is written, an --output that is a file, an
  output that would replace an input, and (unless `overwrite`) one that
  would replace an existing file."""
  if os.path.exists(output) and not os.path.isdir(output):
    raise DataError(f"--output={output}: is a file; expected a directory "
                    "for the masks")
  inputs = {os.path.realpath(p): p for p in paths}
  targets = [t for p in paths for t in output_paths(p, output, kinds)]
  for target in targets:
    if os.path.realpath(target) in inputs:
      raise DataError(f"--output={output}: {os.path.basename(target)} would "
                      f"overwrite the input {inputs[os.path.realpath(target)]}"
                      "; choose another --output")
  existing = [t for t in targets if os.path.lexists(t)]
  if existing and not overwrite:
    raise DataError(f"--output={output} already holds "
                    f"{os.path.basename(existing[0])}"
                    f"{f' and {len(existing) - 1} more outputs' if len(existing) > 1 else ''}"
                    "; pass --overwrite to replace them, or choose another "
                    "--output")
  for target in existing:
    if not os.path.isfile(target):
      raise DataError(f"--output={output}: {target} is not a file; it cannot "
                      "be replaced by a mask")


def check_counts(tile_size: int, batch_size: int) -> None:
  for flag, value, what in (("tile_size", tile_size, "pixels"),
                            ("batch_size", batch_size, "tiles")):
    if not isinstance(value, int) or value < 1:
      raise ConfigError(f"--{flag}={value}: expected a positive number of "
                        f"{what}")


def read_input(path: str) -> np.ndarray:
  """[pages, H, W, C] in [0, 1]: one image, or every page of a TIFF stack."""
  if path.lower().endswith(image_io.TIFF_SUFFIXES):
    return image_io.read_stack(path)
  return image_io.read_image(path)[None]


def input_shape(path: str) -> tuple[int, int]:
  """(pages, channels) of an input, checked: a TIFF from its header (its
  pages are read one at a time later), any other image read whole and its
  values checked as `image_io.to_float` checks them, without the copy."""
  if path.lower().endswith(image_io.TIFF_SUFFIXES):
    pages, _, _, channels = image_io.stack_shape(path)
    return pages, channels
  pixels = image_io.read_pixels(path)
  image_io.unit_divisor(pixels, path)
  return 1, pixels.shape[-1]


def read_pages(path: str, channels: int | None = None
               ) -> Iterator[np.ndarray]:
  """An input's pages [H, W, C] in [0, 1], read as they are asked for;
  `channels` converts them as the training loaders do
  (`image_io.read_image`)."""
  return (image_io.as_unit(pixels, divisor)
          for pixels, divisor in read_stored_pages(path, channels))


def read_stored_pages(path: str, channels: int | None = None
                      ) -> Iterator[tuple[np.ndarray, float | None]]:
  """`read_pages` before the division: each page's (stored values,
  divisor), what predict tiles (`image_io.as_unit` of them is the page).

  A TIFF page made gray by its luminance is converted from its floats
  (no rounding to the stored bit depth), as predict always did; every
  other conversion gives the same values on stored values or floats."""
  if not path.lower().endswith(image_io.TIFF_SUFFIXES):
    pixels = image_io.read_stored(path, channels)
    yield pixels, image_io.unit_divisor(pixels, path)
    return
  for page in image_io.iter_stack_stored(path):
    if channels == 1 and page.shape[-1] == 3 and not image_io.is_gray(page):
      page = image_io.convert_channels(image_io.to_float(page, path), 1,
                                       path)
      yield page, None
      continue
    if channels is not None:
      page = image_io.convert_channels(page, channels, path)
    yield page, image_io.unit_divisor(page, path)


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]
