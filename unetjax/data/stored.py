"""A split kept on disk, one `.npy` file per image, label and pixel map,
read lazily through memory maps.

A dataset of a few hundred microscopy images of their own sizes (256x256
up to 1388x1040 for DSB 2018) held in memory padded to the largest one
cost 7.3 GiB of RSS; ten times the images could not train on a 24 GiB
machine. Stored as files, each example is read when the pipeline asks for
it, and only the rows and columns asked for (a training crop): a memory
map is opened per read and closed with it, so no mapped page stays
resident and memory does not grow with the number of images (nnU-Net
keeps its preprocessed cases the same way).

Layout: an example is a folder with `image.npy` ([H, W, C], uint8 or
float32), `label.npy` ([H, W], the narrowest integer type that holds its
ids), optional maps `<name>.npy` ([H, W]) and `meta.json` (written last,
so a folder without it is an unfinished write and is written again). An
example may be a window (y0, x0, height, width) of its folder's arrays:
the pieces that `train_max_side` cuts a large DSB image into share that
image's files. Labels are served as int32, as in-memory splits hold them;
a one-channel image in a three-channel split (a file with R = G = B among
colour ones) is stored once and served repeated to RGB.

Every file-backed loader (DSB, folders, GlaS, ISBI) stores its examples
this way under `cache_dir(<dataset>)/examples/<key>/`, the key made from
the real paths, sizes and modification times of the files an example was
read from and the settings that shaped it (`file_key`): a changed, added
or removed file is read and checked again, and the data folder is never
written.
"""
import concurrent.futures
import hashlib
import json
import os
import threading

import numpy as np

from unetjax.runtime.errors import DataError

_THREADS = 4
META = "meta.json"


def narrowest(labels: np.ndarray) -> np.ndarray:
  """Non-negative integer ids in uint8, uint16 or int32, whichever is the
  narrowest that holds them (DSB's instance maps fit uint16: half of
  int32)."""
  high = int(labels.max()) if labels.size else 0
  low = int(labels.min()) if labels.size else 0
  for dtype in (np.uint8, np.uint16):
    if low >= 0 and high <= np.iinfo(dtype).max:
      return labels.astype(dtype)
  return labels.astype(np.int32)


def cache_dir(dataset: str) -> str:
  """Where `dataset`'s stored examples live: `$UNETJAX_CACHE_DIR`, else
  `$XDG_CACHE_HOME/unetjax` or `~/.cache/unetjax`, then the dataset's
  name (never the data folder, which may be read-only)."""
  root = os.environ.get("UNETJAX_CACHE_DIR") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
      "unetjax")
  return os.path.join(root, dataset)


def file_stat(path: str) -> list:
  """[real path, size, modification time]: a set of symbolic links to the
  same files shares their stored examples; an edited file does not."""
  try:
    info = os.stat(path)
  except OSError as e:  # a broken link, a file gone since it was listed
    raise DataError(f"{path}: no such file" if isinstance(
        e, FileNotFoundError) else f"{path}: {e.strerror or e}") from e
  return [os.path.realpath(path), info.st_size, info.st_mtime_ns]


def file_key(paths, setting) -> str:
  """The name of an example's folder: `paths` (the files it is read from)
  by `file_stat`, and `setting` (anything JSON holds: what shaped it)."""
  key = json.dumps([setting, [file_stat(path) for path in paths]])
  return hashlib.sha256(key.encode()).hexdigest()[:32]


def store(root: str, keys: list[str], sources: list, make) -> list:
  """[(folder, meta)] of each source's example `root/examples/<key>`,
  `make(source)` -> ({name: array}, extra meta) called (on a few threads)
  only where no finished example is there. Sources with one key (linked
  copies of one file) are made once. The first error, in the sources'
  order, is raised."""
  def one(key, source):
    folder = os.path.join(root, "examples", key)
    meta = read_meta(folder)
    if meta is None:
      arrays, extra = make(source)
      try:
        meta = write_example(folder, arrays, extra)
      except OSError as e:
        raise DataError(
            f"{folder}: cannot store an example there ({e.strerror or e}); "
            "set UNETJAX_CACHE_DIR to a writable folder, or data.cache="
            "False to hold the data in memory") from e
    return folder, meta
  first = {}
  for key, source in zip(keys, sources):
    first.setdefault(key, source)
  made = dict(zip(first, parallel_map(lambda item: one(*item),
                                      first.items())))
  return [made[key] for key in keys]


def whole_split(done: list, ids, channels: int, root: str,
                pad_to_multiple: int = 32) -> "StoredSplit":
  """A StoredSplit of `store`'s (folder, meta) pairs, each example whole;
  uint8 images when all are, else float32 (uint8 ones served / 255);
  targets a task makes are cached under `root/prepared`."""
  windows = [(0, 0, *meta["shape"][:2]) for _, meta in done]
  image_dtypes = {meta["dtypes"]["image"] for _, meta in done}
  ranges = np.array([meta["label_range"] for _, meta in done])
  return StoredSplit(
      [folder for folder, _ in done], windows, ids, channels,
      "uint8" if image_dtypes == {"uint8"} else "float32", {},
      (int(ranges[:, 0].min()), int(ranges[:, 1].max())),
      os.path.join(root, "prepared"), pad_to_multiple)


def stored_image(image: np.ndarray) -> np.ndarray:
  """An image as stored: uint8 when it is, or when its [0, 1] floats are
  exactly k / 255 (8-bit values, a quarter of float32's bytes); other
  floats as float32."""
  if image.dtype == np.uint8:
    return image
  image = np.asarray(image, np.float32)
  eight = np.round(image * 255)
  if np.array_equal(eight.astype(np.float32) / np.float32(255), image):
    return eight.astype(np.uint8)
  return image


def write_example(folder: str, arrays: dict[str, np.ndarray],
                  extra: dict | None = None) -> dict:
  """Writes one example's arrays (integer ones narrowed, floats as they
  are) and its meta.json (with `extra` facts), atomically per file;
  returns the meta."""
  os.makedirs(folder, exist_ok=True)
  meta = {"shape": list(next(iter(arrays.values())).shape),
          "dtypes": {k: str(v.dtype) for k, v in arrays.items()},
          **(extra or {})}
  for name, values in arrays.items():
    if np.issubdtype(values.dtype, np.integer) and name != "image":
      meta[f"{name}_range"] = ([int(values.min()), int(values.max())]
                               if values.size else [0, 0])
      values = narrowest(values)
    _save(os.path.join(folder, f"{name}.npy"), values)
  _save_json(os.path.join(folder, META), meta)
  return meta


def read_meta(folder: str) -> dict | None:
  """An example folder's meta.json, None when absent or unreadable."""
  try:
    with open(os.path.join(folder, META), encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _save(path: str, values: np.ndarray) -> None:
  tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp.npy"
  np.save(tmp, np.ascontiguousarray(values))
  os.replace(tmp, path)


def _save_json(path: str, value) -> None:
  tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(value, f)
  os.replace(tmp, path)


def read_window(path: str, y0: int, x0: int, height: int,
                width: int) -> np.ndarray:
  """rows y0..y0+height, columns x0..x0+width of a stored array, copied
  out of a memory map that is closed again (only those rows are read)."""
  mapped = np.load(path, mmap_mode="r")
  try:
    return np.array(mapped[y0:y0 + height, x0:x0 + width])
  finally:
    del mapped


class StoredSplit:
  """One split on disk: example i is `folders[i]`'s arrays in the window
  `windows[i]` = (y0, x0, height, width).

  Offers what the input pipeline and the tasks use of a `Split`: len, ids,
  sizes, `read` (one example or a region of it, at its own size) and
  `select`/`take`; `spatial` is always True.
  """
  spatial = True

  def __init__(self, folders, windows, ids, channels: int,
               image_dtype, maps: dict[str, np.dtype], label_range,
               derived_root: str, pad_to_multiple: int = 32,
               label_folders=None, label_origins=None):
    self.folders = list(folders)
    self.windows = np.asarray(windows, np.int64).reshape(-1, 4)
    # Labels and maps may live elsewhere (a task's targets, cached apart
    # from the images they were made from), from their own origin.
    self.label_folders = list(label_folders or self.folders)
    self.label_origins = (self.windows[:, :2] if label_origins is None
                          else np.asarray(label_origins, np.int64))
    self.ids = tuple(ids)
    self.channels = channels
    self.image_dtype = np.dtype(image_dtype)
    self.map_dtypes = {k: np.dtype(v) for k, v in maps.items()}
    self.label_range = tuple(label_range)
    self.derived_root = derived_root  # where tasks' targets are cached
    self.pad_to_multiple = pad_to_multiple
    if not (len(self.folders) == len(self.windows) == len(self.ids)):
      raise DataError(f"{len(self.folders)} stored examples but "
                      f"{len(self.windows)} windows and {len(self.ids)} ids")

  label_dtype = np.dtype(np.int32)

  def __len__(self) -> int:
    return len(self.folders)

  @property
  def sizes(self) -> np.ndarray:
    return self.windows[:, 2:4]

  @property
  def shape(self) -> tuple[int, int]:
    """The common (height, width) batches of whole examples are padded to:
    the largest size, rounded up to `pad_to_multiple`."""
    multiple = self.pad_to_multiple
    largest = self.sizes.max(axis=0)
    if (self.sizes == largest).all():
      return int(largest[0]), int(largest[1])
    padded = -(-largest // multiple) * multiple
    return int(padded[0]), int(padded[1])

  def read(self, index: int, y0: int = 0, x0: int = 0,
           height: int | None = None, width: int | None = None
           ) -> dict[str, np.ndarray]:
    """Example `index` (or its region from (y0, x0), height x width):
    {'image', 'label', map names...}, labels and integer maps int32."""
    wy, wx, wh, ww = (int(v) for v in self.windows[index])
    height = wh - y0 if height is None else height
    width = ww - x0 if width is None else width
    ly, lx = (int(v) for v in self.label_origins[index])
    image = read_window(self.image_path(index), wy + y0, wx + x0, height,
                        width)
    if image.dtype != self.image_dtype:  # a 16-bit one among 8-bit ones
      image = image.astype(np.float32) / np.float32(255)
    if image.shape[-1] != self.channels:  # R = G = B among colour ones
      image = np.repeat(image, self.channels, axis=-1)
    out = {"image": image}
    for name in ("label", *self.map_dtypes):
      values = read_window(
          os.path.join(self.label_folders[index], f"{name}.npy"), ly + y0,
          lx + x0, height, width)
      out[name] = values.astype(np.int32 if name == "label"
                                else self.map_dtypes[name])
    return out

  @property
  def images(self) -> "_Column":
    """images[i]: example i's image at its own size, read when asked."""
    return _Column(self, "image", self.image_dtype)

  @property
  def labels(self) -> "_Column":
    return _Column(self, "label", self.label_dtype)

  def image_path(self, index: int) -> str:
    return os.path.join(self.folders[index], "image.npy")

  def select(self, indices) -> "StoredSplit":
    indices = np.asarray(indices, np.int64)
    return StoredSplit([self.folders[i] for i in indices],
                       self.windows[indices], [self.ids[i] for i in indices],
                       self.channels, self.image_dtype, self.map_dtypes,
                       self.label_range, self.derived_root,
                       self.pad_to_multiple,
                       [self.label_folders[i] for i in indices],
                       self.label_origins[indices])

  def take(self, count: int) -> "StoredSplit":
    return self.select(np.arange(min(count, len(self))))

  def with_labels(self, label_folders, maps: dict[str, np.dtype],
                  label_range) -> "StoredSplit":
    """The same examples (ids, images) with the label and maps of other
    folders, each covering its example's window from (0, 0)."""
    return StoredSplit(self.folders, self.windows, self.ids, self.channels,
                       self.image_dtype, maps, label_range,
                       self.derived_root, self.pad_to_multiple,
                       label_folders, np.zeros((len(self), 2), np.int64))

  def example_key(self, index: int) -> str:
    """A name for example `index` unique within its cache: its label
    folder and window."""
    y0, x0, h, w = (int(v) for v in self.windows[index])
    ly, lx = (int(v) for v in self.label_origins[index])
    return (f"{os.path.basename(self.label_folders[index])}_"
            f"{ly}_{lx}_{h}_{w}")


class _Column:
  """One array of every example, read one example at a time."""

  def __init__(self, split: StoredSplit, name: str, dtype):
    self.split, self.name, self.dtype = split, name, np.dtype(dtype)

  def __len__(self) -> int:
    return len(self.split)

  def __getitem__(self, index) -> np.ndarray:
    """column[i] or column[i, rows, ...]: example i's array (indexed)."""
    rest = ()
    if isinstance(index, tuple):
      index, rest = index[0], index[1:]
    return self.split.read(int(index))[self.name][rest]


def parallel_map(fn, items) -> list:
  """fn over items on a few threads (file reads and numpy release the
  GIL), in order."""
  with concurrent.futures.ThreadPoolExecutor(_THREADS) as pool:
    return list(pool.map(fn, items))


def transform(split: StoredSplit, fn, name: str, key: str) -> StoredSplit:
  """`fn(Split, name)` (a task's `prepare`: instance ids -> its targets)
  applied to each stored example on its own, its label and maps cached
  under `derived_root/<key>/` and read from there on later runs: the
  targets are made once per example and setting, never held for a whole
  split in memory."""
  from unetjax.data import Split  # pylint: disable=g-import-not-at-top
  root = os.path.join(split.derived_root, key)

  def one(index):
    folder = os.path.join(root, split.example_key(index))
    meta = read_meta(folder)
    if meta is None:
      example = split.read(index)
      whole = Split(example["image"][None], example["label"][None],
                    (split.ids[index],), None,
                    {k: v[None] for k, v in example.items()
                     if k not in ("image", "label")})
      made = fn(whole, name)
      meta = write_example(folder, {
          "label": made.labels[0],
          **{k: v[0] for k, v in made.maps.items()}})
    return folder, meta

  first = {}  # examples that share files (linked copies) are made once
  for index in range(len(split)):
    first.setdefault(split.example_key(index), index)
  made = dict(zip(first, parallel_map(one, first.values())))
  done = [made[split.example_key(i)] for i in range(len(split))]
  metas = [meta for _, meta in done]
  maps = {k: np.dtype(v) for k, v in metas[0]["dtypes"].items()
          if k != "label"}
  ranges = np.array([meta["label_range"] for meta in metas])
  return split.with_labels([folder for folder, _ in done], maps,
                           (int(ranges[:, 0].min()), int(ranges[:, 1].max())))
