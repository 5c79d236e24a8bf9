"""Dice, IoU and accuracy against values worked out by hand."""
import jax.numpy as jnp
import numpy as np
import pytest

from unetjax.data import DataInfo
from unetjax.tasks.segmentation import (
  BinarySegmentation,
  overlap_outputs,
  soft_dice_loss,
)

INFO = DataInfo("toy", num_classes=2, in_channels=1,
                class_names=("background", "foreground"))


def _metrics(pred, truth, mask=None):
  """Logits +-10 from a boolean prediction, run through the task."""
  task = BinarySegmentation(info=INFO)
  logits = jnp.where(jnp.asarray(pred), 10.0, -10.0)[..., None]
  batch = {"label": jnp.asarray(truth, jnp.int32)}
  if mask is not None:
    batch["mask"] = jnp.asarray(mask, jnp.float32)
  _, outputs = task.loss_and_outputs(logits, batch)
  return task.metrics_class.single_from_model_output(**outputs).compute()


def test_overlap_counts_of_one_image():
  # truth covers 4 pixels, prediction 3, they share 2.
  truth = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], bool)
  pred = np.array([[1, 1, 1], [0, 0, 0], [0, 0, 0]], bool)
  out = overlap_outputs(pred[None], truth[None])
  assert float(out["dice_per_image"][0]) == pytest.approx(2 * 2 / (3 + 4))
  assert float(out["intersection"][0]) == 2
  assert float(out["union"][0]) == 5
  assert float(out["accuracy"][0]) == pytest.approx(6 / 9)


def test_set_dice_pools_pixels_and_per_image_dice_averages():
  # image 0: truth 4 px, pred 4 px, overlap 4 -> Dice 1.
  # image 1: truth 1 px, pred 3 px, overlap 1 -> Dice 2/4 = 0.5.
  truth = np.zeros((2, 4, 4), bool)
  pred = np.zeros((2, 4, 4), bool)
  truth[0, :2, :2] = pred[0, :2, :2] = True
  truth[1, 0, 0] = True
  pred[1, 0, :3] = True
  computed = _metrics(pred, truth)
  assert float(computed["dice"]) == pytest.approx(2 * 5 / (7 + 5))
  assert float(computed["dice_per_image"]) == pytest.approx(0.75)
  assert float(computed["iou"]) == pytest.approx(5 / 7)
  assert float(computed["accuracy"]) == pytest.approx((16 + 14) / 32)


def test_empty_truth_and_prediction_score_one_and_false_alarm_zero():
  truth = np.zeros((2, 3, 3), bool)
  pred = np.zeros((2, 3, 3), bool)
  pred[1, 1, 1] = True  # a false alarm on an empty image
  computed = _metrics(pred, truth)
  assert float(computed["dice_per_image"]) == pytest.approx(0.5)
  assert float(computed["dice"]) == pytest.approx(0.0)
  only_empty = _metrics(pred[:1], truth[:1])
  assert float(only_empty["dice"]) == 1.0
  assert float(only_empty["iou"]) == 1.0


def test_padding_examples_do_not_count():
  truth = np.ones((3, 2, 2), bool)
  pred = np.ones((3, 2, 2), bool)
  pred[2] = False  # wrong, but it is padding
  computed = _metrics(pred, truth, mask=[1, 1, 0])
  assert float(computed["dice"]) == 1.0
  assert float(computed["accuracy"]) == 1.0
  assert float(computed["loss"]) < 1e-3


def test_soft_dice_loss_is_zero_for_a_perfect_match_and_finite_when_empty():
  truth = jnp.asarray([[[1.0, 0.0], [0.0, 0.0]]])
  assert float(soft_dice_loss(truth, truth)[0]) == pytest.approx(0.0)
  empty = jnp.zeros((1, 2, 2))
  assert float(soft_dice_loss(empty, empty)[0]) == pytest.approx(0.0)
  # probs 0.5 everywhere vs one true pixel: 1 - (2*0.5 + 1) / (2 + 1 + 1).
  half = jnp.full((1, 2, 2), 0.5)
  assert float(soft_dice_loss(half, truth)[0]) == pytest.approx(0.5)


def test_binary_task_refuses_a_multiclass_dataset():
  from unetjax.runtime.errors import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="2 classes"):
    BinarySegmentation(info=DataInfo("x", 3, 1, ("a", "b", "c")))
