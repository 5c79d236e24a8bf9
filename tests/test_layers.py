"""The fast layers compute what the plain Flax layers they replace compute."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import gradient_temporary_bytes, same_conv, tiny_cells_config
from flax import nnx

from unetjax.data import input_pipeline
from unetjax.models import layers
from unetjax.models.unet import UNet
from unetjax.training import experiment as experiment_lib
from unetjax.training import health as health_lib
from unetjax.training import steps as steps_lib


@pytest.fixture
def exact_matmuls():
  """float32 matmuls and convolutions in full precision (not a GPU's TF32),
  so the two formulations can be compared to 1e-5."""
  with jax.default_matmul_precision("highest"):
    yield


def test_upconv2x2_equals_conv_transpose_with_flipped_kernel(exact_matmuls):
  up = layers.UpConv2x2(3, 5, rngs=nnx.Rngs(0))
  up.bias[...] = jax.random.normal(jax.random.key(1), (5,))
  plain = nnx.ConvTranspose(3, 5, kernel_size=(2, 2), strides=(2, 2),
                            padding="VALID", rngs=nnx.Rngs(0))
  plain.kernel[...] = up.kernel[...][::-1, ::-1]
  plain.bias[...] = up.bias[...]
  x = jax.random.normal(jax.random.key(2), (2, 4, 3, 3))
  np.testing.assert_allclose(up(x), plain(x), rtol=1e-5, atol=1e-5)


def test_upconv2x2_gradients_equal_conv_transpose(exact_matmuls):
  up = layers.UpConv2x2(4, 2, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(3), (2, 3, 3, 4))

  def fast(kernel, x):
    return jnp.sum(jnp.sin(layers.upsample_2x2(x, kernel)))

  def plain(kernel, x):
    y = jax.lax.conv_transpose(x, kernel[::-1, ::-1], (2, 2), "VALID",
                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jnp.sin(y))

  kernel = up.kernel[...]
  for got, want in zip(jax.grad(fast, (0, 1))(kernel, x),
                       jax.grad(plain, (0, 1))(kernel, x)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_upconv2x2_places_each_pixel_in_its_2x2_block():
  up = layers.UpConv2x2(1, 1, rngs=nnx.Rngs(0))
  up.kernel[...] = jnp.arange(1.0, 5.0).reshape(2, 2, 1, 1)
  x = jnp.array([1.0, 10.0]).reshape(1, 1, 2, 1)
  want = [[1, 2, 10, 20], [3, 4, 30, 40]]
  np.testing.assert_array_equal(up(x)[0, ..., 0], want)


def test_reference_unet_has_the_pytorch_models_parameter_count():
  model = nnx.eval_shape(lambda: UNet(in_channels=1, num_outputs=1, depth=4,
                                      features=32, batchnorm=True,
                                      rngs=nnx.Rngs(0)))
  params = nnx.state(model, nnx.Param)
  assert sum(x.size for x in jax.tree.leaves(params)) == 7_762_465


def first_step(dtype: str):
  """Loss and state after one real train step computing in `dtype`."""
  experiment = experiment_lib.build_experiment(tiny_cells_config(dtype=dtype))
  config = experiment.config
  batch = next(input_pipeline.train_batches(
      experiment_lib.train_split(config, experiment.dataset),
      batch_size=config.batch_size, seed=0, start_step=0,
      augment_config=config.augment))
  state, metrics, _ = steps_lib.jit_steps(experiment).train(
      experiment.state, experiment.task.metrics_class.empty(),
      health_lib.initial_health(), batch)
  return metrics.compute()["loss"], state


def test_bfloat16_compute_keeps_float32_params_and_loss():
  loss32, _ = first_step("float32")
  loss16, state = first_step("bfloat16")
  assert loss16.dtype == jnp.float32
  np.testing.assert_allclose(loss16, loss32, rtol=0.02)
  assert {x.dtype for x in jax.tree.leaves(state) if x.dtype.kind == "f"} == {
      jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 9, 3), (1, 5, 4, 2)])
def test_max_pool_2x2_equals_reduce_window_pooling_gradient_included(shape):
  # Rounded, rectified values: most windows hold tied maxima (zeros and
  # equal integers), where the gradient must go to the first, as XLA's
  # select-and-scatter sends it. Odd sizes drop the last row/column.
  x = jnp.maximum(jnp.round(2 * jax.random.normal(jax.random.key(0), shape)),
                  0)
  out_shape = (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
  g = jax.random.normal(jax.random.key(1), out_shape)
  plain = lambda x: nnx.max_pool(x, (2, 2), strides=(2, 2))  # pylint: disable=unnecessary-lambda-assignment
  fast_y, fast_vjp = jax.vjp(layers.max_pool_2x2, x)
  plain_y, plain_vjp = jax.vjp(plain, x)
  np.testing.assert_array_equal(fast_y, plain_y)
  np.testing.assert_array_equal(fast_vjp(g)[0], plain_vjp(g)[0])
  ties = (layers._pool_windows(x) == fast_y[:, :, None, :, None]).sum((2, 4))  # pylint: disable=protected-access
  assert (ties > 1).any()  # the case that tells the two rules apart


def test_max_pool_2x2_gradient_takes_the_first_of_tied_maxima():
  x = jnp.array([[1.0, 3.0], [3.0, 3.0]]).reshape(1, 2, 2, 1)
  grad = jax.grad(lambda x: layers.max_pool_2x2(x).sum())(x)
  np.testing.assert_array_equal(grad.reshape(2, 2), [[0, 1], [0, 0]])


@pytest.mark.parametrize("settings", [
    dict(padding="SAME"),
    dict(padding="VALID", kernel_dilation=2),
    dict(padding="SAME", strides=2, feature_group_count=2)])
def test_late_input_conv_equals_nnx_conv_gradients_included(
    exact_matmuls, settings):
  def conv(conv_function):
    return nnx.Conv(4, 6, kernel_size=(3, 3), rngs=nnx.Rngs(0),
                    conv_general_dilated=conv_function, **settings)
  late, plain = conv(layers.late_input_conv), conv(jax.lax.conv_general_dilated)
  x = jax.random.normal(jax.random.key(4), (2, 9, 8, 4))

  def loss(model, x):
    return jnp.sum(jnp.sin(model(x)))

  got = nnx.grad(loss, argnums=(0, 1))(late, x)
  want = nnx.grad(loss, argnums=(0, 1))(plain, x)
  np.testing.assert_array_equal(late(x), plain(x))
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_late_input_conv_does_not_hold_input_copies_for_the_backward_pass():
  """With the plain convolution XLA copies each input for the weight
  gradient in the forward pass and holds the copy: each convolution more
  holds two inputs' worth (the copy and its ReLU's input), here one."""
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 8))
  kernels = jax.random.normal(jax.random.key(1), (8, 3, 3, 8, 8)) * 0.1

  def temporary_bytes(conv, depth):
    def loss(kernels, x):
      for kernel in kernels:
        x = jax.nn.relu(same_conv(x, kernel, conv))
      return jnp.sum(x ** 2)
    return gradient_temporary_bytes(loss, kernels[:depth], x)

  def growth(conv):
    return temporary_bytes(conv, 8) - temporary_bytes(conv, 4)

  # Four convolutions more: four copies fewer held, less a few small buffers.
  assert growth(layers.late_input_conv) <= (
      growth(jax.lax.conv_general_dilated) - 3.5 * x.nbytes)


def test_unfused_transpose_stays_a_copy_of_its_own():
  """If XLA folded the conditional, the elementwise work would be fused
  into the transpose again and the speed-up would be lost silently."""
  x = jnp.ones((2, 4, 4, 3))

  def relu_then_transpose(x, flag):
    return layers.unfused_transpose(jax.nn.relu(x + 1), (3, 1, 2, 0), flag)

  compiled = jax.jit(relu_then_transpose).lower(x, True).compile()
  np.testing.assert_array_equal(compiled(x, True),
                                jax.nn.relu(x + 1).transpose(3, 1, 2, 0))
  assert "conditional(" in compiled.as_text()
