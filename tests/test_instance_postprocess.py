"""Objects from pixel predictions: components, three classes, watershed."""
import glob
import os

import numpy as np
import pytest
from PIL import Image

from unetjax.instances import metrics as instance_metrics
from unetjax.instances import postprocess as instance_postprocess
from unetjax.instances import targets as instance_targets
from unetjax.runtime.errors import ConfigError, DataError


def test_components_min_size_and_sequential_ids():
  mask = np.zeros((10, 10), bool)
  mask[1:4, 1:4] = True   # 9 px
  mask[7, 7:9] = True     # 2 px: removed at min_size 3
  mask[6:9, 1:3] = True   # 6 px
  ids = instance_postprocess.components(mask, min_size=3)
  assert ids.dtype == np.int32
  assert sorted(np.unique(ids)) == [0, 1, 2]
  assert (ids == 1).sum() == 9 and (ids == 2).sum() == 6
  assert (ids[7, 7:9] == 0).all()
  assert instance_postprocess.components(mask).max() == 3


def test_components_connectivity():
  mask = np.zeros((4, 4), bool)
  mask[0:2, 0:2] = mask[2:4, 2:4] = True  # touching at one corner only
  assert instance_postprocess.components(mask).max() == 2
  assert instance_postprocess.components(mask, connectivity=2).max() == 1
  with pytest.raises(ConfigError, match="connectivity"):
    instance_postprocess.components(mask, connectivity=3)
  with pytest.raises(ConfigError, match="min_size"):
    instance_postprocess.components(mask, min_size=-1)
  with pytest.raises(DataError, match="threshold probabilities first"):
    instance_postprocess.components(np.full((4, 4), 0.3))


def touching_squares():
  instances = np.zeros((12, 16), np.int32)
  instances[2:8, 2:8] = 1
  instances[3:10, 8:13] = 2
  return instances


def test_from_three_class_recovers_touching_squares_in_full():
  truth = touching_squares()
  classes = instance_targets.three_class(truth)
  assert instance_postprocess.components(classes > 0).max() == 1  # merged
  np.testing.assert_array_equal(
      instance_postprocess.from_three_class(classes), truth)


def test_from_three_class_accepts_probabilities():
  truth = touching_squares()
  classes = instance_targets.three_class(truth)
  rng = np.random.default_rng(0)
  probs = np.eye(3)[classes] * 0.7 + rng.uniform(0, 0.3, classes.shape + (3,))
  np.testing.assert_array_equal(
      instance_postprocess.from_three_class(probs), truth)


def test_from_three_class_drops_boundary_only_blobs_and_small_objects():
  classes = np.zeros((10, 10), np.int32)
  classes[1:4, 1:4] = 2
  classes[2, 2] = 1       # a 9-pixel object
  classes[7:9, 7:9] = 2   # boundary with no interior: lost
  ids = instance_postprocess.from_three_class(classes)
  assert ids.max() == 1 and (ids == 1).sum() == 9
  assert instance_postprocess.from_three_class(classes, min_size=10).max() == 0


def test_from_three_class_rejects_bad_input():
  with pytest.raises(DataError, match="class ids must be"):
    instance_postprocess.from_three_class(np.full((4, 4), 3))
  with pytest.raises(DataError, match=r"\[H, W, 3\]"):
    instance_postprocess.from_three_class(np.zeros((4, 4, 4)))


def touching_discs():
  yy, xx = np.mgrid[:40, :48]
  first = (yy - 20) ** 2 + (xx - 16) ** 2 <= 8 ** 2
  second = (yy - 20) ** 2 + (xx - 30) ** 2 <= 8 ** 2
  truth = np.zeros((40, 48), np.int32)
  truth[first] = 1
  truth[second & (xx >= 23)] = 2  # the neck split half way between centres
  truth[first & ~second] = 1
  return truth


def test_watershed_splits_touching_discs_that_components_keep_joined():
  truth = touching_discs()
  prob = np.where(truth > 0, 0.9, 0.1)
  assert instance_postprocess.components(prob > 0.5).max() == 1
  ids = instance_postprocess.watershed(prob)
  assert ids.max() == 2
  iou = instance_metrics.iou_matrix(truth, ids)
  assert np.sort(iou.max(axis=1)).min() > 0.9
  assert (ids > 0).sum() == (truth > 0).sum()


def test_watershed_with_given_markers_keeps_unmarked_objects():
  truth = touching_discs()
  truth[2:5, 2:5] = 3                  # a small square without a marker
  markers = np.zeros_like(truth)
  markers[20, 16] = 5
  markers[20, 30] = 9
  ids = instance_postprocess.watershed((truth > 0).astype(np.float32),
                                       markers=markers)
  assert ids.max() == 3
  assert (ids[2:5, 2:5] == ids[2, 2]).all() and ids[2, 2] > 0
  assert ids[20, 16] != ids[20, 30]
  assert instance_postprocess.watershed(
      (truth > 0).astype(np.float32), markers=markers, min_size=10).max() == 2
  rounded = np.where(truth > 0, 1 + 1e-6, -1e-7).astype(np.float32)
  assert instance_postprocess.watershed(rounded).max() == 3
  with pytest.raises(DataError, match=r"values in \[0, 1\]"):
    instance_postprocess.watershed(truth.astype(np.float32) * 2)
  with pytest.raises(DataError, match="markers"):
    instance_postprocess.watershed((truth > 0).astype(np.float32),
                                   markers=markers[:5])


DSB_DIR = os.path.join(os.environ.get("UNETJAX_DSB2018_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
    "shared", "data", "dsb2018")), "stage1_train")
# A 256x256 fluorescence image with 101 nuclei, many of them touching.
DSB_IMAGE = "c53326fe49fc26b7fe602b9d8c0c2da2cb157690b44c2b9351a93f8d9bd8043d"


def dsb_instances(image_id):
  folder = os.path.join(DSB_DIR, image_id)
  if not os.path.isdir(folder):
    pytest.skip(f"no {folder}: the dsb2018 data set is absent")
  paths = sorted(glob.glob(os.path.join(folder, "masks", "*.png")))
  instances = None
  for k, path in enumerate(paths, start=1):
    mask = np.asarray(Image.open(path)) > 0
    if instances is None:
      instances = np.zeros(mask.shape, np.int32)
    instances[mask] = k
  return instances, len(paths)


def test_real_nuclei_round_trip_through_three_classes():
  instances, count = dsb_instances(DSB_IMAGE)
  assert int(instances.max()) == count == 101
  own = instance_metrics.image_scores(instances, instances)
  assert own["challenge_score"] == own["ap50"] == own["object_dice"] == 1.0
  assert own["object_hausdorff"] == 0.0 and own["tp50"] == count
  recovered = instance_postprocess.from_three_class(
      instance_targets.three_class(instances))
  scores = instance_metrics.image_scores(instances, recovered)
  # Every nucleus comes back; an irregular one whose interior falls into two
  # pieces leaves a small extra fragment.
  assert scores["tp50"] == count and scores["fn50"] == 0
  assert scores["fp50"] <= 3
  assert scores["challenge_score"] > 0.9
