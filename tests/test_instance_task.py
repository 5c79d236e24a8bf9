"""The instance task: targets from instance ids, objects scored as objects."""
import os

import numpy as np
import pytest

from unetjax.data import DataInfo, Split
from unetjax.runtime.errors import ConfigError
from unetjax.tasks.instances import InstanceSegmentation

INFO = DataInfo("x", 2, 1, ("background", "nucleus"), instances=True)


def _touching_squares():
  """Two 6x6 squares side by side (ids 1 and 2) and a lone one (id 7)."""
  ids = np.zeros((20, 24), np.int32)
  ids[2:8, 2:8] = 1
  ids[2:8, 8:14] = 2
  ids[12:18, 16:22] = 7
  return ids


def _split(ids, sizes=None):
  return Split(np.zeros(ids.shape + (1,), np.float32), ids,
               tuple(f"e{i}" for i in range(len(ids))), sizes)


def test_class_ids_are_refused_for_an_instance_task():
  with pytest.raises(ConfigError, match="needs instance labels"):
    InstanceSegmentation(info=DataInfo("cells", 2, 1, ("bg", "fg")))


@pytest.mark.parametrize("kwargs, match", [
    (dict(target="mask"), "task.target='mask'"),
    (dict(objects="blobs"), "task.objects='blobs'"),
    (dict(class_weights=(1.0, 2.0)), "expected 3 weights"),
    (dict(target="binary", class_weights=(1.0, 0.0)), "expected 2 weights"),
    (dict(sigma=0.0), "sigma > 0"),
    (dict(threshold=1.0), "0 < threshold < 1"),
])
def test_bad_options_are_one_line_config_errors(kwargs, match):
  with pytest.raises(ConfigError, match=match):
    InstanceSegmentation(info=INFO, **kwargs)


def test_three_class_targets_separate_touching_objects():
  task = InstanceSegmentation(info=INFO, target="three_class")
  ids = _touching_squares()[None]
  train = task.prepare(_split(ids), "train")
  labels = train.labels[0]
  assert set(np.unique(labels)) == {0, 1, 2}
  assert (labels[ids[0] == 0] == 0).all()
  # the two touching squares meet at columns 7 | 8: boundary on both sides
  assert (labels[2:8, 7] == 2).all() and (labels[2:8, 8] == 2).all()
  assert labels[4, 4] == 1 and labels[4, 11] == 1
  assert "instances" not in train.maps  # training needs no ids
  val = task.prepare(_split(ids), "val")
  np.testing.assert_array_equal(val.maps["instances"], ids)


def test_weight_map_target_carries_its_weights_and_binary_labels():
  task = InstanceSegmentation(info=INFO, target="weight_map", w0=10.0,
                              sigma=5.0)
  ids = _touching_squares()[None]
  split = task.prepare(_split(ids), "train")
  expected = (ids > 0).astype(np.int32)
  expected[0, 2:8, 8] = 0  # a seam where square 2 touches square 1
  np.testing.assert_array_equal(split.labels, expected)
  weights = split.maps["weight"][0]
  # the seam's background, between two objects 1 px apart, weighs about
  # w_c + w0 exp(-(1 + 1)^2 / 50); far background only w_c
  assert weights[4, 8] > weights[10, 14] > weights[19, 0] > 0
  assert weights[4, 8] - weights[19, 0] == pytest.approx(
      10 * np.exp(-4 / 50), rel=1e-3)


def test_padded_examples_get_targets_from_their_true_size_only():
  task = InstanceSegmentation(info=INFO, target="weight_map")
  ids = np.zeros((2, 20, 24), np.int32)
  ids[0] = _touching_squares()
  ids[1, :10, :12] = _touching_squares()[:10, :12]
  split = task.prepare(_split(ids, np.array([[20, 24], [10, 12]])), "val")
  assert (split.maps["weight"][1, 10:] == 0).all()
  alone = task.prepare(_split(ids[1:2, :10, :12]), "val")
  np.testing.assert_allclose(split.maps["weight"][1, :10, :12],
                             alone.maps["weight"][0], rtol=1e-6)


def _perfect_probabilities(task, ids):
  classes = task.prepare(_split(ids[None]), "val").labels[0]
  if task.target == "three_class":
    return np.eye(3, dtype=np.float32)[classes]
  return classes.astype(np.float32)


@pytest.mark.parametrize("target, objects, expected", [
    ("three_class", "components", 1.0),
    ("three_class", "watershed", 1.0),
    # a pixel mask joins the touching squares: 1 of 3 objects right at
    # every threshold (TP 1, FP 1, FN 2 -> 1/4)
    ("binary", "components", 0.25),
])
def test_object_scores_of_a_perfect_pixel_prediction(target, objects,
                                                     expected):
  task = InstanceSegmentation(info=INFO, target=target, objects=objects)
  ids = _touching_squares()
  batch = {"instances": ids[None], "mask": np.ones(1)}
  rows = task.object_scores(batch, _perfect_probabilities(task, ids)[None])
  assert len(rows) == 1
  assert rows[0]["challenge_score"] == pytest.approx(expected)
  assert rows[0]["num_true"] == 3


def test_object_scores_skip_eval_padding_and_cut_padded_pixels():
  task = InstanceSegmentation(info=INFO, target="three_class")
  ids = _touching_squares()
  probs = _perfect_probabilities(task, ids)
  padded_ids = np.zeros((2, 32, 32), np.int32)
  padded_ids[0, :20, :24] = ids
  padded = np.zeros((2, 32, 32, 3), np.float32)
  padded[..., 1] = 1.0  # padding predicted as interior everywhere
  padded[0, :20, :24] = probs
  valid = np.zeros((2, 32, 32), np.uint8)
  valid[0, :20, :24] = 1
  batch = {"instances": padded_ids, "valid": valid,
           "mask": np.array([1.0, 0.0])}
  rows = task.object_scores(batch, padded)
  assert len(rows) == 1 and rows[0]["challenge_score"] == pytest.approx(1.0)


def _write_kaggle_layout(root, count=8, size=32, seed=0):
  """`count` images of 2-4 bright squares, two of them touching, each
  square its own mask file, in the Kaggle DSB layout."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  for n in range(count):
    folder = root / f"img{n:02d}"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    ids = np.zeros((size, size), np.int32)
    top, left = rng.integers(2, 10, 2)
    ids[top:top + 8, left:left + 8] = 1
    ids[top:top + 8, left + 8:left + 16] = 2
    ids[20:28, 4 + n % 4:12 + n % 4] = 3
    image = np.where(ids > 0, 200, 30) + rng.integers(0, 20, ids.shape)
    image[ids == 2] -= 60  # touching objects differ a little in brightness
    Image.fromarray(image.astype(np.uint8)).save(
        folder / "images" / f"img{n:02d}.png")
    for k in np.unique(ids[ids > 0]):
      Image.fromarray(((ids == k) * 255).astype(np.uint8)).save(
          folder / "masks" / f"m{k}.png")


def test_training_on_instances_logs_object_scores_and_evaluate_ranks_them(
    tmp_path, monkeypatch):
  import csv  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top

  from configs import dsb2018  # pylint: disable=g-import-not-at-top
  from unetjax import evaluate  # pylint: disable=g-import-not-at-top
  from unetjax.runtime import history  # pylint: disable=g-import-not-at-top
  from unetjax.training import train  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("UNETJAX_CACHE_DIR", str(tmp_path / "cache"))
  _write_kaggle_layout(tmp_path / "data")
  config = dsb2018.get_config()
  config.data.dir = str(tmp_path / "data")
  config.data.channels = 1
  config.data.val_fraction = 0.25
  config.data.test_fraction = 0.25
  config.model.depth = 2
  config.model.features = 8
  config.augment.crop_size = 0
  config.augment.rot90 = False
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_steps = 40
  config.log_every_steps = 10
  config.eval_every_steps = 20
  config.task.min_size = 0
  config.optimizer.learning_rate = 1e-2
  config.schedule.name = "constant"
  workdir = str(tmp_path / "wd")
  final = train.train_and_evaluate(config, workdir)
  for split in ("val", "test"):
    for key in ("challenge_score", "ap50", "f1_50", "object_dice",
                "object_hausdorff", "dice"):
      assert key in final[split], (split, key)
  losses = [r["train/loss"] for r in history.read(workdir)
            if "train/loss" in r]
  assert losses[-1] < losses[0]
  assert os.path.exists(os.path.join(workdir, "plots", "samples.png"))
  report = evaluate.evaluate_workdir(workdir, checkpoint="latest",
                                     split="val", out=str(tmp_path / "ev"))
  assert report["metrics"]["challenge_score"] == pytest.approx(
      final["val"]["challenge_score"])
  with open(tmp_path / "ev" / f"examples_val_{final['step']}.csv") as f:
    rows = list(csv.DictReader(f))
  scores = [float(r["challenge_score"]) for r in rows]
  assert len(rows) == 2 and scores == sorted(scores)
  assert np.mean(scores) == pytest.approx(final["val"]["challenge_score"])
  assert all(int(float(r["num_true"])) == 3 for r in rows)
  for kind in ("worst", "best"):
    assert os.path.exists(tmp_path / "ev" / f"{kind}_val_{final['step']}" /
                          "samples.png")
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f)["val"]["challenge_score"] == pytest.approx(
        final["val"]["challenge_score"])
  _predict_instances_of_unseen_kaggle_folder(workdir, tmp_path)


def _predict_instances_of_unseen_kaggle_folder(workdir, tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from unetjax.inference import segment  # pylint: disable=g-import-not-at-top
  _write_kaggle_layout(tmp_path / "unseen", count=3, size=40, seed=5)
  out = tmp_path / "objects"
  written = segment.predict_files(
      workdir, str(tmp_path / "unseen" / "*" / "images" / "*.png"),
      str(out), checkpoint="latest", instances=True, overlay=True)
  names = sorted(os.path.basename(p) for p in written)
  assert names == sorted(f"img{n:02d}_{kind}.png" for n in range(3)
                         for kind in ("mask", "overlay", "instances"))
  for n in range(3):
    ids = np.asarray(Image.open(out / f"img{n:02d}_instances.png"))
    assert ids.shape == (40, 40) and ids.dtype == np.uint16
    found = np.unique(ids)
    np.testing.assert_array_equal(found, np.arange(len(found)))  # 0..n
    overlay = np.asarray(Image.open(out / f"img{n:02d}_overlay.png"))
    assert overlay.shape == (40, 40, 3)
