"""Instance metrics: how well predicted objects match the true ones.

Pure numpy / scipy on the host, on instance-id maps ([H, W] integers,
0 = background, one id > 0 per object; ids need not be sequential). Objects
are ordered by id: row i of `iou_matrix` is the i-th smallest true id.

Per image (`image_scores`):
* IoU of every true / predicted pair from one contingency table
  (`np.bincount` over the pixel pairs), never a loop over pairs.
* Matching at threshold t: a one-to-one assignment of predicted to true
  objects, a pair counting only when IoU > t (strictly, as the 2018 Data
  Science Bowl does). TP = matched pairs, FP = unmatched predictions,
  FN = unmatched true objects. For t >= 0.5 an object has at most one
  partner with IoU > t (two disjoint partners would each need more than half
  of it), so TP is simply the count of such pairs; below 0.5
  `scipy.optimize.linear_sum_assignment` finds the matching with the most
  pairs (ties broken by the larger total IoU).
* `ap` at t: TP / (TP + FP + FN), the challenge's per-threshold score, which
  the StarDist paper calls "AP". `challenge_score`: its mean over the
  thresholds (0.50, 0.55, ..., 0.95 by default). `ap50` is `ap` at 0.5,
  `f1_50` = 2 TP / (2 TP + FP + FN) at 0.5 and `mean_matched_iou` the mean
  IoU of the pairs matched at 0.5 (NaN when none is).
* `object_dice` and `object_hausdorff` as the GlaS challenge defines them
  (Sirinukunwattana et al. 2017, and its evaluation code):
      D_obj = 1/2 [ sum_i g_i Dice(G_i, S*(G_i)) + sum_j s_j Dice(G*(S_j), S_j) ]
  with g_i = |G_i| / sum_k |G_k| and s_j = |S_j| / sum_k |S_k| (size
  weights over the true objects G and the predicted objects S), S*(G_i) the
  predicted object overlapping G_i the most (ties: the smallest id; none:
  the empty set, Dice 0) and G*(S_j) likewise. H_obj is the same sum with
  the Hausdorff distance between the pixel sets (Euclidean, pixel centres,
  in pixels), except that an object overlapping nothing is paired with the
  object of the other set nearest to it by Hausdorff distance. Edge cases,
  as the GlaS code: no objects in either map gives D_obj = 1 and H_obj = 0;
  objects in only one of them give D_obj = 0 and H_obj = inf.
* `pixel_dice`: 2 |T & P| / (|T| + |P|) of the foreground masks.
* Both maps empty: every score is a perfect 1 (`challenge_score`, `ap`,
  `ap50`, `f1_50`, `object_dice`, `pixel_dice`), H_obj 0. Objects on one
  side only: all of those 0. The raw counts ride along (`tp`/`fp`/`fn`
  per threshold, `tp50`..., pixel and IoU sums) so `split_scores` can pool.

Over a split (`split_scores`): the challenge score, each `ap` and `ap50` as
means over images (as the challenge averages); F1, precision and recall at
0.5 from the summed counts; mean matched IoU over all matched pairs; object
Dice and Hausdorff as means over images; pixel Dice from the summed
intersections and sizes.
"""
import numpy as np
from scipy import ndimage, optimize, spatial
from skimage import segmentation

from unetjax.errors import ConfigError, DataError

DEFAULT_THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)


def _dense(ids: np.ndarray, name: str) -> tuple[np.ndarray, int]:
  """Ids renumbered 0..n in the order of the original ids, and n."""
  ids = np.asarray(ids)
  if ids.ndim != 2 or not (np.issubdtype(ids.dtype, np.integer)
                           or ids.dtype == bool):
    raise DataError(f"{name}: expected a 2-D integer array of object ids "
                    f"(0 = background), got {ids.dtype} of shape {ids.shape}")
  ids = ids.astype(np.int64, copy=False)
  if ids.size == 0:
    return ids, 0
  if ids.min() < 0:
    raise DataError(f"{name}: object ids must be >= 0, found {ids.min()}")
  top = int(ids.max())
  if top <= 4 * ids.size + 1024:
    present = np.bincount(ids.ravel(), minlength=top + 1) > 0
    present[0] = True
    lut = np.cumsum(present) - 1
    return lut[ids], int(present.sum()) - 1
  values, inverse = np.unique(ids, return_inverse=True)
  inverse = inverse.reshape(ids.shape)
  if values[0] != 0:
    inverse = inverse + 1
    return inverse, len(values)
  return inverse, len(values) - 1


def _table(true_ids: np.ndarray, pred_ids: np.ndarray):
  """Contingency table [n_true + 1, n_pred + 1] (row/column 0: background)."""
  true_dense, n_true = _dense(true_ids, "true instance map")
  pred_dense, n_pred = _dense(pred_ids, "predicted instance map")
  if true_dense.shape != pred_dense.shape:
    raise DataError(f"instance maps differ in shape: true "
                    f"{true_dense.shape}, predicted {pred_dense.shape}")
  pairs = true_dense.ravel() * (n_pred + 1) + pred_dense.ravel()
  table = np.bincount(pairs, minlength=(n_true + 1) * (n_pred + 1))
  return table.reshape(n_true + 1, n_pred + 1), true_dense, pred_dense


def _iou(table: np.ndarray) -> np.ndarray:
  inter = table[1:, 1:].astype(np.float64)
  true_sizes = table[1:, :].sum(axis=1)
  pred_sizes = table[:, 1:].sum(axis=0)
  union = true_sizes[:, None] + pred_sizes[None, :] - inter
  return inter / np.maximum(union, 1)


def iou_matrix(true_ids: np.ndarray, pred_ids: np.ndarray) -> np.ndarray:
  """IoU [n_true, n_pred] of every true and predicted object (by id order)."""
  return _iou(_table(true_ids, pred_ids)[0])


def matched_pairs(iou: np.ndarray, threshold: float
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Rows and columns of the one-to-one matching at IoU > threshold."""
  iou = np.asarray(iou, np.float64)
  candidates = iou > threshold
  if threshold >= 0.5:
    return np.nonzero(candidates)
  rows = np.flatnonzero(candidates.any(axis=1))
  cols = np.flatnonzero(candidates.any(axis=0))
  if not len(rows):
    return rows, cols
  sub = iou[np.ix_(rows, cols)]
  # Most pairs first; the IoU term sums to < 1/2 so it only breaks ties.
  cost = -(sub > threshold).astype(np.float64) - sub / (2.0 * max(len(rows), len(cols)))
  r, c = optimize.linear_sum_assignment(cost)
  keep = sub[r, c] > threshold
  return rows[r[keep]], cols[c[keep]]


def match(iou: np.ndarray, threshold: float) -> tuple[int, int, int]:
  """(TP, FP, FN) of the one-to-one matching at IoU > threshold."""
  iou = np.asarray(iou)
  if iou.ndim != 2:
    raise DataError(f"IoU matrix: expected [n_true, n_pred], got shape "
                    f"{iou.shape}")
  tp = len(matched_pairs(iou, threshold)[0])
  return tp, iou.shape[1] - tp, iou.shape[0] - tp


def _ratio(numerator: float, denominator: float) -> float:
  """numerator / denominator, 1.0 for 0 / 0 (nothing to get wrong)."""
  return float(numerator / denominator) if denominator else 1.0


def object_dice(table: np.ndarray) -> float:
  """GlaS object-level Dice from a contingency table (module doc)."""
  n_true, n_pred = table.shape[0] - 1, table.shape[1] - 1
  if n_true == 0 and n_pred == 0:
    return 1.0
  if n_true == 0 or n_pred == 0:
    return 0.0
  inter = table[1:, 1:]
  true_sizes = table[1:, :].sum(axis=1)
  pred_sizes = table[:, 1:].sum(axis=0)

  def side(inter, sizes, other_sizes):
    partner = np.argmax(inter, axis=1)  # first maximum: the smallest id
    overlap = inter[np.arange(len(sizes)), partner]
    dice = 2.0 * overlap / (sizes + np.where(overlap > 0,
                                             other_sizes[partner], 0))
    return float(np.sum(sizes / sizes.sum() * dice))

  return 0.5 * (side(inter, true_sizes, pred_sizes)
                + side(inter.T, pred_sizes, true_sizes))


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


def _directed(source: _Objects, i: int, other_at: np.ndarray,
              target: _Objects, j: int) -> float:
  """max over pixels of source object i of the distance to target object j."""
  outside = other_at != j + 1
  if not outside.any():
    return 0.0
  return float(target.tree(j).query(source.pixels[i][outside])[0].max())


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

  Candidates are tried in order of a lower bound (the farthest rim pixel of
  k from the candidate's bounding box: every pixel of the candidate lies in
  that box) and the search stops once the bound passes the best distance.
  """
  rim = objects.rims[k]
  boxes = others.boxes
  dy = np.maximum(np.maximum(boxes[None, :, 0] - rim[:, None, 0], 0),
                  rim[:, None, 0] - boxes[None, :, 1])
  dx = np.maximum(np.maximum(boxes[None, :, 2] - rim[:, None, 1], 0),
                  rim[:, None, 1] - boxes[None, :, 3])
  bound = np.sqrt(dy ** 2 + dx ** 2).max(axis=0)
  best, best_distance = -1, np.inf
  for candidate in np.argsort(bound, kind="stable"):
    if bound[candidate] > best_distance:
      break
    d = distance(candidate)
    if d < best_distance or (d == best_distance and candidate < best):
      best, best_distance = candidate, d
  return int(best)


def object_hausdorff(table: np.ndarray, true_dense: np.ndarray,
                     pred_dense: np.ndarray) -> float:
  """GlaS object-level Hausdorff distance (module doc), in pixels."""
  n_true, n_pred = table.shape[0] - 1, table.shape[1] - 1
  if n_true == 0 and n_pred == 0:
    return 0.0
  if n_true == 0 or n_pred == 0:
    return float("inf")
  true_objects = _Objects(true_dense, n_true)
  pred_objects = _Objects(pred_dense, n_pred)
  hausdorff = _hausdorff_fn(true_objects, pred_objects, true_dense,
                            pred_dense)
  inter = table[1:, 1:]
  true_sizes = table[1:, :].sum(axis=1)
  pred_sizes = table[:, 1:].sum(axis=0)
  true_side = 0.0
  for i in range(n_true):
    j = int(np.argmax(inter[i]))
    if inter[i, j] == 0:
      j = _nearest(true_objects, i, pred_objects, lambda c: hausdorff(i, c))
    true_side += true_sizes[i] / true_sizes.sum() * hausdorff(i, j)
  pred_side = 0.0
  for j in range(n_pred):
    i = int(np.argmax(inter[:, j]))
    if inter[i, j] == 0:
      i = _nearest(pred_objects, j, true_objects, lambda c: hausdorff(c, j))
    pred_side += pred_sizes[j] / pred_sizes.sum() * hausdorff(i, j)
  return 0.5 * (true_side + pred_side)


def _check_thresholds(thresholds) -> np.ndarray:
  thresholds = np.atleast_1d(np.asarray(thresholds, np.float64))
  if (thresholds.ndim != 1 or not thresholds.size
      or np.any(thresholds < 0) or np.any(thresholds >= 1)):
    raise ConfigError(f"IoU thresholds must be a non-empty list of values in "
                      f"[0, 1), got {thresholds.tolist()}")
  return thresholds


def image_scores(true_ids: np.ndarray, pred_ids: np.ndarray,
                 thresholds=DEFAULT_THRESHOLDS) -> dict:
  """Every instance score of one image (module doc), with the raw counts."""
  thresholds = _check_thresholds(thresholds)
  table, true_dense, pred_dense = _table(true_ids, pred_ids)
  iou = _iou(table)
  counts = np.array([match(iou, t) for t in thresholds], np.int64)
  tp, fp, fn = counts.T
  ap = np.array([_ratio(a, a + b + c) for a, b, c in counts])
  rows, cols = matched_pairs(iou, 0.5)
  tp50 = len(rows)
  fp50, fn50 = iou.shape[1] - tp50, iou.shape[0] - tp50
  matched_iou_sum = float(iou[rows, cols].sum())
  intersection = int(table[1:, 1:].sum())
  pixel_true, pixel_pred = int(table[1:, :].sum()), int(table[:, 1:].sum())
  return {
      "thresholds": thresholds,
      "tp": tp, "fp": fp, "fn": fn, "ap": ap,
      "challenge_score": float(ap.mean()),
      "ap50": _ratio(tp50, tp50 + fp50 + fn50),
      "f1_50": _ratio(2 * tp50, 2 * tp50 + fp50 + fn50),
      "tp50": tp50, "fp50": fp50, "fn50": fn50,
      "mean_matched_iou": (matched_iou_sum / tp50 if tp50 else float("nan")),
      "matched_iou_sum": matched_iou_sum, "num_matched": tp50,
      "object_dice": object_dice(table),
      "object_hausdorff": object_hausdorff(table, true_dense, pred_dense),
      "pixel_dice": _ratio(2 * intersection, pixel_true + pixel_pred),
      "pixel_intersection": intersection,
      "pixel_true": pixel_true, "pixel_pred": pixel_pred,
      "num_true": iou.shape[0], "num_pred": iou.shape[1],
  }


def threshold_key(threshold: float) -> str:
  """The split-score name of `ap` at one threshold: 0.75 -> "ap75"."""
  return f"ap{int(round(threshold * 100)):02d}"


def split_scores(per_image: list[dict]) -> dict[str, float]:
  """Scores over a split from `image_scores` of each image (module doc)."""
  if not per_image:
    raise DataError("instance scores: no images to score")
  thresholds = per_image[0]["thresholds"]
  if any(not np.array_equal(s["thresholds"], thresholds) for s in per_image):
    raise ConfigError("instance scores: images scored at different IoU "
                      "thresholds cannot be pooled")

  def total(key):
    return sum(s[key] for s in per_image)

  def mean(key):
    return float(np.mean([s[key] for s in per_image]))

  tp, fp, fn = total("tp50"), total("fp50"), total("fn50")
  scores = {
      "num_images": float(len(per_image)),
      "challenge_score": mean("challenge_score"),
      "ap50": mean("ap50"),
      "f1_50": _ratio(2 * tp, 2 * tp + fp + fn),
      "precision_50": _ratio(tp, tp + fp),
      "recall_50": _ratio(tp, tp + fn),
      "mean_matched_iou": (total("matched_iou_sum") / total("num_matched")
                           if total("num_matched") else float("nan")),
      "object_dice": mean("object_dice"),
      "object_hausdorff": mean("object_hausdorff"),
      "pixel_dice": _ratio(2 * total("pixel_intersection"),
                           total("pixel_true") + total("pixel_pred")),
      "num_true": float(total("num_true")),
      "num_pred": float(total("num_pred")),
  }
  ap = np.mean([s["ap"] for s in per_image], axis=0)
  for t, value in zip(thresholds, ap):
    scores[threshold_key(t)] = float(value)
  return scores
