"""Star-convex objects: distances, NMS, the round trip, the task's target."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unetjax.data import DataInfo, Split
from unetjax.instances import metrics, star
from unetjax.runtime.errors import ConfigError
from unetjax.tasks.instances import InstanceSegmentation

INFO = DataInfo("x", 2, 1, ("background", "nucleus"), instances=True)
DIAGONAL = 4 + 0.5 / np.sqrt(0.5)  # ray lands outside at step 5: 4 + 0.707


def _disc(shape, centre, radius, value=1, ids=None):
  ids = np.zeros(shape, np.int32) if ids is None else ids
  yy, xx = np.mgrid[:shape[0], :shape[1]]
  ids[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2] = value
  return ids


def test_distances_of_a_disc_by_hand():
  # radius 5 around (10, 10): along an axis 5 pixels inside, then the edge
  # of the last at 5.5; along a diagonal step t lands on (round(.707 t),
  # ...): (3, 3) is inside at t = 4 (18 <= 25), (4, 4) outside at t = 5
  # (32 > 25), so 4 + 0.5 / 0.707.
  dist = star.star_distances(_disc((21, 21), (10, 10), 5), n_rays=8)
  np.testing.assert_allclose(dist[10, 10], [5.5, DIAGONAL] * 4, rtol=1e-6)
  # one pixel right of the centre: 4.5 to the right, 6.5 to the left, and
  # up or down only 4 pixels inside (column 11: 4^2 + 1 <= 25 < 5^2 + 1)
  np.testing.assert_allclose(dist[10, 11, [0, 2, 4, 6]],
                             [4.5, 4.5, 6.5, 4.5], rtol=1e-6)
  assert (dist[0, 0] == 0).all()  # background


def test_distances_of_a_square_by_hand_rays_follow_stardist_order():
  ids = np.zeros((12, 12), np.int32)
  ids[2:8, 3:9] = 1  # rows 2..7, columns 3..8
  dist = star.star_distances(ids, n_rays=4)
  # from (4, 5): ray 0 right (columns 6, 7, 8 inside), ray 1 down (rows 5,
  # 6, 7), ray 2 left (4, 3), ray 3 up (3, 2); each + 0.5 to the edge
  np.testing.assert_allclose(dist[4, 5], [3.5, 3.5, 2.5, 2.5])
  # the image edge is a boundary too: a square at the corner
  ids = np.zeros((6, 6), np.int32)
  ids[:3, :3] = 4
  np.testing.assert_allclose(star.star_distances(ids, 4)[0, 0],
                             [2.5, 2.5, 0.5, 0.5])


def test_sampled_points_give_the_distances_of_the_whole_map():
  ids = _disc((40, 40), (12, 14), 9)
  ids = _disc((40, 40), (26, 24), 7, value=2, ids=ids)
  full = star.star_distances(ids, 16)
  points, used = jax.jit(star.sample_points, static_argnums=1)(
      jnp.asarray(ids[None] > 0), 100)
  assert used.sum() == 100  # more object pixels than that
  points = np.asarray(points[0])
  assert len({tuple(p) for p in points}) == 100
  assert (ids[points[:, 0], points[:, 1]] > 0).all()
  dist = star.distances(ids[None], points[None], 16)[0]
  np.testing.assert_allclose(dist, full[points[:, 0], points[:, 1]])
  # fewer object pixels than asked: all of them, the rest marked unused
  _, used = star.sample_points(jnp.asarray(ids[None] == 2), 400)
  assert used.sum() == (ids == 2).sum() < 400


def test_nms_keeps_the_more_probable_of_two_overlapping_candidates():
  dist = np.full((3, 8), 5.0, np.float32)
  points = np.array([[10, 10], [10, 11], [10, 30]])  # 0, 1 overlap
  prob = np.array([0.6, 0.9, 0.7])
  kept = star.non_maximum_suppression(dist, prob, points, (40, 40),
                                      iou_threshold=0.4)
  np.testing.assert_array_equal(kept, [1, 2])  # by probability, 0 dropped
  prob = np.array([0.9, 0.6, 0.7])
  kept = star.non_maximum_suppression(dist, prob, points, (40, 40))
  np.testing.assert_array_equal(kept, [0, 2])
  # a threshold above their IoU keeps both
  kept = star.non_maximum_suppression(dist, prob, points, (40, 40),
                                      iou_threshold=0.95)
  np.testing.assert_array_equal(kept, [0, 2, 1])


def test_round_trip_of_touching_discs():
  ids = _disc((48, 64), (20, 20), 10)
  ids = _disc((48, 64), (22, 39), 9, value=2, ids=ids)  # touches 1
  ids = _disc((48, 64), (36, 50), 6, value=3, ids=ids)  # touches 2
  assert (ids[:, 29] > 0).any() and (ids[:, 30] == 2).any()
  prob = star.object_probability(ids)
  assert prob[20, 20] == pytest.approx(1.0) and prob[0, 0] == 0
  assert 0 < prob[20, 11] < 0.2  # next to the edge
  objects = star.to_instances(prob, star.star_distances(ids, 32),
                              prob_threshold=0.5, nms_threshold=0.4)
  scores = metrics.image_scores(ids, objects)
  assert scores["num_pred"] == 3 and scores["num_true"] == 3
  iou = metrics.iou_matrix(ids, objects)
  assert iou.max(axis=1).min() > 0.85


def test_star_task_target_loss_and_objects():
  with pytest.raises(ConfigError, match="objects='polygons'"):
    InstanceSegmentation(info=INFO, target="star")
  with pytest.raises(ConfigError, match="multiple of 4"):
    InstanceSegmentation(info=INFO, target="star", objects="polygons",
                         n_rays=6)
  task = InstanceSegmentation(info=INFO, target="star", objects="polygons",
                              n_rays=8, star_samples=500)
  assert task.num_outputs == 9 and not task.dihedral_invariant
  ids = _disc((32, 32), (12, 12), 6)[None]
  split = task.prepare(Split(np.zeros(ids.shape + (1,), np.float32), ids,
                             ("a",), None), "train")
  np.testing.assert_array_equal(split.labels, ids > 0)
  np.testing.assert_array_equal(split.maps["instances"], ids)
  batch = {"image": split.images, "label": split.labels,
           **split.maps}
  dist = star.star_distances(ids[0], 8)
  prob = split.maps["star_prob"][0].astype(np.float32)  # stored as float16
  logit = np.log(np.clip(prob, 1e-6, 1 - 1e-6) / np.clip(1 - prob, 1e-6, 1))
  perfect = np.concatenate([logit[..., None], dist], -1)[None]
  loss_right, _ = task.loss_and_outputs(jnp.asarray(perfect), batch)
  wrong = perfect.copy()
  wrong[..., 1:] += 2.0 * (ids[0] > 0)[..., None]  # 2 px too far
  loss_wrong, _ = task.loss_and_outputs(jnp.asarray(wrong), batch)
  # the distance term: 0.2 * mean over pixels of prob * |error| = 2
  expected = 0.2 * 2.0 * prob.sum() / prob.size
  assert float(loss_wrong - loss_right) == pytest.approx(expected, rel=1e-3)
  prediction = np.asarray(task.predict(jnp.asarray(perfect)))[0]
  assert prediction.shape == (32, 32, 9)
  np.testing.assert_allclose(task.pixel_prediction(prediction),
                             np.clip(prob, 1e-6, 1 - 1e-6), atol=1e-5)
  objects = task.to_instances(prediction)
  assert metrics.iou_matrix(ids[0], objects).max() > 0.85  # an octagon


def test_distance_scale_multiplies_the_distance_outputs():
  task = InstanceSegmentation(info=INFO, target="star", objects="polygons",
                              n_rays=4, star_distance_scale=8.0)
  logits = np.zeros((1, 2, 2, 5), np.float32)
  logits[..., 1:] = [1.0, 0.5, -1.0, 2.0]
  prediction = np.asarray(task.predict(jnp.asarray(logits)))
  np.testing.assert_allclose(prediction[0, 0, 0], [0.5, 8.0, 4.0, 0.0, 16.0])
  with pytest.raises(ConfigError, match="star_distance_scale=0"):
    InstanceSegmentation(info=INFO, target="star", objects="polygons",
                         star_distance_scale=0)
