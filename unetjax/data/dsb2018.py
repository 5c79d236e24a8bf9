"""2018 Data Science Bowl nuclei, Kaggle layout: one instance map per image.

Layout (`dir` may be the folder holding `stage1_train/` or that folder
itself): `<id>/images/<id>.png` is the image, `<id>/masks/*.png` one
0/255 mask per nucleus, of the image's size. The masks of an image are
combined into one instance-id map (0 = background, nucleus k of the sorted
mask file names = k), so `Split.labels` hold instance ids
(`DataInfo.instances`).

Images are read as gray (`channels=1`: R = G = B images give their R
channel, colour ones their luminance) or RGB (`channels=3`); RGBA's alpha
is dropped; stored as uint8.

Splits: the sorted image ids are shuffled by `split_seed`; the first
`test_fraction` of them are `test`, the next `val_fraction` `val`, the rest
`train` (each kept in id order). Never file order on disk: the same seed
gives the same split on every machine. `max_images` > 0 keeps only that
many ids of the shuffled order (quick runs), before splitting.

Training images with a side above `train_max_side` are cut into a grid
of nearly equal pieces of at most that side (a nucleus cut by the grid is
an object in each piece it touches), so a large image is not drawn as
often as a small one; the pieces are windows of the image's stored files.
Validation and test images stay whole: they are scored at their native
size.

Checked up front, one line naming the file: no image folders, a folder
without `images/` or `masks/`, `images/` without exactly one image, a mask
of another size than its image, a mask with values other than 0 and 255,
an empty mask, and masks that overlap (`overlaps='error'`; 'later' gives
the overlap to the later mask in file-name order).

Storage (`cache=True`, the default): reading the full set's ~26,000 mask
PNGs takes about a minute on 2 cores, and holding every image in memory
padded to the largest took 7.3 GiB. So each image and its combined
instance map are written once as `image.npy` and `label.npy` (uint16) in
a folder of their own under `$UNETJAX_CACHE_DIR`, else
`$XDG_CACHE_HOME/unetjax` or `~/.cache/unetjax` (never in the data
folder), keyed by the real paths (symbolic links resolved), sizes and
modification times of the image and its masks, by `overlaps` and by
`channels`: a changed, added or
removed mask file reads and checks the masks again. Splits are then
`stored.StoredSplit`s: each example is read from its memory-mapped files
when the pipeline asks for it, a training crop only its rows. A task's
targets made from the instance maps are cached beside them (`prepared/`).
`cache=False` reads everything into memory, padded, as before (a cache
folder that cannot be written needs it).
"""
import concurrent.futures
import hashlib
import json
import os

import numpy as np

from unetjax.data import DataInfo, Dataset, folders, image_io, stored
from unetjax.runtime.errors import ConfigError, DataError

DOWNLOAD_HINT = ("expected the Kaggle 2018 Data Science Bowl layout "
                 "stage1_train/<id>/images/<id>.png + <id>/masks/*.png")
CLASS_NAMES = ("background", "nucleus")
_READ_THREADS = 4


def build(*, dir: str = "", channels: int = 1,  # pylint: disable=redefined-builtin
          val_fraction: float = 0.1, test_fraction: float = 0.1,
          split_seed: int = 0, overlaps: str = "error",
          train_max_side: int = 512, pad_to_multiple: int = 32,
          max_images: int = 0, cache: bool = True) -> Dataset:
  check_options(channels, overlaps, train_max_side, pad_to_multiple,
                max_images)
  examples = find_examples(dir)
  splits = split_ids(sorted(examples), val_fraction, test_fraction,
                     split_seed, max_images)
  info = DataInfo(name="dsb2018", num_classes=2, in_channels=channels,
                  class_names=CLASS_NAMES, instances=True)

  def loader(name):
    def load():
      return load_split([examples[i] for i in splits[name]], channels,
                        overlaps, train_max_side if name == "train" else 0,
                        pad_to_multiple, cache_dir() if cache else None)
    return load
  return Dataset(info, {name: loader(name) for name in splits})


def check_options(channels: int, overlaps: str, train_max_side: int,
                  pad_to_multiple: int, max_images: int = 0) -> None:
  if channels not in (1, 3):
    raise ConfigError(f"data.channels={channels}: expected 1 (gray) or 3 "
                      "(RGB)")
  if overlaps not in ("error", "later"):
    raise ConfigError(f"data.overlaps={overlaps!r}: expected 'error' or "
                      "'later'")
  if train_max_side < 16:
    raise ConfigError(f"data.train_max_side={train_max_side}: expected >= 16")
  if pad_to_multiple < 1:
    raise ConfigError(f"data.pad_to_multiple={pad_to_multiple}: expected >= 1")
  if max_images < 0:
    raise ConfigError(f"data.max_images={max_images}: expected >= 0 (0 = "
                      "all)")


def find_examples(directory: str) -> dict[str, tuple[str, list[str]]]:
  """{image id: (image path, sorted mask paths)}, the layout checked."""
  if not directory or not os.path.isdir(directory):
    raise DataError(f"DSB 2018 data folder data.dir={directory!r} does not "
                    f"exist; {DOWNLOAD_HINT}")
  if os.path.isdir(os.path.join(directory, "stage1_train")):
    directory = os.path.join(directory, "stage1_train")
  if all(os.path.isdir(os.path.join(directory, sub))
         for sub in ("images", "masks")):  # one image's folder
    raise DataError(f"data.dir={directory!r} is the folder of one image (it "
                    "holds images/ and masks/); set data.dir to the folder "
                    f"above it, {os.path.dirname(directory.rstrip(os.sep))!r}"
                    ", which holds one such folder per image id")
  examples = {}
  for name in sorted(os.listdir(directory)):
    folder = os.path.join(directory, name)
    if name.startswith(".") or not os.path.isdir(folder):
      continue
    images, masks = (os.path.join(folder, sub) for sub in ("images", "masks"))
    for sub in (images, masks):
      if not os.path.isdir(sub):
        raise DataError(f"{sub}: no such folder; {DOWNLOAD_HINT}")
    found = _image_files(images)
    if len(found) != 1:
      raise DataError(f"{images}: {len(found)} image files; expected exactly "
                      "one")
    mask_files = _image_files(masks)
    if not mask_files:
      raise DataError(f"{masks}: no mask files; expected one PNG per nucleus")
    examples[name] = (found[0], mask_files)
  if not examples:
    raise DataError(f"{directory}: no image folders; {DOWNLOAD_HINT}")
  return examples


def _image_files(folder: str) -> list[str]:
  return [os.path.join(folder, f) for f in sorted(os.listdir(folder))
          if f.lower().endswith(image_io.IMAGE_SUFFIXES)
          and not f.startswith(".")]


def split_ids(ids: list[str], val_fraction: float, test_fraction: float,
              seed: int, max_images: int = 0) -> dict[str, list[str]]:
  """{split: sorted ids}: a seeded shuffle of the sorted ids, cut in three.

  test_fraction = 0 gives no test split.
  """
  for key, value in (("val_fraction", val_fraction),
                     ("test_fraction", test_fraction)):
    if not 0 <= value < 1:
      raise ConfigError(f"data.{key}={value}: expected 0 <= fraction < 1")
  if val_fraction <= 0:
    raise ConfigError(f"data.val_fraction={val_fraction}: expected > 0 to "
                      "hold out validation images")
  order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
  if max_images:
    order = order[:max_images]
  count = len(order)
  num_test = round(count * test_fraction)
  num_val = round(count * val_fraction)
  if (test_fraction and not num_test) or not num_val or (
      num_test + num_val >= count):
    raise DataError(
        f"{count} image(s) with data.val_fraction={val_fraction} and "
        f"data.test_fraction={test_fraction} leave a split empty "
        f"({count - num_val - num_test} train, {num_val} val, {num_test} "
        "test)")
  splits = {"train": sorted(order[num_test + num_val:]),
            "val": sorted(order[num_test:num_test + num_val])}
  if num_test:
    splits["test"] = sorted(order[:num_test])
  return splits


def load_split(examples, channels: int, overlaps: str, max_side: int,
               pad_to_multiple: int, cache: str | None = None):
  """The examples as a `stored.StoredSplit` of files under `cache` (each
  read, checked and written on first use), or, with `cache` None, read,
  checked and stacked in memory (a `Split`); max_side > 0 tiles big
  images."""
  if cache is not None:
    return _stored_split(examples, channels, overlaps, max_side,
                         pad_to_multiple, cache)
  with concurrent.futures.ThreadPoolExecutor(_READ_THREADS) as pool:
    loaded = list(pool.map(
        lambda example: load_example(*example, channels, overlaps),
        examples))
  images, labels, ids = [], [], []
  for (image_path, _), (image, instances) in zip(examples, loaded):
    name = os.path.basename(os.path.dirname(os.path.dirname(image_path)))
    for (y0, y1), (x0, x1) in tile_grid(image.shape[:2], max_side):
      images.append(image[y0:y1, x0:x1])
      labels.append(instances[y0:y1, x0:x1])
      whole = (y1 - y0, x1 - x0) == image.shape[:2]
      ids.append(name if whole else f"{name}_y{y0}_x{x0}")
  return folders.stack_examples(images, labels, tuple(ids), pad_to_multiple)


def _stored_split(examples, channels: int, overlaps: str, max_side: int,
                  pad_to_multiple: int, cache: str) -> stored.StoredSplit:
  def make(example):
    image_path, mask_paths = example
    image = stored.stored_image(image_io.read_image(image_path,
                                                    channels=channels))
    return {"image": image, "label": combine_masks(
        mask_paths, image.shape[:2], image_path, overlaps)}, None
  done = stored.store(cache, [_cache_key(image_path, mask_paths, overlaps,
                                         channels)
                              for image_path, mask_paths in examples],
                      examples, make)
  folders_, windows, ids = [], [], []
  for (image_path, _), (folder, meta) in zip(examples, done):
    name = os.path.basename(os.path.dirname(os.path.dirname(image_path)))
    shape = tuple(meta["shape"][:2])
    for (y0, y1), (x0, x1) in tile_grid(shape, max_side):
      folders_.append(folder)
      windows.append((y0, x0, y1 - y0, x1 - x0))
      ids.append(name if (y1 - y0, x1 - x0) == shape
                 else f"{name}_y{y0}_x{x0}")
  image_dtypes = {meta["dtypes"]["image"] for _, meta in done}
  ranges = np.array([meta["label_range"] for _, meta in done])
  return stored.StoredSplit(
      folders_, windows, ids, channels,
      "uint8" if image_dtypes == {"uint8"} else "float32", {},
      (int(ranges[:, 0].min()), int(ranges[:, 1].max())),
      os.path.join(cache, "prepared"), pad_to_multiple)


def tile_grid(shape: tuple[int, int], max_side: int):
  """[((y0, y1), (x0, x1)), ...]: nearly equal pieces of at most max_side
  (the whole image when max_side is 0 or the image fits)."""
  axes = []
  for length in shape:
    pieces = -(-length // max_side) if max_side else 1
    bounds = np.linspace(0, length, pieces + 1).round().astype(int)
    axes.append(list(zip(bounds[:-1].tolist(), bounds[1:].tolist())))
  return [(rows, cols) for rows in axes[0] for cols in axes[1]]


def load_example(image_path: str, mask_paths: list[str], channels: int,
                 overlaps: str = "error") -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [H, W, channels] image, int32 [H, W] instance map), read and
  checked from the files (the scripts' and benchmarks' reader; nothing
  cached)."""
  image = stored.stored_image(image_io.read_image(image_path,
                                                  channels=channels))
  return image, combine_masks(mask_paths, image.shape[:2], image_path,
                              overlaps)


def cache_dir() -> str:
  """Where the stored examples live (see the module docstring)."""
  return stored.cache_dir("dsb2018")


def _cache_key(image_path: str, mask_paths: list[str], overlaps: str,
               channels: int) -> str:
  key = json.dumps([[2, channels], overlaps, stored.file_stat(image_path),
                    [stored.file_stat(path) for path in mask_paths]])
  return hashlib.sha256(key.encode()).hexdigest()[:32]


def combine_masks(mask_paths: list[str], shape: tuple[int, int],
                  image_path: str, overlaps: str = "error") -> np.ndarray:
  """One int32 instance map: mask k (in the given order) -> id k + 1."""
  instances = np.zeros(shape, np.int32)
  for number, path in enumerate(mask_paths, start=1):
    mask = image_io.read_mask(path)
    if mask.shape != tuple(shape):
      raise DataError(f"{path}: mask of size {mask.shape[0]}x{mask.shape[1]} "
                      f"for an image of size {shape[0]}x{shape[1]} "
                      f"({image_path})")
    inside = mask == 255
    if not np.all(inside | (mask == 0)):
      bad = np.unique(mask[~inside & (mask != 0)])[:10].tolist()
      raise DataError(f"{path}: mask values {bad} found; expected 0 and 255 "
                      "only (one nucleus per mask)")
    if not inside.any():
      raise DataError(f"{path}: empty mask (no pixel is 255)")
    taken = instances[inside]
    overlap = np.count_nonzero(taken)
    if overlap and overlaps == "error":
      other = mask_paths[int(taken[taken > 0][0]) - 1]
      raise DataError(f"{path}: overlaps {os.path.basename(other)} (and "
                      f"maybe others) by {overlap} pixel(s); set "
                      "data.overlaps='later' to give them to the later mask")
    instances[inside] = number
  return instances
