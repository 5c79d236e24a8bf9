"""Segmentation data from plain folders: images/ and masks/ paired by stem.

Layout: `dir/images/NAME.ext` with `dir/masks/NAME.ext` (PNG, TIFF, BMP or
JPEG, any mix), or the same pair of folders under `dir/train`, `dir/val`
and optionally `dir/test`. With a single pair of folders the last
`val_fraction` of the sorted stems is the validation split.

Images may be gray or RGB, 8- or 16-bit; palette images are read as their
colours, an alpha channel is dropped. `channels=0` (default) reads gray
images (stored gray, gray+alpha, or RGB with R = G = B) as one channel
when every image is gray, and RGB when any is in colour; gray and colour
files in one set are an error unless `channels` (1 or 3) says how to
convert (see `image_io.read_image`). Masks hold class ids
0..num_classes-1, or any values mapped to class ids by `mask_values`
(e.g. {0: 0, 255: 1}), or are binarised by `mask_threshold` (value >
threshold -> 1: binary masks with antialiased edges); palette masks give
their indices. With `instances=True` masks hold instance ids instead (0 =
background, 1..n one object each; 16-bit PNG or TIFF for more than 255)
and `DataInfo.instances` is set. Every mask is checked before training: an
unexpected value, a size that differs from its image, a file without its
partner or an empty folder raises a DataError naming the file.

Storage (`cache=True`, the default): each pair is read and checked once
and stored as one example (`stored.py`: `image.npy`, `label.npy` in the
narrowest integer type, `meta.json`) under `stored.cache_dir('folders')`
(`$UNETJAX_CACHE_DIR`, else `$XDG_CACHE_HOME/unetjax` or
`~/.cache/unetjax`; the data folder is never written), keyed by the real
paths, sizes and modification times of the image and its mask, how masks
are read (`num_classes`, `mask_values`, `mask_threshold`, `instances`,
`label_components`) and `channels`: an edited, added or removed file is
read and checked again, unchanged ones only have their meta.json read.
Splits are then `stored.StoredSplit`s, each example at its own size, read
when the input pipeline asks for it (a training crop only its rows), so
memory does not grow with the number of images. `cache=False` reads every
split into memory instead, padded to a common size (see `Split.sizes`):
the same examples, the same batches.
"""
import os
from typing import Callable

import numpy as np

from unetjax.data import (DataInfo, Dataset, Split, image_io, label_checks,
                          stored)
from unetjax.runtime.errors import ConfigError, DataError

MaskToClasses = Callable[[np.ndarray, str], np.ndarray]


def build(*, dir: str = "", num_classes: int = 2,  # pylint: disable=redefined-builtin
          class_names: tuple[str, ...] = (), mask_values=None,
          mask_threshold: float | None = None, instances: bool = False,
          channels: int = 0, val_fraction: float = 0.2,
          pad_to_multiple: int = 32, label_components: bool = False,
          cache: bool = True) -> Dataset:
  if num_classes < 2:
    raise ConfigError(f"data.num_classes={num_classes}: expected >= 2")
  if class_names and len(class_names) != num_classes:
    raise ConfigError(f"data.class_names={tuple(class_names)}: expected "
                      f"{num_classes} names")
  check_layout_options(channels, pad_to_multiple)
  to_classes = mask_mapping(mask_values, num_classes, mask_threshold,
                            instances)
  label_checks.check_option(label_components, instances)
  if label_components:  # binary masks -> their blobs as objects
    to_classes = lambda mask, path: label_checks.components(  # pylint: disable=unnecessary-lambda-assignment
        _instance_ids(mask, path))
  pairs = split_pairs(dir, val_fraction)
  if cache:  # every split checked and stored now, as in memory below
    setting = ["folders", num_classes, sorted(
        (int(k), int(v)) for k, v in dict(mask_values or {}).items()),
               mask_threshold, bool(instances), bool(label_components)]
    splits, chosen = stored_splits(pairs, to_classes, setting, channels,
                                   pad_to_multiple, "folders")
  else:
    read = {name: read_pairs(found, to_classes)
            for name, found in pairs.items()}
    chosen = choose_channels([source for examples in read.values()
                              for source in _sources(examples)], channels)
    splits = {name: stack_pairs(examples, chosen, pad_to_multiple)
              for name, examples in read.items()}
  default_names = ("background", "object") if instances else tuple(
      f"class_{i}" for i in range(num_classes))
  info = DataInfo(name="folders", num_classes=num_classes,
                  in_channels=chosen,
                  class_names=tuple(class_names) or default_names,
                  instances=instances)
  return Dataset(info, {name: (lambda s=split: s)
                        for name, split in splits.items()})


def check_layout_options(channels: int, pad_to_multiple: int) -> None:
  if channels not in (0, 1, 3):
    raise ConfigError(f"data.channels={channels}: expected 0 (as the images "
                      "are), 1 (gray) or 3 (RGB)")
  if not isinstance(pad_to_multiple, int) or pad_to_multiple < 1:
    raise ConfigError(f"data.pad_to_multiple={pad_to_multiple}: expected an "
                      "integer >= 1")


def mask_mapping(mask_values, num_classes: int,
                 mask_threshold: float | None = None,
                 instances: bool = False) -> MaskToClasses:
  """Stored mask values -> class ids (or instance ids), validated file by
  file."""
  ways = [key for key, on in (("mask_values", bool(mask_values)),
                              ("mask_threshold", mask_threshold is not None),
                              ("instances", bool(instances))) if on]
  if len(ways) > 1:
    raise ConfigError(f"data.{ways[0]} and data.{ways[1]} are both set: "
                      "expected one way to read masks")
  if instances:
    if num_classes != 2:
      raise ConfigError(f"data.num_classes={num_classes} with "
                        "data.instances=True: expected 2 (background, object)")
    return _instance_ids
  if mask_threshold is not None:
    if (num_classes != 2 or isinstance(mask_threshold, bool) or
        not isinstance(mask_threshold, (int, float)) or
        not np.isfinite(mask_threshold)):
      raise ConfigError(f"data.mask_threshold={mask_threshold} with "
                        f"data.num_classes={num_classes}: expected a finite "
                        "number and 2 classes (binary masks)")
    return lambda mask, path: (mask > mask_threshold).astype(np.int32)
  if not mask_values:
    def check(mask, path):
      image_io.check_classes(mask, num_classes, path)
      return mask
    return check
  values = {int(k): int(v) for k, v in dict(mask_values).items()}
  bad = sorted({c for c in values.values() if not 0 <= c < num_classes})
  if bad:
    raise ConfigError(f"data.mask_values maps to classes {bad}; expected "
                      f"class ids 0..{num_classes - 1}")
  return lambda mask, path: image_io.map_mask_values(mask, values, path)


def split_pairs(directory: str, val_fraction: float) -> dict[str, list]:
  """{split: [(image path, mask path), ...]} for the folder layout found."""
  if not directory or not os.path.isdir(directory):
    raise DataError(f"data.dir={directory!r} is not a folder; expected "
                    "images/ and masks/ (or train/, val/ holding them)")
  if os.path.isdir(os.path.join(directory, "images")):
    if not 0 < val_fraction < 1:
      raise ConfigError(f"data.val_fraction={val_fraction}: expected 0 < "
                        "fraction < 1 to hold out validation images")
    pairs = paired_files(directory)
    num_val = max(1, round(len(pairs) * val_fraction))
    if num_val >= len(pairs):
      raise DataError(f"{directory}: {len(pairs)} image(s) are too few to "
                      "hold out a validation split")
    return {"train": pairs[:-num_val], "val": pairs[-num_val:]}
  splits = [s for s in ("train", "val", "test")
            if os.path.isdir(os.path.join(directory, s))]
  if "train" not in splits or "val" not in splits:
    raise DataError(f"{directory}: expected images/ and masks/, or train/ "
                    "and val/ folders that hold them")
  return {s: paired_files(os.path.join(directory, s)) for s in splits}


def paired_files(directory: str,
                 mask_folder: str = "masks") -> list[tuple[str, str]]:
  """(image, mask) paths paired by stem; a file without partner is an error."""
  folders = [os.path.join(directory, sub) for sub in ("images", mask_folder)]
  stems = []
  for folder in folders:
    if not os.path.isdir(folder):
      raise DataError(f"{folder}: no such folder")
    found = {os.path.splitext(f)[0]: f for f in os.listdir(folder)
             if f.lower().endswith(image_io.IMAGE_SUFFIXES)}
    if not found:
      suffixes = ", ".join(image_io.IMAGE_SUFFIXES)
      raise DataError(f"{folder}: no image files ({suffixes})")
    stems.append(found)
  for (folder, mine), (other_folder, theirs) in (
      (folders[0], stems[0]), (folders[1], stems[1])), (
          (folders[1], stems[1]), (folders[0], stems[0])):
    missing = sorted(set(mine) - set(theirs))
    if missing:
      raise DataError(f"{os.path.join(folder, mine[missing[0]])}: no "
                      f"partner named {missing[0]}.* in {other_folder}")
  return [(image_io.find_partner(folders[0], stem),
           image_io.find_partner(folders[1], stem))
          for stem in sorted(stems[0])]


def _instance_ids(mask: np.ndarray, path: str) -> np.ndarray:
  if mask.size and mask.min() < 0:
    raise DataError(f"{path}: negative instance ids ({int(mask.min())}); "
                    "expected 0 = background and 1..n for the objects")
  return mask


def load_split(pairs, to_classes: MaskToClasses, pad_to_multiple: int = 32,
               channels: int = 0, stored_as: tuple[str, list] | None = None):
  """Reads and checks (image, mask) pairs: stored as dataset
  `stored_as[0]`'s examples with `stored_as[1]` (how `to_classes` reads
  masks, JSON) in their key, a `stored.StoredSplit`; or, with `stored_as`
  None, stacked in memory, varied sizes padded (a `Split`)."""
  check_layout_options(channels, pad_to_multiple)
  if stored_as is not None:
    dataset, setting = stored_as
    splits, _ = stored_splits({"all": pairs}, to_classes, setting, channels,
                              pad_to_multiple, dataset)
    return splits["all"]
  examples = read_pairs(pairs, to_classes)
  chosen = choose_channels(_sources(examples), channels)
  return stack_pairs(examples, chosen, pad_to_multiple)


def read_pair(image_path: str, mask_path: str, to_classes: MaskToClasses
              ) -> tuple[np.ndarray, np.ndarray]:
  """(stored image pixels, labels) of one pair, checked."""
  pixels = image_io.read_pixels(image_path)
  mask = image_io.read_mask(mask_path)
  if mask.shape != pixels.shape[:2]:
    raise DataError(f"{mask_path}: mask of size {mask.shape[0]}x"
                    f"{mask.shape[1]} for an image of size "
                    f"{pixels.shape[0]}x{pixels.shape[1]} ({image_path})")
  return pixels, to_classes(mask, mask_path)


def read_pairs(pairs, to_classes: MaskToClasses) -> list:
  """[(stored image pixels, labels, image path)], each pair checked."""
  return [(*read_pair(image_path, mask_path, to_classes), image_path)
          for image_path, mask_path in pairs]


def stored_splits(pairs: dict[str, list], to_classes: MaskToClasses,
                  setting: list, channels: int, pad_to_multiple: int,
                  dataset: str) -> tuple[dict, int]:
  """({split: stored.StoredSplit}, the channels chosen): every pair of
  every split read, checked and stored once (see the module docstring),
  the first bad file raised as `read_pairs` raises it. With `channels` 0
  each image is stored as it is (gray ones as one channel) and its source
  noted, so the set's channels are chosen as in memory, from the
  meta.json files alone once stored."""
  root = stored.cache_dir(dataset)
  flat = [pair for found in pairs.values() for pair in found]

  def make(pair):
    image_path, mask_path = pair
    pixels, labels = read_pair(image_path, mask_path, to_classes)
    image = image_io.convert_channels(pixels, channels, image_path)
    if image.dtype != np.uint8:
      image = image_io.to_float(image, image_path)
    return ({"image": stored.stored_image(image), "label": labels},
            {"source": [pixels.shape[-1], image_io.is_gray(pixels)]})
  done = stored.store(root, [stored.file_key(pair, [1, setting, channels])
                             for pair in flat], flat, make)
  chosen = choose_channels([(*meta["source"], pair[0])
                            for pair, (_, meta) in zip(flat, done)],
                           channels)
  splits, start = {}, 0
  for name, found in pairs.items():
    splits[name] = stored.whole_split(
        done[start:start + len(found)], _ids(path for path, _ in found),
        chosen, root, pad_to_multiple)
    start += len(found)
  return splits, chosen


def _sources(examples) -> list[tuple[int, bool, str]]:
  return [(pixels.shape[-1], image_io.is_gray(pixels), path)
          for pixels, _, path in examples]


def _ids(image_paths) -> tuple[str, ...]:
  return tuple(os.path.splitext(os.path.basename(path))[0]
               for path in image_paths)


def choose_channels(sources: list[tuple[int, bool, str]],
                    channels: int) -> int:
  """1 or 3: `channels` if set; else 1 when every image is gray (stored
  gray, or RGB with R = G = B), 3 when some are in colour and none is
  stored gray (R = G = B ones stay RGB); a stored-gray image among colour
  ones is an error naming both files. `sources`: (channels stored in the
  file, gray, path) of each image."""
  if channels:
    return channels
  colour = next((path for _, gray, path in sources if not gray), None)
  if colour is None:
    return 1
  stored_gray = next((path for stored_channels, _, path in sources
                      if stored_channels == 1), None)
  if stored_gray is not None:
    raise DataError(f"{stored_gray}: a gray image where {colour} is in "
                    "colour; set data.channels=3 (gray repeated) or 1 "
                    "(colour to luminance) to convert")
  return 3


def stack_pairs(examples, channels: int, pad_to_multiple: int) -> Split:
  images = []
  for pixels, _, path in examples:
    pixels = image_io.convert_channels(pixels, channels, path)
    images.append(pixels if pixels.dtype == np.uint8
                  else image_io.to_float(pixels, path))
  ids = _ids(path for _, _, path in examples)
  return stack_examples(images, [labels for _, labels, _ in examples], ids,
                        pad_to_multiple)


def stack_examples(images, labels, ids, pad_to_multiple: int = 32) -> Split:
  """One Split; differing sizes are zero-padded and recorded in `sizes`.

  Images are float in [0, 1] or uint8 (0..255); they are kept as uint8
  when that loses nothing (8-bit sources): a quarter of the memory of
  float32.
  """
  sizes = np.array([image.shape[:2] for image in images])
  same_size = (sizes == sizes[0]).all()
  height, width = sizes[0] if same_size else (
      -(-sizes.max(axis=0) // pad_to_multiple) * pad_to_multiple)
  eight_bit = all(stored.stored_image(image).dtype == np.uint8
                  for image in images)
  stacked = np.zeros((len(images), height, width, images[0].shape[-1]),
                     np.uint8 if eight_bit else np.float32)
  stacked_labels = np.zeros((len(images), height, width), np.int32)
  for i, (image, label) in enumerate(zip(images, labels)):
    h, w = image.shape[:2]
    if image.dtype == np.uint8:
      stacked[i, :h, :w] = image if eight_bit else image / np.float32(255)
    else:
      stacked[i, :h, :w] = np.round(image * 255) if eight_bit else image
    stacked_labels[i, :h, :w] = label
  return Split(stacked, stacked_labels, tuple(ids),
               None if same_size else sizes)
