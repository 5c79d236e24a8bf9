"""U-Net variants: VALID shapes and crops, dilation, addition, parameter
counts, the JSON spec, and the binary task's weights."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from unetjax import models
from unetjax.data import DataInfo
from unetjax.models import spec as spec_lib
from unetjax.models.unet import ConvBlock, UNet
from unetjax.runtime.errors import ConfigError
from unetjax.tasks.segmentation import BinarySegmentation

INFO = DataInfo("x", 2, 1, ("bg", "fg"))


def _unet(**kwargs):
  options = dict(in_channels=1, num_outputs=1, depth=1, features=(2, 4),
                 rngs=nnx.Rngs(0))
  options.update(kwargs)
  return UNet(**options)


def expected_params(widths, in_channels=1, outputs=1, k=3, convs=2,
                    batchnorm=False, skip=True, upsampling="transpose",
                    bottleneck_convs=None):
  """The U-Net's parameter count by hand: conv weights + bias (or BN's 2)."""
  def block(cin, cout, n):
    per_conv = cout * (2 if batchnorm else 1)  # BN scale+bias, or a bias
    return k * k * cin * cout + per_conv + (n - 1) * (
        k * k * cout * cout + per_conv)
  total, cin = 0, in_channels
  for width in widths[:-1]:
    total += block(cin, width, convs)
    cin = width
  total += block(cin, widths[-1], bottleneck_convs or convs)
  for level in reversed(range(len(widths) - 1)):
    up_in, width = widths[level + 1], widths[level]
    total += (4 if upsampling == "transpose" else 1) * up_in * width + width
    total += block(2 * width if skip else width, width, convs)
  return total + widths[0] * outputs + outputs


@pytest.mark.parametrize("kwargs,count", [
    ({}, 431),  # 58 + 224 + 34 + 112 + 3, counted on paper
    (dict(batchnorm=True), 447),
    (dict(skip=False), 395),
    (dict(upsampling="bilinear"), 407),
    (dict(dilate=True, dilate_depth=3), 579),
])
def test_exact_parameter_counts_of_tiny_unets(kwargs, count):
  assert models.count_params(nnx.eval_shape(lambda: _unet(**kwargs))) == count


def test_head_computes_the_1x1_convolution_and_its_gradients():
  """The head is a matmul over features; a 1x1 `nnx.Conv` with the same
  weights gives the same logits and the same weight gradients."""
  head = _unet(num_outputs=3).head
  conv = nnx.Conv(2, 3, kernel_size=(1, 1), rngs=nnx.Rngs(1))
  conv.kernel[...] = head.kernel[...].reshape(1, 1, 2, 3)
  conv.bias[...] = head.bias[...]
  x = jax.random.normal(jax.random.key(0), (2, 5, 4, 2))
  g = jax.random.normal(jax.random.key(1), (2, 5, 4, 3))

  def loss_and_grads(layer):
    return nnx.value_and_grad(lambda m: (m(x) * g).sum())(layer)

  (head_loss, head_grads), (conv_loss, conv_grads) = map(
      loss_and_grads, (head, conv))
  np.testing.assert_allclose(head(x), conv(x), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(head_loss, conv_loss, rtol=1e-6)
  np.testing.assert_allclose(head_grads.kernel[...].reshape(1, 1, 2, 3),
                             conv_grads.kernel[...], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(head_grads.bias[...], conv_grads.bias[...],
                             rtol=1e-5, atol=1e-6)


def test_parameter_counts_of_the_isbi_configs_follow_the_formula():
  from configs import isbi2012, isbi2012_dilated  # pylint: disable=g-import-not-at-top
  counts = {}
  for name, module in (("standard", isbi2012), ("dilated", isbi2012_dilated)):
    config = module.get_config()
    model = nnx.eval_shape(lambda c=config: models.build(
        c, in_channels=1, num_outputs=1, rngs=nnx.Rngs(0)))
    counts[name] = models.count_params(model)
  assert counts["standard"] == expected_params(
      [19, 38, 76, 152, 304], batchnorm=True)
  assert counts["dilated"] == expected_params(
      [16, 32, 64, 128, 224], batchnorm=True, bottleneck_convs=4)
  for count in counts.values():
    assert 2.6e6 < count < 2.8e6  # the "about 2.7M"


def test_valid_padding_gives_the_papers_572_to_388():
  model = nnx.eval_shape(lambda: _unet(depth=4, features=1, padding="VALID"))
  assert model.output_size(572) == 388
  out = jax.eval_shape(
      lambda x: _unet(depth=4, features=1, padding="VALID")(x),
      jax.ShapeDtypeStruct((1, 572, 572, 1), jnp.float32))
  assert out.shape == (1, 388, 388, 1)
  with pytest.raises(ConfigError, match="image height 570.*valid sizes"):
    model.check_input(570, 572)


def test_valid_padding_runs_and_targets_are_centre_cropped():
  model = nnx.eval_shape(lambda: _unet(depth=1, padding="VALID"))
  shape = jax.eval_shape(lambda x: _unet(depth=1, padding="VALID")(x),
                         jax.ShapeDtypeStruct((1, 20, 20, 1), jnp.float32))
  # 20 -4-> 16 /2-> 8 -4-> 4 x2-> 8 -4-> 4
  assert shape.shape == (1, 4, 4, 1) and model.output_size(20) == 4
  logits = jnp.zeros(shape.shape)
  labels = jnp.arange(400).reshape(1, 20, 20)
  task = BinarySegmentation(info=INFO)
  np.testing.assert_array_equal(task.targets(logits, {"label": labels}),
                                labels[:, 8:12, 8:12])


def test_dilated_convs_see_the_pixels_their_rates_say():
  block = ConvBlock(1, 1, num_convs=2, kernel_size=3, padding="SAME",
                    batchnorm=False, activation="relu", dropout=0.0,
                    bn_momentum=0.9, dilations=(1, 3), dtype=jnp.float32,
                    param_dtype=jnp.float32, rngs=nnx.Rngs(0))
  for conv in block.convs:
    conv.kernel[...] = jnp.ones_like(conv.kernel[...])
    conv.bias[...] = jnp.zeros_like(conv.bias[...])
  impulse = jnp.zeros((1, 15, 15, 1)).at[0, 7, 7, 0].set(1.0)
  seen = np.asarray(block(impulse)[0, :, :, 0]) > 0
  offsets = {a + b for a in (-1, 0, 1) for b in (-3, 0, 3)}  # 1 then 3
  expected = np.zeros((15, 15), bool)
  for dy in offsets:
    for dx in offsets:
      expected[7 + dy, 7 + dx] = True
  np.testing.assert_array_equal(seen, expected)


def test_dilation_rates_are_powers_of_the_rate():
  model = nnx.eval_shape(lambda: _unet(dilate=True, dilate_rate=3,
                                       dilate_depth=3))
  assert [c.kernel_dilation for c in model.bottleneck.convs] == [1, 3, 9]


def test_addition_sums_the_bottleneck_outputs():
  x = jax.random.uniform(jax.random.key(1), (1, 16, 16, 1))

  def output(addition, depth):
    return _unet(dilate=True, dilate_depth=depth, addition=addition)(x)
  # One dilated conv: the sum of all outputs is the last output.
  np.testing.assert_allclose(output(True, 1), output(False, 1), rtol=1e-6)
  assert not np.allclose(output(True, 3), output(False, 3))
  model = _unet(dilate=True, dilate_depth=3)
  pooled = nnx.max_pool(model.down[0](x), (2, 2), (2, 2))
  outputs = model.bottleneck.layer_outputs(pooled)
  assert len(outputs) == 3 and all(o.shape == (1, 8, 8, 4) for o in outputs)


def test_spec_file_builds_the_model_it_describes(tmp_path):
  path = tmp_path / "u_net.json"
  path.write_text(json.dumps({"features": [2, 4], "convs_per_level": 2,
                              "kernel_size": 3, "padding": "SAME",
                              "batchnorm": True, "dropout": 0.0,
                              "upsampling": "transpose"}))
  kwargs = spec_lib.resolve({"spec": str(path)}, UNet)
  assert kwargs["depth"] == 1 and kwargs["features"] == (2, 4)
  model = nnx.eval_shape(lambda: UNet(in_channels=1, num_outputs=1,
                                      rngs=nnx.Rngs(0), **kwargs))
  assert models.count_params(model) == 447


@pytest.mark.parametrize("content,match", [
    ({"feature": [2, 4]}, "'feature' is not an option of UNet"),
    ({"batchnorm": "yes"}, "batchnorm=\"yes\" has the wrong type"),
    ({"features": [2, 4.5]}, "features=.* has the wrong type"),
    ({"kernel_size": 3.0}, "kernel_size=3.0 has the wrong type"),
    ([1, 2], "expected a JSON object"),
])
def test_bad_spec_files_are_named_errors(tmp_path, content, match):
  path = tmp_path / "bad.json"
  path.write_text(json.dumps(content))
  with pytest.raises(ConfigError, match=match):
    spec_lib.resolve({"spec": str(path)}, UNet)


def test_spec_conflicting_with_config_and_missing_spec_fail(tmp_path):
  path = tmp_path / "u_net.json"
  path.write_text('{"padding": "VALID"}')
  with pytest.raises(ConfigError, match="model.padding='SAME' conflicts"):
    spec_lib.resolve({"spec": str(path), "padding": "SAME"}, UNet)
  with pytest.raises(ConfigError, match="no such file"):
    spec_lib.resolve({"spec": str(tmp_path / "none.json")}, UNet)
  path.write_text("{not json")
  with pytest.raises(ConfigError, match="not valid JSON"):
    spec_lib.resolve({"spec": str(path)}, UNet)


def test_the_example_spec_and_single_example_config_build():
  from configs import cells_single_example  # pylint: disable=g-import-not-at-top
  config = cells_single_example.get_config()
  model = nnx.eval_shape(lambda: models.build(
      config, in_channels=1, num_outputs=1, rngs=nnx.Rngs(0)))
  assert models.count_params(model) == expected_params(
      [16, 32, 64, 128], batchnorm=True)


def test_class_weights_scale_each_pixels_loss_by_its_true_class():
  logits = jnp.zeros((1, 1, 2, 1))  # BCE = log 2 at every pixel
  batch = {"label": jnp.array([[[0, 1]]])}
  weighted = BinarySegmentation(info=INFO, class_weights=(2.0, 3.0))
  loss, _ = weighted.loss_and_outputs(logits, batch)
  assert float(loss) == pytest.approx(2.5 * np.log(2), rel=1e-6)
  pos = BinarySegmentation(info=INFO, pos_weight=3.0)
  assert float(pos.loss_and_outputs(logits, batch)[0]) == pytest.approx(
      2.0 * np.log(2), rel=1e-6)
  dice_only = BinarySegmentation(info=INFO, bce_weight=0.0, dice_weight=1.0)
  # soft Dice with p = 0.5: 1 - (2 * 0.5 + 1) / (1 + 1 + 1) = 1/3
  assert float(dice_only.loss_and_outputs(logits, batch)[0]) == pytest.approx(
      1 / 3, rel=1e-6)
  with pytest.raises(ConfigError, match="class_weights"):
    BinarySegmentation(info=INFO, class_weights=(1.0, 2.0), pos_weight=2.0)
