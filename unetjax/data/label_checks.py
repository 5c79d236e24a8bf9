"""Instance labels that are really instance labels.

An instance dataset's masks hold an id per object (0 background, 1..n).
Many sets ship binary masks instead (0/255 or 0/1: object vs background);
read as ids they make each image's objects one object, and a model scored
against them "finds" 2 objects where 9 are there, without a word. So a
split whose every mask holds a single object value while some mask shows
that value as several separate blobs is refused, naming the image. The
explicit way to use such masks is `data.label_components=True` (folders):
each connected blob (8-connected: pixels touching at a corner belong
together) becomes an object, as `components` does here. Never a silent
default: touching objects in a binary mask merge into one blob, which the
user must accept knowingly.
"""
import numpy as np

from unetjax.runtime.errors import ConfigError, DataError

_EIGHT = np.ones((3, 3), bool)  # 8-connectivity


def components(mask: np.ndarray, path: str = "") -> np.ndarray:
  """Instance ids [H, W] int32: the 8-connected blobs of mask > 0."""
  del path  # the signature of a folders mask mapping
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  ids, _ = ndimage.label(np.asarray(mask) > 0, structure=_EIGHT)
  return ids.astype(np.int32)


def check_option(label_components: bool, instances: bool) -> None:
  """`label_components` makes instance ids: it needs `instances`."""
  if label_components and not instances:
    raise ConfigError("data.label_components=True numbers the blobs of "
                      "binary masks as objects: it needs data.instances=True "
                      "(instance segmentation)")


def check_instances(split, dataset: str, split_name: str) -> None:
  """Refuses binary masks given as instance ids (see the module doc).

  `split`: a `Split` whose labels are instance ids [N, H, W]. Images with
  one object each pass (one blob, one value): the first image whose single
  object value forms several blobs is only a problem when no image of the
  split holds two ids, so it is looked for only then.
  """
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  labels = split.labels  # an array, or a stored split's column read lazily
  if not len(split) or np.ndim(labels[0]) != 2:
    return
  values = set()
  for mask in (labels[i] for i in range(len(split))):
    found = np.unique(mask)
    found = found[found != 0]
    if len(found) > 1:
      return  # ids 1..n somewhere: instance masks
    values.update(found.tolist())
  for index in range(len(split)):
    mask = labels[index]
    _, count = ndimage.label(mask > 0, structure=_EIGHT)
    if count > 1:
      shown = " and ".join(str(v) for v in sorted(values | {0}))
      raise DataError(
          f"dataset {dataset!r}: data.instances=True but the masks of split "
          f"{split_name!r} are binary (values {shown}): "
          f"image {split.ids[index]!r} shows {count} separate objects all with id "
          f"{int(mask.max())}, so they would count as one; set "
          "data.label_components=True to number each connected blob as an "
          "object, or give masks with an id per object (1..n)")
