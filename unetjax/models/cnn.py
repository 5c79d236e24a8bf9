"""A small CNN for MNIST-sized images, and the variants students compare.

The default layout on 28x28x1 images, SAME-padded 3x3 convs:

  stage   operation                      output     parameters
  0       conv 3x3, 8  -> act -> pool    14x14x8    3*3*1*8 + 8    =     80
  1       conv 3x3, 16 -> act -> pool    7x7x16     3*3*8*16 + 16  =  1,168
  2       conv 3x3, 32 -> act            7x7x32     3*3*16*32 + 32 =  4,640
  head    flatten -> dense to 10         10         7*7*32*10 + 10 = 15,690
                                                    total            21,578

`order='conv_pool_act'` pools before the activation. For an activation
that never decreases (relu, sigmoid, tanh, elu, ...) max-pooling commutes
with it, so both orders compute the same function and the pooled one is
cheaper; they differ for gelu, silu, mish. `batchnorm=True` inserts
BatchNorm after each conv and drops the conv biases (BatchNorm's own
shift replaces them). `dropout` acts on the flattened features before the
head.
"""
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from unetjax.models import layers, normalization
from unetjax.runtime.errors import ConfigError

ORDERS = ("conv_act_pool", "conv_pool_act")


class ConvStage(nnx.Module):
  """conv -> [BatchNorm] -> activation and 2x2 max-pool in either order."""

  def __init__(self, in_features: int, out_features: int, *, pool: bool,
               order: str, batchnorm: bool, bn_momentum: float,
               activation: str, dtype, param_dtype, rngs: nnx.Rngs):
    self.conv = nnx.Conv(in_features, out_features, kernel_size=(3, 3),
                         padding="SAME", use_bias=not batchnorm, dtype=dtype,
                         param_dtype=param_dtype, rngs=rngs)
    self.norm = normalization.BatchNorm(
        out_features, momentum=bn_momentum, epsilon=1e-5, dtype=dtype,
        param_dtype=param_dtype, rngs=rngs) if batchnorm else None
    self.activation = layers.activation(activation)
    self.pool = pool
    self.pool_first = order == "conv_pool_act"

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv(x)
    if self.norm is not None:
      x = self.norm(x)
    if self.pool and self.pool_first:
      x = layers.max_pool_2x2(x)
    x = self.activation(x)
    if self.pool and not self.pool_first:
      x = layers.max_pool_2x2(x)
    return x


class CNN(nnx.Module):
  """Conv stages, a 2x2 max-pool after each but the last, dense logits."""

  def __init__(self, *, in_channels: int, num_outputs: int,
               image_size: int = 28, features: Sequence[int] = (8, 16, 32),
               order: str = "conv_act_pool", activation: str = "relu",
               batchnorm: bool = False, bn_momentum: float = 0.9,
               dropout: float = 0.0, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    _check_options(features, order, image_size)
    layers.check_dropout(dropout)
    self.image_size = image_size
    self.stages = nnx.List()
    widths = [in_channels, *features]
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
      self.stages.append(ConvStage(
          n_in, n_out, pool=i < len(features) - 1, order=order,
          batchnorm=batchnorm, bn_momentum=bn_momentum,
          activation=activation, dtype=dtype, param_dtype=param_dtype,
          rngs=rngs))
    final_size = image_size // 2 ** (len(features) - 1)
    self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout else None
    self.head = nnx.Linear(final_size * final_size * features[-1],
                           num_outputs, dtype=dtype, param_dtype=param_dtype,
                           rngs=rngs)

  def check_input(self, height: int, width: int) -> None:
    layers.check_image_size("cnn", self.image_size, height, width)

  def __call__(self, x: jax.Array) -> jax.Array:
    self.check_input(*x.shape[1:3])
    for stage in self.stages:
      x = stage(x)
    x = x.reshape(x.shape[0], -1)
    if self.dropout is not None:
      x = self.dropout(x)
    return self.head(x)


def _check_options(features, order: str, image_size: int) -> None:
  if order not in ORDERS:
    raise ConfigError(f"model.order={order!r}: expected one of {ORDERS}")
  if not features or not all(isinstance(f, int) and f > 0 for f in features):
    raise ConfigError(f"model.features={tuple(features)!r}: expected one or "
                      "more positive integers, one per conv stage")
  shrink = 2 ** (len(features) - 1)
  if image_size < shrink or image_size % shrink:
    raise ConfigError(
        f"model.image_size={image_size}: expected a multiple of {shrink}, "
        f"as {len(features) - 1} 2x2 max-pools halve it")
