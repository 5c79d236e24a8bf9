"""Instance metrics against hand-computed values and a brute-force reference."""
import numpy as np
import pytest
from scipy import optimize
from scipy.spatial.distance import directed_hausdorff

from unetjax.instances import metrics as instance_metrics
from unetjax.runtime.errors import ConfigError, DataError


def squares_merged():
  """Truth: a 4x4 square A (16 px) touching a 4x2 B (8 px); one prediction."""
  truth = np.zeros((6, 10), np.int32)
  truth[0:4, 0:4] = 1
  truth[0:4, 4:6] = 2
  pred = np.zeros((6, 10), np.int32)
  pred[0:4, 0:6] = 7
  return truth, pred


def test_touching_squares_predicted_as_one_object_by_hand():
  truth, pred = squares_merged()
  s = instance_metrics.image_scores(truth, pred)
  # IoU(A, P) = 16 / 24, IoU(B, P) = 8 / 24.
  np.testing.assert_allclose(instance_metrics.iou_matrix(truth, pred),
                             [[2 / 3], [1 / 3]])
  # IoU 2/3 > t for t = 0.50 .. 0.65: A matched, B missed; above: nothing.
  np.testing.assert_array_equal(s["tp"], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(s["fp"], [0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
  np.testing.assert_array_equal(s["fn"], [1, 1, 1, 1, 2, 2, 2, 2, 2, 2])
  np.testing.assert_allclose(s["ap"], [0.5] * 4 + [0.0] * 6)
  assert s["challenge_score"] == pytest.approx(4 * 0.5 / 10)
  assert s["ap50"] == pytest.approx(1 / 2)
  assert s["f1_50"] == pytest.approx(2 / 3)
  assert s["mean_matched_iou"] == pytest.approx(2 / 3)
  # Object Dice: P's partner is A, Dice 2*16/40 = 0.8; truth side A 0.8
  # (weight 16/24), B paired with P too, 2*8/32 = 0.5 (weight 8/24).
  assert s["object_dice"] == pytest.approx(0.5 * (0.8 + (0.8 * 2 + 0.5) / 3))
  # Hausdorff: H(A, P) = 2 (P's column 5 to A's column 3), H(B, P) = 4.
  assert s["object_hausdorff"] == pytest.approx(0.5 * (2 + (2 * 2 + 4) / 3))
  assert s["pixel_dice"] == 1.0
  assert (s["num_true"], s["num_pred"]) == (2, 1)


def test_non_overlapping_objects_are_paired_by_hausdorff_distance():
  truth = np.zeros((8, 24), np.int32)
  truth[0:2, 0:2] = 3
  pred = np.zeros((8, 24), np.int32)
  pred[0:2, 5:7] = 1     # 5 px right of A: H(A, P) = 5
  pred[6:8, 20:22] = 2   # far: H(A, Q) = sqrt(6^2 + 20^2)
  s = instance_metrics.image_scores(truth, pred)
  far = np.hypot(6, 20)
  assert s["object_hausdorff"] == pytest.approx(0.5 * (5 + (5 + far) / 2))
  assert s["object_dice"] == 0.0
  assert s["challenge_score"] == 0.0
  assert (s["tp50"], s["fp50"], s["fn50"]) == (0, 2, 1)


def test_empty_prediction_empty_truth_and_both_empty():
  truth, _ = squares_merged()
  empty = np.zeros_like(truth)
  for t, p in ((truth, empty), (empty, truth)):
    s = instance_metrics.image_scores(t, p)
    assert s["challenge_score"] == s["ap50"] == s["f1_50"] == 0.0
    assert s["object_dice"] == s["pixel_dice"] == 0.0
    assert s["object_hausdorff"] == np.inf
    assert np.isnan(s["mean_matched_iou"])
  assert instance_metrics.image_scores(truth, empty)["fn50"] == 2
  assert instance_metrics.image_scores(empty, truth)["fp50"] == 2
  s = instance_metrics.image_scores(empty, empty)
  assert s["challenge_score"] == s["ap50"] == s["f1_50"] == 1.0
  assert s["object_dice"] == s["pixel_dice"] == 1.0
  assert s["object_hausdorff"] == 0.0


def test_iou_matrix_orders_objects_by_id():
  truth = np.array([[9, 9, 0, 5]])
  pred = np.array([[1, 1, 1, 0]])
  np.testing.assert_allclose(instance_metrics.iou_matrix(truth, pred),
                             [[0.0], [2 / 3]])


def test_match_below_one_half_is_an_optimal_one_to_one_assignment():
  iou = np.array([[0.4, 0.3], [0.35, 0.0]])
  assert instance_metrics.match(iou, 0.2) == (2, 0, 0)  # greedy finds 1
  assert instance_metrics.match(iou, 0.32) == (1, 1, 1)
  assert instance_metrics.match(np.zeros((3, 0)), 0.5) == (0, 0, 3)


def random_instances(rng, shape=(24, 24), count=6, side=8):
  ids = np.zeros(shape, np.int32)
  for _ in range(count):
    y, x = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
    h, w = rng.integers(2, side, 2)
    ids[y:y + h, x:x + w] = rng.integers(1, 40)
  return ids


def reference_glas(truth, pred):
  """Brute-force transcription of the GlaS ObjectDice / ObjectHausdorff."""
  t_ids = [k for k in np.unique(truth) if k]
  p_ids = [k for k in np.unique(pred) if k]
  if not t_ids and not p_ids:
    return 1.0, 0.0
  if not t_ids or not p_ids:
    return 0.0, np.inf

  def hausdorff(a, b):
    a, b = np.argwhere(a), np.argwhere(b)
    return max(directed_hausdorff(a, b)[0], directed_hausdorff(b, a)[0])

  def side(objects, ids, other, other_ids):
    total = sum((objects == k).sum() for k in ids)
    dice = dist = 0.0
    for k in ids:
      mine = objects == k
      overlap = other[mine]
      overlap = overlap[overlap > 0]
      weight = mine.sum() / total
      if overlap.size:
        counts = np.bincount(overlap)
        partner = other == np.argmax(counts)  # MATLAB mode: smallest tie
        dice += weight * 2 * (mine & partner).sum() / (mine.sum()
                                                       + partner.sum())
      else:
        distances = [hausdorff(mine, other == j) for j in other_ids]
        partner = other == other_ids[int(np.argmin(distances))]
      dist += weight * hausdorff(mine, partner)
    return dice, dist

  d1, h1 = side(pred, p_ids, truth, t_ids)
  d2, h2 = side(truth, t_ids, pred, p_ids)
  return (d1 + d2) / 2, (h1 + h2) / 2


@pytest.mark.parametrize("seed", range(8))
def test_glas_object_scores_and_matching_match_brute_force(seed):
  rng = np.random.default_rng(seed)
  # Odd seeds: objects of up to 400 px, where only some pixels are queried.
  size = dict(shape=(48, 48), side=21) if seed % 2 else {}
  truth, pred = random_instances(rng, **size), random_instances(rng, **size)
  s = instance_metrics.image_scores(truth, pred)
  dice, hausdorff = reference_glas(truth, pred)
  assert s["object_dice"] == pytest.approx(dice)
  assert s["object_hausdorff"] == pytest.approx(hausdorff)
  iou = instance_metrics.iou_matrix(truth, pred)
  for t in (0.1, 0.3, 0.5, 0.7):
    r, c = optimize.linear_sum_assignment(-(iou > t).astype(float))
    tp = int((iou[r, c] > t).sum())
    assert instance_metrics.match(iou, t) == (tp, iou.shape[1] - tp,
                                              iou.shape[0] - tp)


def test_split_scores_pool_counts_and_average_images():
  truth, pred = squares_merged()
  merged = instance_metrics.image_scores(truth, pred)
  perfect = instance_metrics.image_scores(truth, truth)
  empty = instance_metrics.image_scores(truth, np.zeros_like(truth))
  split = instance_metrics.split_scores([merged, perfect, empty])
  assert split["challenge_score"] == pytest.approx((0.2 + 1 + 0) / 3)
  assert split["ap50"] == pytest.approx((0.5 + 1 + 0) / 3)
  assert split["ap75"] == pytest.approx((0 + 1 + 0) / 3)
  # At 0.5: TP 1 + 2 + 0, FP 0, FN 1 + 0 + 2.
  assert split["f1_50"] == pytest.approx(2 * 3 / (2 * 3 + 0 + 3))
  assert split["precision_50"] == 1.0
  assert split["recall_50"] == pytest.approx(3 / 6)
  assert split["mean_matched_iou"] == pytest.approx((2 / 3 + 1 + 1) / 3)
  assert split["object_dice"] == pytest.approx((0.75 + 1 + 0) / 3)
  assert split["object_hausdorff"] == np.inf
  assert split["pixel_dice"] == pytest.approx(2 * 48 / (72 + 48))
  assert split["num_true"] == 6 and split["num_pred"] == 3
  with pytest.raises(DataError, match="no images"):
    instance_metrics.split_scores([])


def test_bad_inputs_are_one_line_errors():
  truth, pred = squares_merged()
  with pytest.raises(DataError, match="differ in shape"):
    instance_metrics.image_scores(truth, pred[:5])
  with pytest.raises(DataError, match="predicted instance map"):
    instance_metrics.image_scores(truth, pred.astype(np.float32))
  with pytest.raises(DataError, match=">= 0"):
    instance_metrics.image_scores(-truth, pred)
  with pytest.raises(ConfigError, match="thresholds"):
    instance_metrics.image_scores(truth, pred, thresholds=[0.5, 1.0])


def test_many_specks_use_the_sparse_table_and_score_by_hand():
  # 100 true 2x2 blocks; 400 one-pixel predictions (n_true * n_pred = 40,000
  # pairs, over the dense table's limit for 400 pixels).
  truth = np.kron(np.arange(1, 101).reshape(10, 10), np.ones((2, 2), int))
  pred = np.arange(1, 401).reshape(20, 20)
  s = instance_metrics.image_scores(truth, pred, thresholds=[0.2, 0.5])
  np.testing.assert_array_equal(s["tp"], [100, 0])  # IoU 1/4 per pixel
  assert (s["fp50"], s["fn50"]) == (400, 100)
  # Every object's partner shares 1 pixel: Dice 2 * 1 / (4 + 1) both ways.
  assert s["object_dice"] == pytest.approx(0.4)
  # A block and any one of its pixels: the farthest pixel is a diagonal away.
  assert s["object_hausdorff"] == pytest.approx(np.sqrt(2))
  assert s["pixel_dice"] == 1.0
  iou = instance_metrics.iou_matrix(truth, pred)
  assert iou.shape == (100, 400) and np.count_nonzero(iou) == 400
