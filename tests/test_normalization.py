"""The package's BatchNorm computes what nnx.BatchNorm computes, keeping less."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import gradient_temporary_bytes, same_conv
from flax import nnx

from unetjax.models import normalization


def twin_norms(features=3, **kwargs):
  """The package's BatchNorm and nnx.BatchNorm with the same variables."""
  ours = normalization.BatchNorm(features, momentum=0.9, rngs=nnx.Rngs(0),
                                 **kwargs)
  plain = nnx.BatchNorm(features, momentum=0.9, rngs=nnx.Rngs(0), **kwargs)
  key_scale, key_bias = jax.random.split(jax.random.key(7))
  for norm in (ours, plain):
    norm.scale[...] = 1 + jax.random.normal(key_scale, (features,))
    norm.bias[...] = jax.random.normal(key_bias, (features,))
  return ours, plain


def offset_batch(shape=(2, 5, 4, 3)):
  """Features far from zero mean, where a wrong centring would show."""
  x = jax.random.normal(jax.random.key(1), shape)
  return 50.0 + 3.0 * x


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_training_forward_and_running_statistics_equal_nnx(dtype):
  ours, plain = twin_norms(dtype=dtype)
  x = offset_batch().astype(dtype)
  for _ in range(2):
    got, want = ours(x), plain(x)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(ours.mean[...], plain.mean[...])
  np.testing.assert_array_equal(ours.var[...], plain.var[...])


def test_eval_forward_uses_the_running_statistics_like_nnx():
  ours, plain = twin_norms()
  x = offset_batch()
  ours(x), plain(x)
  ours.eval(), plain.eval()
  np.testing.assert_array_equal(ours(x * 2), plain(x * 2))
  assert ours.mean[...][0] != 0  # statistics were learned, then used


def loss_of(norm_class, x, scale, bias, mean, var):
  """A loss through one training-mode BatchNorm whose variables are given."""
  norm = norm_class(x.shape[-1], momentum=0.9, rngs=nnx.Rngs(0))
  norm.scale[...], norm.bias[...] = scale, bias
  norm.mean[...], norm.var[...] = mean, var
  y = norm(x)
  # Using the updated running statistics too checks that they carry no
  # gradient, as in nnx.BatchNorm.
  return jnp.sum(jnp.sin(y) * jnp.arange(y.size).reshape(y.shape) / y.size
                 ) + jnp.sum(norm.mean[...] + norm.var[...])


def test_gradients_equal_those_of_nnx_batchnorm():
  x = offset_batch()
  scale, bias = 1 + 0.1 * jnp.arange(3.0), jnp.array([0.5, -1.0, 2.0])
  mean, var = jnp.full((3,), 49.0), jnp.full((3,), 8.0)
  got = jax.grad(loss_of, (1, 2, 3))(normalization.BatchNorm, x, scale, bias,
                                     mean, var)
  want = jax.grad(loss_of, (1, 2, 3))(nnx.BatchNorm, x, scale, bias, mean,
                                      var)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-5)
  assert np.abs(got[0]).max() > 1e-3  # the input gradient is not trivial


def test_gradient_keeps_only_the_input_for_the_backward_pass():
  """One BatchNorm between two convs: nnx's keeps `x - mean` as well, a
  tensor the size of its input; this one recomputes it in the backward."""
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 8))
  kernels = jax.random.normal(jax.random.key(1), (2, 3, 3, 8, 8)) * 0.1

  def temporary_bytes(norm_class):
    def loss(kernels, x):
      norm = norm_class(8, rngs=nnx.Rngs(0))
      y = jax.nn.relu(norm(same_conv(x, kernels[0])))
      return jnp.sum(same_conv(y, kernels[1]) ** 2)
    return gradient_temporary_bytes(loss, kernels, x)

  assert temporary_bytes(normalization.BatchNorm) <= (
      temporary_bytes(nnx.BatchNorm) - x.nbytes)


@pytest.mark.parametrize("option", [{"axis": 1}, {"use_bias": False},
                                    {"axis_name": "batch"}])
def test_options_it_does_not_implement_are_refused(option):
  with pytest.raises(TypeError, match=next(iter(option))):
    normalization.BatchNorm(3, rngs=nnx.Rngs(0), **option)
