"""Training targets that teach a pixel model to separate touching objects.

Pure numpy / scipy / scikit-image on the host, computed once per image from
an instance-id map ([H, W] integers, 0 = background, each object one id > 0;
ids need not be sequential). Two targets, after Ronneberger et al. (2015):

* `three_class`: 0 background, 1 interior, 2 boundary. Boundary pixels are
  the object pixels that `skimage.segmentation.find_boundaries` marks in
  mode "inner" with connectivity 1: a pixel of an object with a 4-neighbour
  of another id (another object or the background). Where two objects touch,
  both sides of the seam are boundary, so interiors of different objects are
  never 4- or 8-adjacent and connected components of the interior keep them
  apart. `boundary_width` k marks the k outermost rings (ring j + 1 is the
  inner boundary of what ring j left); an object thinner than 2k has no
  interior left.
* `unet_weight_map`: the paper's per-pixel loss weight
      w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2)),
  d1, d2 the Euclidean distances from pixel x to the nearest and the second
  nearest object (pixel centre to the nearest pixel centre of the object,
  so a background pixel touching an object has d = 1). The border term is
  applied to background pixels only: in the paper it is what makes "the
  separating background labels between touching cells obtain a large
  weight"; object pixels get w_c alone. With fewer than two objects it is 0.
  w_c balances the two classes, background (id 0) and foreground (id > 0):
  each class's weight is inversely proportional to its pixel frequency,
  normalised so the background weight is 1 (w_c = 1 on background,
  f_bg / f_fg on objects); w0 is therefore in units of the background's
  weight, as in the paper's Fig. 3d. An image that is all one class gets
  w_c = 1. `class_balance=False` sets w_c = 1 everywhere; `foreground_fraction`
  passes f_fg measured over a whole training set instead of this image.

Annotations whose objects touch (the 2018 DSB masks do) leave no background
between touching objects for the border term to weigh, and a binary target
of them merges touching objects: `separate_touching` first clears the seam
between them (1 pixel by default), giving the binary target
`separate_touching(instances) > 0` and the weight map
`unet_weight_map(separate_touching(instances))`, whose seam pixels have
d1 = d2 = 1 and so weight w_c + w0 exp(-2 / sigma^2).

The weight map is fast on large images with hundreds of objects: each
object's distance transform is computed only inside its bounding box grown by
the cutoff C = sigma * sqrt(2 ln(w0 / tolerance)), beyond which the border
term is below `tolerance`. A pixel outside an object's grown box is farther
than C from it, so wherever d2 <= C the term is exact (the crop holds every
pixel of the object, so its distance transform is the full image's) and
elsewhere it is set to 0, off by less than `tolerance`.
"""
import numpy as np
from scipy import ndimage
from skimage import segmentation

from unetjax.runtime.errors import ConfigError, DataError

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


def check_instances(instances: np.ndarray, name: str = "instance map"
                    ) -> np.ndarray:
  """`instances` as an integer [H, W] array of ids >= 0, or a DataError."""
  instances = np.asarray(instances)
  if instances.ndim != 2 or not (np.issubdtype(instances.dtype, np.integer)
                                 or instances.dtype == bool):
    raise DataError(f"{name}: expected a 2-D integer array of object ids "
                    f"(0 = background), got {instances.dtype} of shape "
                    f"{instances.shape}")
  if instances.size and instances.min() < 0:
    raise DataError(f"{name}: object ids must be >= 0, found "
                    f"{int(instances.min())}")
  return instances.astype(np.int64, copy=False)


def three_class(instances: np.ndarray, *, boundary_width: int = 1
                ) -> np.ndarray:
  """Background 0 / interior 1 / boundary 2 classes of an instance map."""
  instances = check_instances(instances)
  if not isinstance(boundary_width, (int, np.integer)) or boundary_width < 1:
    raise ConfigError(f"boundary_width must be an integer >= 1, got "
                      f"{boundary_width!r}")
  classes = np.where(instances > 0, INTERIOR, BACKGROUND).astype(np.int32)
  remaining = instances.copy()
  for _ in range(boundary_width):
    ring = segmentation.find_boundaries(remaining, connectivity=1,
                                        mode="inner", background=0)
    classes[ring] = BOUNDARY
    remaining[ring] = 0
  return classes


def separate_touching(instances: np.ndarray, *, symmetric: bool = False
                      ) -> np.ndarray:
  """`instances` with background put between objects that touch.

  A seam pixel is a pixel of an object with a 4-neighbour in another
  object. By default only the seam pixels of the object with the larger id
  become background: a 1-pixel gap, and no two pixels of different objects
  remain 4-neighbours. `symmetric=True` clears both sides (a 2-pixel gap).
  Pixels next to the background only are kept. This is the binary target
  (`> 0`) and the input of `unet_weight_map` for data whose annotations
  touch (the 2018 DSB masks do): the paper's annotations had such gaps.
  """
  instances = check_instances(instances)
  cross = ndimage.generate_binary_structure(2, 1)
  larger = ndimage.grey_dilation(instances, footprint=cross,
                                 mode="nearest") > instances
  big = np.iinfo(np.int64).max
  smaller = ndimage.grey_erosion(np.where(instances > 0, instances, big),
                                 footprint=cross, mode="nearest") < instances
  seam = (instances > 0) & (smaller | larger if symmetric else smaller)
  return np.where(seam, 0, instances)


def class_frequencies(class_map: np.ndarray, num_classes: int) -> np.ndarray:
  """Fraction of the pixels in each class 0..num_classes-1 (float64)."""
  class_map = np.asarray(class_map)
  if class_map.size and (class_map.min() < 0
                         or class_map.max() >= num_classes):
    raise DataError(f"class map: values must be in 0..{num_classes - 1}, "
                    f"found {int(class_map.min())}..{int(class_map.max())}")
  counts = np.bincount(class_map.ravel().astype(np.int64),
                       minlength=num_classes).astype(np.float64)
  return counts / max(class_map.size, 1)


def balanced_class_weights(frequencies) -> np.ndarray:
  """Weights inversely proportional to `frequencies`, class 0's weight 1.

  A class with frequency 0 gets weight 0 (it has no pixels to weigh); if
  class 0 itself is absent the weights are normalised so the smallest
  non-zero one is 1. All classes absent (or one class only): all ones.
  """
  frequencies = np.asarray(frequencies, np.float64)
  if np.any(frequencies < 0) or not np.all(np.isfinite(frequencies)):
    raise ConfigError(f"class frequencies must be finite and >= 0, got "
                      f"{frequencies.tolist()}")
  present = frequencies > 0
  if present.sum() <= 1:
    return np.ones_like(frequencies)
  weights = np.where(present, 1.0 / np.where(present, frequencies, 1.0), 0.0)
  reference = weights[0] if present[0] else weights[present].min()
  return weights / reference


def border_cutoff(w0: float, sigma: float, tolerance: float) -> float:
  """Distance sum d1 + d2 beyond which w0 exp(-s^2 / 2 sigma^2) < tolerance."""
  if w0 <= tolerance:
    return 0.0
  return float(sigma * np.sqrt(2.0 * np.log(w0 / tolerance)))


def two_nearest_distances(instances: np.ndarray, cutoff: float
                          ) -> tuple[np.ndarray, np.ndarray]:
  """d1, d2 per pixel: distances to the nearest and second nearest object.

  Exact wherever the distance is <= `cutoff`; np.inf where it is farther
  (the object's grown box does not reach the pixel). One distance transform
  per object, over its bounding box grown by ceil(cutoff) + 1 pixels.
  """
  instances = check_instances(instances)
  shape = instances.shape
  d1 = np.full(shape, np.inf, np.float32)
  d2 = np.full(shape, np.inf, np.float32)
  grow = int(np.ceil(cutoff)) + 1
  for index, box in enumerate(ndimage.find_objects(instances)):
    if box is None:
      continue
    grown = tuple(slice(max(s.start - grow, 0), min(s.stop + grow, n))
                  for s, n in zip(box, shape))
    distance = ndimage.distance_transform_edt(
        instances[grown] != index + 1).astype(np.float32)
    distance[distance > cutoff] = np.inf
    near, second = d1[grown], d2[grown]
    np.minimum(second, np.maximum(near, distance), out=second)
    np.minimum(near, distance, out=near)
  return d1, d2


def unet_weight_map(instances: np.ndarray, *, w0: float = 10.0,
                    sigma: float = 5.0, class_balance: bool = True,
                    foreground_fraction: float | None = None,
                    tolerance: float = 1e-4) -> np.ndarray:
  """The U-Net paper's loss weight per pixel, float32 [H, W] (module doc)."""
  instances = check_instances(instances)
  if not (np.isfinite(w0) and w0 >= 0):
    raise ConfigError(f"weight map w0 must be finite and >= 0, got {w0!r}")
  if not (np.isfinite(sigma) and sigma > 0):
    raise ConfigError(f"weight map sigma must be > 0, got {sigma!r}")
  if not tolerance > 0:
    raise ConfigError(f"weight map tolerance must be > 0, got {tolerance!r}")
  foreground = instances > 0
  weights = np.ones(instances.shape, np.float32)
  if class_balance:
    if foreground_fraction is None:
      foreground_fraction = float(foreground.mean()) if foreground.size else 0
    if not 0 <= foreground_fraction <= 1:
      raise ConfigError(f"foreground_fraction must be in [0, 1], got "
                        f"{foreground_fraction!r}")
    class_weights = balanced_class_weights(
        [1.0 - foreground_fraction, foreground_fraction])
    weights[foreground] = class_weights[1] if class_weights[1] > 0 else 1.0
  cutoff = border_cutoff(w0, sigma, tolerance)
  if cutoff > 0:
    d1, d2 = two_nearest_distances(instances, cutoff)
    total = d1 + d2
    near = ~foreground & (d2 <= cutoff)
    weights[near] += (w0 * np.exp(-total[near].astype(np.float64) ** 2
                                  / (2.0 * sigma ** 2))).astype(np.float32)
  return weights
