"""Instance metrics: how well predicted objects match the true ones.

Pure numpy / scipy on the host, on instance-id maps ([H, W] integers,
0 = background, one id > 0 per object; ids need not be sequential). Objects
are ordered by id: row i of `iou_matrix` is the i-th smallest true id.

Per image (`image_scores`):
* IoU of every true / predicted pair from one contingency table
  (`np.bincount`, or `np.unique` when n_true * n_pred is large, over the
  pixel pairs; kept sparse), never a loop over pairs.
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
      D_obj = 1/2 [sum_i g_i Dice(G_i, S*(G_i)) + sum_j s_j Dice(G*(S_j), S_j)]
  with g_i = |G_i| / sum_k |G_k| and s_j = |S_j| / sum_k |S_k| (size
  weights over the true objects G and the predicted objects S), S*(G_i) the
  predicted object overlapping G_i the most (ties: the smallest id; none:
  the empty set, Dice 0) and G*(S_j) likewise. H_obj is the same sum with
  the Hausdorff distance between the pixel sets (Euclidean, pixel centres,
  in pixels), except that an object overlapping nothing is paired with the
  object of the other set nearest to it by Hausdorff distance (computed in
  `instance_hausdorff`). Edge cases,
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
import dataclasses

import numpy as np

from unetjax.instances import hausdorff as instance_hausdorff
from unetjax.runtime.errors import ConfigError, DataError

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


@dataclasses.dataclass(frozen=True)
class Overlaps:
  """The non-zero part of the contingency table of two instance maps.

  One entry per (true object, predicted object) pair sharing pixels:
  `rows`, `cols` (0-based, by id order), their shared pixel count `inter`
  and `iou`. Sparse, so a prediction with thousands of specks costs memory
  by its pixels, not by n_true * n_pred.
  """
  rows: np.ndarray
  cols: np.ndarray
  inter: np.ndarray
  iou: np.ndarray
  true_sizes: np.ndarray
  pred_sizes: np.ndarray

  @property
  def shape(self) -> tuple[int, int]:
    return len(self.true_sizes), len(self.pred_sizes)

  def partners(self, transpose: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per true (transposed: predicted) object, the index of the object of
    the other map it overlaps most (ties: the smallest id; -1 if it overlaps
    none) and the pixels they share."""
    rows, cols = ((self.cols, self.rows) if transpose
                  else (self.rows, self.cols))
    order = np.lexsort((cols, -self.inter, rows))
    first_rows, first = np.unique(rows[order], return_index=True)
    partner = np.full(self.shape[1 if transpose else 0], -1, np.int64)
    shared = np.zeros(len(partner), np.int64)
    partner[first_rows] = cols[order][first]
    shared[first_rows] = self.inter[order][first]
    return partner, shared


def _overlaps(true_ids: np.ndarray, pred_ids: np.ndarray):
  """`Overlaps` of two maps and their dense (0..n renumbered) versions."""
  true_dense, n_true = _dense(true_ids, "true instance map")
  pred_dense, n_pred = _dense(pred_ids, "predicted instance map")
  if true_dense.shape != pred_dense.shape:
    raise DataError(f"instance maps differ in shape: true "
                    f"{true_dense.shape}, predicted {pred_dense.shape}")
  t, p = true_dense.ravel(), pred_dense.ravel()
  both = (t > 0) & (p > 0)
  keys = (t[both] - 1) * n_pred + (p[both] - 1)
  if n_true * n_pred <= 4 * t.size + 1024:
    counts = np.bincount(keys, minlength=n_true * n_pred)
    keys = np.flatnonzero(counts)
    counts = counts[keys]
  else:
    keys, counts = np.unique(keys, return_counts=True)
  rows, cols = np.divmod(keys, max(n_pred, 1))
  true_sizes = np.bincount(t, minlength=n_true + 1)[1:]
  pred_sizes = np.bincount(p, minlength=n_pred + 1)[1:]
  union = true_sizes[rows] + pred_sizes[cols] - counts
  overlaps = Overlaps(rows=rows, cols=cols, inter=counts,
                      iou=counts / np.maximum(union, 1),
                      true_sizes=true_sizes, pred_sizes=pred_sizes)
  return overlaps, true_dense, pred_dense


def iou_matrix(true_ids: np.ndarray, pred_ids: np.ndarray) -> np.ndarray:
  """IoU [n_true, n_pred] of every true and predicted object (by id order)."""
  overlaps = _overlaps(true_ids, pred_ids)[0]
  iou = np.zeros(overlaps.shape, np.float64)
  iou[overlaps.rows, overlaps.cols] = overlaps.iou
  return iou


def _assign(rows: np.ndarray, cols: np.ndarray, iou: np.ndarray,
            threshold: float) -> np.ndarray:
  """Which of the candidate pairs (all with IoU > threshold) are matched."""
  if threshold >= 0.5 or not len(rows):
    return np.ones(len(rows), bool)
  row_ids, r = np.unique(rows, return_inverse=True)
  col_ids, c = np.unique(cols, return_inverse=True)
  sub = np.zeros((len(row_ids), len(col_ids)))
  sub[r, c] = iou
  # Most pairs first; the IoU term sums to < 1/2 so it only breaks ties.
  cost = -(sub > 0).astype(np.float64) - sub / (2.0 * max(sub.shape))
  from scipy import optimize  # pylint: disable=g-import-not-at-top
  best_r, best_c = optimize.linear_sum_assignment(cost)
  chosen = np.zeros(sub.shape, bool)
  chosen[best_r, best_c] = sub[best_r, best_c] > 0
  return chosen[r, c]


def matched_pairs(iou: np.ndarray, threshold: float
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Rows and columns of the one-to-one matching at IoU > threshold."""
  iou = np.asarray(iou, np.float64)
  rows, cols = np.nonzero(iou > threshold)
  keep = _assign(rows, cols, iou[rows, cols], threshold)
  return rows[keep], cols[keep]


def match(iou: np.ndarray, threshold: float) -> tuple[int, int, int]:
  """(TP, FP, FN) of the one-to-one matching at IoU > threshold."""
  iou = np.asarray(iou)
  if iou.ndim != 2:
    raise DataError(f"IoU matrix: expected [n_true, n_pred], got shape "
                    f"{iou.shape}")
  tp = len(matched_pairs(iou, threshold)[0])
  return tp, iou.shape[1] - tp, iou.shape[0] - tp


def _matched_iou(overlaps: Overlaps, threshold: float) -> np.ndarray:
  """IoUs of the pairs matched at `threshold` (sparse `match`)."""
  candidate = overlaps.iou > threshold
  iou = overlaps.iou[candidate]
  keep = _assign(overlaps.rows[candidate], overlaps.cols[candidate], iou,
                 threshold)
  return iou[keep]


def _ratio(numerator: float, denominator: float) -> float:
  """numerator / denominator, 1.0 for 0 / 0 (nothing to get wrong)."""
  return float(numerator / denominator) if denominator else 1.0


def object_dice(overlaps: Overlaps) -> float:
  """GlaS object-level Dice (module doc)."""
  n_true, n_pred = overlaps.shape
  if n_true == 0 and n_pred == 0:
    return 1.0
  if n_true == 0 or n_pred == 0:
    return 0.0

  def side(transpose, sizes, other_sizes):
    partner, shared = overlaps.partners(transpose)
    partner_sizes = np.where(partner >= 0, other_sizes[partner], 0)
    dice = 2.0 * shared / (sizes + partner_sizes)
    return float(np.sum(sizes / sizes.sum() * dice))

  return 0.5 * (side(False, overlaps.true_sizes, overlaps.pred_sizes)
                + side(True, overlaps.pred_sizes, overlaps.true_sizes))


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
  overlaps, true_dense, pred_dense = _overlaps(true_ids, pred_ids)
  n_true, n_pred = overlaps.shape
  tp = np.array([len(_matched_iou(overlaps, t)) for t in thresholds],
                np.int64)
  fp, fn = n_pred - tp, n_true - tp
  ap = np.array([_ratio(a, a + b + c) for a, b, c in zip(tp, fp, fn)])
  matched = _matched_iou(overlaps, 0.5)
  tp50 = len(matched)
  fp50, fn50 = n_pred - tp50, n_true - tp50
  matched_iou_sum = float(matched.sum())
  intersection = int(overlaps.inter.sum())
  pixel_true = int(overlaps.true_sizes.sum())
  pixel_pred = int(overlaps.pred_sizes.sum())
  return {
      "thresholds": thresholds,
      "tp": tp, "fp": fp, "fn": fn, "ap": ap,
      "challenge_score": float(ap.mean()),
      "ap50": _ratio(tp50, tp50 + fp50 + fn50),
      "f1_50": _ratio(2 * tp50, 2 * tp50 + fp50 + fn50),
      "tp50": tp50, "fp50": fp50, "fn50": fn50,
      "mean_matched_iou": (matched_iou_sum / tp50 if tp50 else float("nan")),
      "matched_iou_sum": matched_iou_sum, "num_matched": tp50,
      "object_dice": object_dice(overlaps),
      "object_hausdorff": instance_hausdorff.object_hausdorff(
          true_dense, pred_dense, overlaps.partners()[0],
          overlaps.partners(transpose=True)[0]),
      "pixel_dice": _ratio(2 * intersection, pixel_true + pixel_pred),
      "pixel_intersection": intersection,
      "pixel_true": pixel_true, "pixel_pred": pixel_pred,
      "num_true": n_true, "num_pred": n_pred,
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
