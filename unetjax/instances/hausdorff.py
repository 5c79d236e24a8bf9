"""The GlaS object-level Hausdorff distance, exact and fast.

    H_obj = 1/2 [ sum_i g_i H(G_i, S*(G_i)) + sum_j s_j H(G*(S_j), S_j) ]

over true objects G_i and predicted S_j, size weights g_i = |G_i| / sum |G|
and s_j = |S_j| / sum |S|, S*(G_i) the predicted object overlapping G_i the
most and, for an object overlapping nothing, the object of the other map
nearest to it by Hausdorff distance (Sirinukunwattana et al. 2017 and the
challenge's evaluation code). H(A, B) = max(sup_a d(a, B), sup_b d(b, A))
over all pixels (Euclidean distance between pixel centres, in pixels).
No objects in either map: 0; in only one of them: inf, as the GlaS code.

Exact, without a loop over pixel pairs:
* The pixel of an object nearest to any pixel outside it has an
  8-neighbour outside the object (else a neighbour one step towards the
  outside pixel would be nearer), so distances to an object are taken to
  its rim alone, with a KD-tree per rim.
* A pixel's distance to an object lies between its distance L to the
  object's bounding box and L + the box's diagonal, so pixels with
  L + diagonal < max L cannot be the farthest and are not queried.
* The nearest object by Hausdorff distance is searched in order of a lower
  bound (the farthest rim pixel of each object from the other's box: a
  distance to a box is convex, so its maximum over an object is at a rim
  pixel), stopping once the bound passes the best distance found.
"""
import numpy as np
from scipy import ndimage, spatial
from skimage import segmentation


class _Objects:
  """Pixel coordinates of each object of a dense id map, and of its rim.

  The rim (pixels with an 8-neighbour outside the object) holds the pixel
  of the object nearest to any pixel outside it, so distances to an object
  are taken to its rim alone.
  """

  def __init__(self, dense: np.ndarray, n: int):
    self.n = n
    self.width = dense.shape[1]
    self.pixels = self._group(dense, dense.ravel() > 0)
    rim = segmentation.find_boundaries(dense, connectivity=2, mode="inner",
                                       background=0)
    self.rims = self._group(dense, rim.ravel())
    self.all_rims = np.concatenate(self.rims) if n else np.zeros((0, 2))
    self.rim_starts = np.cumsum([0] + [len(r) for r in self.rims[:-1]])
    boxes = ndimage.find_objects(dense, max_label=n)
    self.boxes = np.array([[b[0].start, b[0].stop - 1, b[1].start,
                            b[1].stop - 1] for b in boxes], np.float64)
    self._trees = {}

  def _group(self, dense, selected):
    flat = dense.ravel()
    index = np.flatnonzero(selected)
    index = index[np.argsort(flat[index], kind="stable")]
    splits = np.cumsum(np.bincount(flat[index], minlength=self.n + 1))[:-1]
    return [np.stack(np.divmod(part, self.width), axis=1).astype(np.float64)
            for part in np.split(index, splits)[1:]]

  def tree(self, k: int) -> spatial.cKDTree:
    if k not in self._trees:
      self._trees[k] = spatial.cKDTree(self.rims[k])
    return self._trees[k]

  def flat_index(self, k: int) -> np.ndarray:
    pixels = self.pixels[k].astype(np.int64)
    return pixels[:, 0] * self.width + pixels[:, 1]


def _box_distance(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """Distances [len(points), len(boxes)] from points to (filled) boxes."""
  dy = np.maximum(np.maximum(boxes[None, :, 0] - points[:, None, 0], 0),
                  points[:, None, 0] - boxes[None, :, 1])
  dx = np.maximum(np.maximum(boxes[None, :, 2] - points[:, None, 1], 0),
                  points[:, None, 1] - boxes[None, :, 3])
  return np.sqrt(dy ** 2 + dx ** 2)


def _directed(source: _Objects, i: int, other_at: np.ndarray,
              target: _Objects, j: int) -> float:
  """max over pixels of source object i of the distance to target object j.

  A pixel's distance to the target lies between its distance L to the
  target's box and L + the box's diagonal, so only pixels with L + diagonal
  >= max L can be the farthest: the others are not queried.
  """
  points = source.pixels[i][other_at != j + 1]
  if not len(points):
    return 0.0
  if len(points) > 64:
    box = target.boxes[j]
    low = _box_distance(points, box[None])[:, 0]
    diagonal = np.hypot(box[1] - box[0], box[3] - box[2])
    points = points[low + diagonal >= low.max()]
  return float(target.tree(j).query(points)[0].max())


def _hausdorff_fn(true_objects, pred_objects, true_dense, pred_dense):
  """H(true i, pred j) with a cache; i, j are 0-based object indices."""
  cache = {}
  pred_at = [pred_dense.ravel()[true_objects.flat_index(i)]
             for i in range(true_objects.n)]
  true_at = [true_dense.ravel()[pred_objects.flat_index(j)]
             for j in range(pred_objects.n)]

  def hausdorff(i: int, j: int) -> float:
    if (i, j) not in cache:
      cache[i, j] = max(
          _directed(true_objects, i, pred_at[i], pred_objects, j),
          _directed(pred_objects, j, true_at[j], true_objects, i))
    return cache[i, j]

  return hausdorff


def _nearest(objects: _Objects, k: int, others: _Objects, distance) -> int:
  """The object of `others` nearest to object k by Hausdorff distance.

  Candidates are tried in order of a lower bound on H(k, candidate): the
  larger of the farthest pixel of k from the candidate's bounding box and
  the farthest pixel of the candidate from k's box (each object lies in its
  box, and a distance to a box is convex, so the farthest pixel is a rim
  pixel). The search stops once the bound passes the best distance found;
  ties go to the smallest id, as the GlaS code's `min` does.
  """
  bound = np.maximum(
      _box_distance(objects.rims[k], others.boxes).max(axis=0),
      np.maximum.reduceat(
          _box_distance(others.all_rims, objects.boxes[k:k + 1])[:, 0],
          others.rim_starts))
  best, best_distance = -1, np.inf
  for candidate in np.argsort(bound, kind="stable"):
    if bound[candidate] > best_distance:
      break
    d = distance(candidate)
    if d < best_distance or (d == best_distance and candidate < best):
      best, best_distance = candidate, d
  return int(best)


def object_hausdorff(true_dense: np.ndarray, pred_dense: np.ndarray,
                     true_partners: np.ndarray, pred_partners: np.ndarray
                     ) -> float:
  """GlaS object-level Hausdorff distance (module doc), in pixels.

  `true_dense`, `pred_dense`: id maps numbered 0..n without gaps;
  `true_partners[i]`: the 0-based index of the predicted object that true
  object i overlaps most, -1 if none (`pred_partners` likewise).
  """
  n_true, n_pred = len(true_partners), len(pred_partners)
  if n_true == 0 and n_pred == 0:
    return 0.0
  if n_true == 0 or n_pred == 0:
    return float("inf")
  true_objects = _Objects(true_dense, n_true)
  pred_objects = _Objects(pred_dense, n_pred)
  hausdorff = _hausdorff_fn(true_objects, pred_objects, true_dense,
                            pred_dense)
  true_sizes = np.array([len(p) for p in true_objects.pixels], np.float64)
  pred_sizes = np.array([len(p) for p in pred_objects.pixels], np.float64)
  true_side = 0.0
  for i, j in enumerate(true_partners):
    if j < 0:
      j = _nearest(true_objects, i, pred_objects, lambda c: hausdorff(i, c))
    true_side += true_sizes[i] / true_sizes.sum() * hausdorff(i, j)
  pred_side = 0.0
  for j, i in enumerate(pred_partners):
    if i < 0:
      i = _nearest(pred_objects, j, true_objects, lambda c: hausdorff(c, j))
    pred_side += pred_sizes[j] / pred_sizes.sum() * hausdorff(i, j)
  return 0.5 * (true_side + pred_side)
