"""ResNet backbone and FCN-32: shapes, parameter counts, up-sampling, loading."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from unetjax import models
from unetjax.models.fcn import FCN32, StridedUpsample, bilinear_kernel
from unetjax.models.resnet import ResNet
from unetjax.runtime import checkpointing
from unetjax.runtime.errors import CheckpointError, ConfigError


def _conv(k, cin, cout):
  return k * k * cin * cout


def _bn(c):
  return 2 * c  # scale and bias; running statistics are not parameters


def _resnet18_backbone_params(cin, w):
  """Hand count: stem, then stages of two basic blocks each."""
  total = _conv(7, cin, w) + _bn(w)
  widths = [w, 2 * w, 4 * w, 8 * w]
  prev = w
  for width in widths:
    for block in range(2):
      first_in = prev if block == 0 else width
      total += _conv(3, first_in, width) + _bn(width)
      total += _conv(3, width, width) + _bn(width)
      if block == 0 and first_in != width:
        total += _conv(1, first_in, width) + _bn(width)
    prev = width
  return total


def test_resnet18_backbone_parameter_count():
  backbone = nnx.eval_shape(lambda: ResNet(
      in_channels=3, num_outputs=0, depth=18, rngs=nnx.Rngs(0)))
  count = models.count_params(backbone)
  assert count == _resnet18_backbone_params(3, 64) == 11_176_512
  # torchvision's resnet18 with its 1000-class head has 11,689,512.
  classifier = nnx.eval_shape(lambda: ResNet(
      in_channels=3, num_outputs=1000, depth=18, rngs=nnx.Rngs(0)))
  assert models.count_params(classifier) == 11_689_512


def test_resnet34_classifier_matches_torchvision_count():
  model = nnx.eval_shape(lambda: ResNet(in_channels=3, num_outputs=1000,
                                        depth=34, rngs=nnx.Rngs(0)))
  assert models.count_params(model) == 21_797_672


def test_resnet_rejects_unknown_depth():
  with pytest.raises(ConfigError, match="model.depth=50"):
    ResNet(in_channels=3, num_outputs=0, depth=50, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_fcn32_output_matches_input_size(upsampling):
  model = nnx.eval_shape(lambda: FCN32(
      in_channels=3, num_outputs=4, width=4, upsampling=upsampling,
      rngs=nnx.Rngs(0)))
  assert models.count_params(model) == (
      _resnet18_backbone_params(3, 4) + 32 * 4 + 4
      + (64 * 64 * 4 * 4 if upsampling == "transpose" else 0))
  out = nnx.eval_shape(lambda m, x: m(x), model,
                       jax.ShapeDtypeStruct((2, 64, 96, 3), jnp.float32))
  assert out.shape == (2, 64, 96, 4)


@pytest.mark.parametrize("height,width", [(64, 48), (100, 64), (16, 16)])
def test_fcn32_rejects_sizes_not_divisible_by_32(height, width):
  model = nnx.eval_shape(lambda: FCN32(in_channels=1, num_outputs=2, width=2,
                                       rngs=nnx.Rngs(0)))
  with pytest.raises(ConfigError, match=f"{height}x{width}.*divisible by 32"):
    model.check_input(height, width)


def test_strided_upsample_equals_transposed_conv():
  layer = StridedUpsample(2, 32)
  kernel = jax.random.normal(jax.random.key(1), layer.kernel.shape)
  layer.kernel[...] = kernel
  reference = nnx.ConvTranspose(2, 2, (64, 64), strides=(32, 32),
                                padding="VALID", use_bias=False,
                                rngs=nnx.Rngs(0))
  reference.kernel[...] = kernel[::-1, ::-1]
  x = jax.random.normal(jax.random.key(0), (1, 3, 2, 2))
  np.testing.assert_allclose(layer(x), reference(x)[:, 16:-16, 16:-16],
                             atol=1e-5)


def test_bilinear_init_interpolates_between_pixel_centres():
  layer = StridedUpsample(1, 32)
  assert bilinear_kernel(32, 1).shape == (64, 64, 1, 1)
  x = jnp.array([0.0, 1.0, 0.0, 0.0]).reshape(1, 1, 4, 1) * jnp.ones(
      (1, 2, 4, 1))
  row = np.asarray(layer(x))[0, 40, :, 0]
  # Pixel 1's centre is output column 32 + 15.5: the peak sits on 47 and 48,
  # and the weight falls off linearly to 0 at the neighbours' centres.
  np.testing.assert_allclose(row[47], 1 - 0.5 / 32, rtol=1e-6)
  np.testing.assert_allclose(row[[16, 79]], [0.5 / 32, 0.5 / 32], atol=1e-6)
  assert row[:16].max() == 0 and row[80:].max() == 0


def _save_classifier(workdir, **kwargs):
  classifier = ResNet(in_channels=1, num_outputs=5, depth=18, width=2,
                      rngs=nnx.Rngs(7), **kwargs)
  optimizer = nnx.Optimizer(classifier, optax.adam(1e-3), wrt=nnx.Param)
  mngr = checkpointing.manager(str(workdir), keep=1, best_metric="val/loss",
                               best_mode="min")
  checkpointing.save(mngr, 1, nnx.state((classifier, optimizer)), {"step": 1},
                     {"val/loss": 0.0})
  mngr.close()
  return classifier


def test_fcn32_loads_backbone_from_classifier_checkpoint(tmp_path):
  classifier = _save_classifier(tmp_path)
  classifier.stem_norm.mean[...] = jnp.arange(2.0)  # batch stats load too
  model = FCN32(in_channels=1, num_outputs=3, width=2,
                backbone_checkpoint=str(tmp_path), rngs=nnx.Rngs(0))
  saved = nnx.state(classifier)
  for path, value in nnx.to_flat_state(nnx.state(model.backbone)):
    expected = saved
    for key in path:
      expected = expected[key]
    if path[:2] == ("stem_norm", "mean"):
      continue
    np.testing.assert_array_equal(value[...], expected[...])


def test_fcn32_backbone_shape_mismatch_is_a_clear_error(tmp_path):
  _save_classifier(tmp_path)
  with pytest.raises(CheckpointError, match=r"stem.kernel has shape "
                     r"\(7, 7, 1, 2\), the model expects \(7, 7, 3, 2\)"):
    FCN32(in_channels=3, num_outputs=3, width=2,
          backbone_checkpoint=str(tmp_path), rngs=nnx.Rngs(0))
  with pytest.raises(CheckpointError, match="no checkpoints/ folder"):
    FCN32(in_channels=1, num_outputs=3, width=2,
          backbone_checkpoint=str(tmp_path / "missing"), rngs=nnx.Rngs(0))
