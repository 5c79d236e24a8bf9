"""MLP and CNN classifiers, the classification task and the TFDS sets."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from unetjax import data as datasets
from unetjax import models
from unetjax.data import DataInfo, Split, input_pipeline
from unetjax.runtime import config as config_lib
from unetjax.runtime.errors import ConfigError, DataError
from unetjax.tasks.classification import Classification
from unetjax.tasks.metrics import scalars
from unetjax.training import optimizers, schedules, train

DIGITS = DataInfo("toy", num_classes=10, in_channels=1,
                  class_names=tuple("0123456789"))


def _config(**model):
  config = config_lib.base_config()
  config.model = model
  config.optimizer.learning_rate = 1e-2
  return config


def _build(seed=0, **model):
  return models.build(_config(**model), in_channels=1, num_outputs=10,
                      rngs=nnx.Rngs(params=seed, dropout=seed + 1))


def _abstract(**model):
  """The model's shapes without initialising it: counting costs nothing."""
  return nnx.eval_shape(lambda: _build(**model))


@functools.partial(jax.jit, static_argnums=0)
def _metrics(task, logits, batch):
  """The metrics of one batch, as the trainer's eval step computes them."""
  _, outputs = task.loss_and_outputs(logits, batch)
  return task.metrics_class.single_from_model_output(**outputs)


def _computed(task, logits, batch):
  return _metrics(task, logits, batch).compute()


def _layer_counts(model) -> dict[str, int]:
  counts = {}
  for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    layer = ".".join(str(k) for k in path[:-1])
    counts[layer] = counts.get(layer, 0) + int(np.prod(value.shape))
  return counts


def test_mlp_has_79510_parameters():
  model = _abstract(name="mlp")
  assert _layer_counts(model) == {"hidden.0": 784 * 100 + 100,
                                  "head": 100 * 10 + 10}
  assert models.count_params(model) == 79_510


def test_cnn_has_21578_parameters():
  model = _abstract(name="cnn")
  assert _layer_counts(model) == {
      "stages.0.conv": 3 * 3 * 1 * 8 + 8,
      "stages.1.conv": 3 * 3 * 8 * 16 + 16,
      "stages.2.conv": 3 * 3 * 16 * 32 + 32,
      "head": 7 * 7 * 32 * 10 + 10,
  }
  assert models.count_params(model) == 21_578


def test_cnn_batchnorm_replaces_conv_biases():
  counts = _layer_counts(_abstract(name="cnn", batchnorm=True))
  assert counts["stages.0.conv"] == 3 * 3 * 1 * 8
  assert counts["stages.0.norm"] == 2 * 8
  assert sum(counts.values()) == 21_578 - (8 + 16 + 32) + 2 * (8 + 16 + 32)


def _batch(count=8, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": jnp.asarray(rng.uniform(size=(count, 28, 28, 1)),
                               jnp.float32),
          "label": jnp.asarray(np.arange(count) % 10, jnp.int32)}


def _loss(task, model, batch):
  """Training-mode loss without dropout noise, so two calls compare."""
  if any(isinstance(m, nnx.Dropout) for _, m in nnx.iter_modules(model)):
    model = nnx.view(model, only=nnx.Dropout, deterministic=True)
  return task.loss_and_outputs(model(batch["image"]), batch)[0]


VARIANTS = [
    dict(name="mlp"),
    dict(name="mlp", hidden_sizes=(32, 16), activation="sigmoid",
         dropout=0.2),
    dict(name="cnn"),
    dict(name="cnn", order="conv_pool_act", activation="sigmoid"),
    dict(name="cnn", batchnorm=True),
    dict(name="cnn", dropout=0.3, activation="gelu"),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(
    f"{k}={v}" for k, v in v.items() if k != "name") or v["name"])
def test_every_variant_lowers_the_loss_in_one_step(variant):
  config = _config(**variant)
  task = Classification(info=DIGITS)
  model = _build(**variant)  # eager: initialisers compile once per shape
  model.train()
  tx = optimizers.build(config, schedules.build(config, 1, 1))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit  # the step and both losses in one compile
  def losses_before_and_after(model, optimizer, batch):
    before = _loss(task, model, batch)
    grads = nnx.grad(lambda m: task.loss_and_outputs(
        m(batch["image"]), batch)[0])(model)
    optimizer.update(model, grads)
    return before, _loss(task, model, batch)

  before, after = losses_before_and_after(model, optimizer, _batch())
  assert float(after) < float(before)


@pytest.mark.parametrize("activation, same", [("relu", True),
                                              ("gelu", False)])
def test_pooling_first_changes_the_function_only_for_non_monotonic_act(
    activation, same):
  x = _batch()["image"]
  outputs = [_build(name="cnn", activation=activation, order=order)(x)
             for order in ("conv_act_pool", "conv_pool_act")]
  assert np.allclose(*outputs, atol=1e-6) == same


def test_confusion_matrix_and_accuracy_by_hand():
  info = DataInfo("toy", 3, 1, ("a", "b", "c"))
  task = Classification(info=info)
  # true 0 1 2 2 | 1 (padding); predicted 0 2 2 1 | 1.
  labels = jnp.array([0, 1, 2, 2, 1])
  logits = 5.0 * jnp.eye(3)[jnp.array([0, 2, 2, 1, 1])]
  mask = jnp.array([1, 1, 1, 1, 0], jnp.float32)
  computed = _computed(task, logits, {"label": labels, "mask": mask})
  np.testing.assert_array_equal(computed["confusion_matrix"],
                                [[1, 0, 0], [0, 0, 1], [0, 1, 1]])
  assert float(computed["accuracy"]) == pytest.approx(0.5)
  per_class = {k: v for k, v in scalars(computed).items()
               if k.startswith("accuracy_class_")}
  assert per_class == pytest.approx(
      {"accuracy_class_0": 1.0, "accuracy_class_1": 0.0,
       "accuracy_class_2": 0.5})
  # softmax of (5, 0, 0): right answer p = e^5 / (e^5 + 2), wrong p = 1 / ..
  right = -np.log(np.exp(5) / (np.exp(5) + 2))
  wrong = -np.log(1 / (np.exp(5) + 2))
  assert float(computed["loss"]) == pytest.approx((2 * right + 2 * wrong) / 4)


def test_class_without_examples_has_nan_accuracy():
  task = Classification(info=DataInfo("toy", 3, 1, ("a", "b", "c")))
  computed = _computed(task, jnp.eye(3)[jnp.array([0, 1])],
                       {"label": jnp.array([0, 1])})
  assert np.isnan(computed["accuracy_class_2"])


def test_padded_eval_batches_do_not_count():
  """5 examples in batches of 4: the second batch holds 3 copies of #0."""
  info = DataInfo("toy", 3, 1, ("a", "b", "c"))
  task = Classification(info=info)
  predicted = np.array([1, 1, 2, 0, 2])  # examples 0 and 4 are wrong
  split = Split(np.eye(3, dtype=np.float32)[predicted][:, None, None, :],
                np.array([0, 1, 2, 0, 1], np.int32),
                tuple(map(str, range(5))))
  metrics = task.metrics_class.empty()
  for batch in input_pipeline.eval_batches(split, batch_size=4):
    logits = 5.0 * batch["image"][:, 0, 0, :]
    metrics = metrics.merge(_metrics(task, logits, batch))
  computed = metrics.compute()
  np.testing.assert_array_equal(computed["confusion_matrix"],
                                [[1, 1, 0], [0, 1, 1], [0, 0, 1]])
  assert float(computed["accuracy"]) == pytest.approx(3 / 5)


def test_figures_write_the_confusion_matrix(tmp_path):
  task = Classification(info=DataInfo("toy", 2, 1, ("no", "yes")))
  computed = {"confusion_matrix": np.array([[3, 1], [0, 4]]),
              "accuracy": np.float32(7 / 8)}
  images = task.figures({}, None, {}, computed, str(tmp_path))
  assert (tmp_path / "confusion_matrix.png").exists()
  assert images["confusion_matrix"].ndim == 3


@pytest.mark.parametrize("model, error", [
    (dict(name="cnn", activation="relux"), "activation='relux'"),
    (dict(name="mlp", activation="swishy"), "activation='swishy'"),
    (dict(name="cnn", order="pool_conv"), "model.order='pool_conv'"),
    (dict(name="cnn", image_size=30), "model.image_size=30"),
    (dict(name="cnn", features=()), "model.features=()"),
    (dict(name="mlp", hidden_sizes=(0,)), "model.hidden_sizes=(0,)"),
    (dict(name="mlp", dropout=1.0), "model.dropout=1.0"),
])
def test_bad_model_options_are_named(model, error):
  with pytest.raises(ConfigError, match=error.replace("(", r"\(").replace(
      ")", r"\)")):
    _build(**model)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_wrong_image_size_for_the_model_is_named(name):
  model = _build(name=name)
  with pytest.raises(ConfigError, match="images are 32x32 but model"):
    model.check_input(32, 32)
  with pytest.raises(ConfigError, match="images are 16x28"):
    model(jnp.zeros((1, 16, 28, 1)))


def test_unknown_dataset_name_lists_the_known_ones():
  config = ml_collections.ConfigDict({"data": {"name": "mnsit"}})
  with pytest.raises(ConfigError, match="data.name='mnsit'.*'mnist'"):
    datasets.build(config)


def test_segmentation_labels_are_rejected():
  task = Classification(info=DIGITS)
  with pytest.raises(ConfigError, match="one class id per image"):
    task.loss_and_outputs(jnp.zeros((2, 10)),
                          {"label": jnp.zeros((2, 4, 4), jnp.int32)})


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def test_mnist_cnn_end_to_end_on_tfds_mock_data(tmp_path):
  from configs import mnist_cnn  # pylint: disable=g-import-not-at-top
  config = mnist_cnn.get_config()
  config.data.val_examples = 6
  config.update(num_epochs=0, num_steps=2, log_every_steps=1,
                eval_every_steps=2, batch_size=8, eval_batch_size=8)
  with _tfds().testing.mock_data(num_examples=20):
    dataset = datasets.build(config)
    splits = {name: dataset.split(name) for name in ("train", "val", "test")}
    final = train.train_and_evaluate(config, str(tmp_path))
  assert splits["train"].images.dtype == np.uint8
  assert splits["train"].images.shape == (14, 28, 28, 1)
  assert splits["train"].labels.dtype == np.int32
  assert splits["val"].ids[0] == "train_00014"
  assert len(splits["val"]) == 6 and len(splits["test"]) == 20
  assert final["num_params"] == 21_578
  assert set(final["test"]) >= {"loss", "accuracy", "accuracy_class_9"}
  assert (tmp_path / "plots" / "confusion_matrix.png").exists()


def test_tfds_sets_describe_themselves():
  cifar = datasets.DATASETS.get("cifar10")().info
  assert (cifar.in_channels, cifar.num_classes) == (3, 10)
  assert datasets.DATASETS.get("fashion_mnist")().info.class_names[-1] == (
      "Ankle boot")


def test_tfds_without_download_names_the_missing_data(tmp_path):
  dataset = datasets.DATASETS.get("mnist")(data_dir=str(tmp_path),
                                           download=False)
  with pytest.raises(DataError, match="'mnist' is not in .*download"):
    dataset.split("test")


def test_too_many_validation_examples_are_named():
  with _tfds().testing.mock_data(num_examples=10):
    dataset = datasets.DATASETS.get("mnist")(val_examples=10)
    with pytest.raises(ConfigError, match="data.val_examples=10 but"):
      dataset.split("val")
