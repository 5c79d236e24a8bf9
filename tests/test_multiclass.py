"""Multi-class segmentation metrics against hand-computed confusion matrices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unetjax.data import DataInfo
from unetjax.runtime.errors import ConfigError
from unetjax.tasks.multiclass import MulticlassSegmentation


def _task(num_classes, **kwargs):
  names = ("pet", "background", "pet border", "unused")[:num_classes]
  info = DataInfo(name="toy", num_classes=num_classes, in_channels=3,
                  class_names=names)
  return MulticlassSegmentation(info=info, **kwargs)


def _batch_metrics(task, truth, predicted, mask):
  """Metrics of one batch whose logits predict `predicted` exactly."""
  logits = 10.0 * jax.nn.one_hot(jnp.array(predicted), task.num_outputs)
  batch = {"label": jnp.array(truth), "mask": jnp.array(mask, jnp.float32)}
  _, outputs = task.loss_and_outputs(logits, batch)
  return task.metrics_class.single_from_model_output(**outputs)


# Two batches of 1x4 images. Class 2 is absent from the first batch; the
# last example of the second batch is eval padding (mask 0) and never counts.
_BATCHES = [
    dict(truth=[[[0, 0, 1, 1]], [[1, 1, 1, 0]]],
         predicted=[[[0, 1, 1, 1]], [[1, 1, 0, 0]]], mask=[1, 1]),
    dict(truth=[[[2, 2, 0, 1]], [[2, 2, 2, 2]]],
         predicted=[[[2, 0, 0, 1]], [[0, 0, 0, 0]]], mask=[1, 0]),
]
# Rows: true class; columns: predicted class, counted by hand.
_CONFUSION = [[3, 1, 0],
              [1, 5, 0],
              [1, 0, 1]]


@pytest.mark.parametrize("num_classes", [3, 4])
def test_iou_from_the_accumulated_confusion_matrix(num_classes):
  task = _task(num_classes)
  metrics = None
  for batch in _BATCHES:
    one = _batch_metrics(task, **batch)
    metrics = one if metrics is None else metrics.merge(one)
  computed = metrics.compute()
  expected = np.zeros((num_classes, num_classes))
  expected[:3, :3] = _CONFUSION
  np.testing.assert_array_equal(computed["confusion_matrix"], expected)
  assert computed["accuracy"] == pytest.approx(9 / 12)
  # IoU = diagonal / (row sum + column sum - diagonal).
  assert computed["iou_pet"] == pytest.approx(3 / (4 + 5 - 3))
  assert computed["iou_background"] == pytest.approx(5 / (6 + 6 - 5))
  assert computed["iou_pet_border"] == pytest.approx(1 / (2 + 1 - 1))
  # The mean over the set is 4/7; the mean of the two batch means would be
  # (7/12 + 2/3) / 2 = 0.625. A class in neither truth nor prediction has
  # no IoU (NaN) and stays out of the mean.
  assert computed["mean_iou"] == pytest.approx(4 / 7)
  if num_classes == 4:
    assert np.isnan(computed["iou_unused"])


def test_a_class_never_present_but_predicted_scores_zero():
  task = _task(3)
  computed = _batch_metrics(task, truth=[[[0, 0, 1, 1]]],
                            predicted=[[[0, 2, 1, 1]]], mask=[1]).compute()
  assert computed["iou_pet_border"] == 0
  assert computed["iou_pet"] == pytest.approx(1 / 2)
  assert computed["mean_iou"] == pytest.approx((1 / 2 + 1 + 0) / 3)


def test_loss_is_cross_entropy_plus_weighted_dice():
  logits = jnp.array([[[[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]]])  # 1x1x2 image
  batch = {"label": jnp.array([[[0, 2]]])}
  probs = np.asarray(jax.nn.softmax(logits))[0, 0]
  cross_entropy = -(np.log(probs[0, 0]) + np.log(probs[1, 2])) / 2
  loss, _ = _task(3).loss_and_outputs(logits, batch)
  assert loss == pytest.approx(cross_entropy, rel=1e-5)
  truth = np.eye(3)[[0, 2]]
  dice = np.mean([1 - (2 * np.sum(probs[:, c] * truth[:, c]) + 1)
                  / (probs[:, c].sum() + truth[:, c].sum() + 1)
                  for c in range(3)])
  loss, _ = _task(3, dice_weight=0.5).loss_and_outputs(logits, batch)
  assert loss == pytest.approx(cross_entropy + 0.5 * dice, rel=1e-5)


def test_rejects_image_level_labels_and_negative_dice_weight():
  with pytest.raises(ConfigError, match="task.dice_weight=-1"):
    _task(3, dice_weight=-1)
  with pytest.raises(ConfigError, match="a class id per pixel"):
    _task(3).loss_and_outputs(jnp.zeros((2, 3)), {"label": jnp.zeros(2, int)})
