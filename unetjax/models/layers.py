"""Layers shared by the models."""
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from unetjax.errors import ConfigError


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """A `jax.nn` activation by name: 'relu', 'sigmoid', 'gelu', ..."""
  if name not in ACTIVATIONS:
    raise ConfigError(f"activation={name!r} is not a known activation; "
                      f"expected one of {sorted(ACTIVATIONS)}")
  return getattr(jax.nn, name)


ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu",
               "silu", "swish", "mish", "sigmoid", "tanh", "softplus",
               "hard_tanh", "hard_sigmoid")


class UpConv2x2(nnx.Module):
  """A 2x2, stride-2 transposed convolution written as what it computes.

  Each input pixel becomes a 2x2 output block: an einsum with the kernel and
  a depth-to-space reshape. XLA's CPU backend lowers the gradient of
  `nnx.ConvTranspose` to a dilated, reversed convolution that runs at a few
  GFLOP/s; this form runs as a matmul. It equals `nnx.ConvTranspose(
  kernel_size=(2, 2), strides=(2, 2), padding='VALID')` whose kernel is this
  one flipped in both spatial axes (tests check it).
  """

  def __init__(self, in_features: int, out_features: int, *,
               dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
    init = nnx.initializers.lecun_normal()
    self.kernel = nnx.Param(
        init(rngs.params(), (2, 2, in_features, out_features), param_dtype))
    self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype))
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, _ = x.shape
    kernel = self.kernel[...].astype(self.dtype)
    y = jnp.einsum("nhwc,ijco->nhiwjo", x.astype(self.dtype), kernel)
    y = y.reshape(n, 2 * h, 2 * w, kernel.shape[-1])
    return y + self.bias[...].astype(self.dtype)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2, stride-2 max pooling of an NHWC batch (an odd last row or column
  is dropped), with the gradient XLA's CPU backend computes slowly.

  Equal to `nnx.max_pool(x, (2, 2), strides=(2, 2))`, gradient included:
  the gradient goes to the first maximum of each window in row-major order,
  as XLA's select-and-scatter sends it (tests check ties too). That
  select-and-scatter is lowered to a scatter with index arrays, about 3x
  slower than this mask-and-select.
  """
  return _pool_windows(x).max(axis=(2, 4))


def _pool_windows(x: jax.Array) -> jax.Array:
  n, h, w, c = x.shape
  return x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)


def _max_pool_fwd(x):
  y = max_pool_2x2(x)
  return y, (x, y)


def _max_pool_bwd(residuals, g):
  x, y = residuals
  hits = _pool_windows(x) == y[:, :, None, :, None]
  seen = jnp.zeros_like(hits[:, :, 0, :, 0])
  rows = []
  for i in (0, 1):
    firsts = []
    for j in (0, 1):
      firsts.append(hits[:, :, i, :, j] & ~seen)
      seen = seen | hits[:, :, i, :, j]
    rows.append(jnp.stack(firsts, axis=3))
  first = jnp.stack(rows, axis=2)
  n, h, w, c = y.shape
  dx = jnp.where(first, g[:, :, None, :, None], 0).reshape(n, 2 * h, 2 * w, c)
  return (jnp.pad(dx, ((0, 0), (0, x.shape[1] - 2 * h),
                       (0, x.shape[2] - 2 * w), (0, 0))),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


def center_crop(x: jax.Array, height: int, width: int) -> jax.Array:
  """The central height x width window of an NHWC (or NHW) batch."""
  top = (x.shape[1] - height) // 2
  left = (x.shape[2] - width) // 2
  return x[:, top:top + height, left:left + width]


def check_dropout(rate: float) -> None:
  if not 0 <= rate < 1:
    raise ConfigError(f"model.dropout={rate}: expected 0 <= dropout < 1")


def check_image_size(model: str, image_size: int, height: int,
                     width: int) -> None:
  """Models with a dense layer on the flattened image take one size only."""
  if (height, width) != (image_size, image_size):
    raise ConfigError(
        f"images are {height}x{width} but model {model!r} is built for "
        f"{image_size}x{image_size}: set model.image_size to the image size "
        "(square images only)")
