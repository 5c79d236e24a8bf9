"""Multi-layer perceptron on the flattened image: the MNIST baseline.

The default, 784-100-10 with ReLU on 28x28x1 images, has exactly 79,510
parameters: hidden.0 has 784 * 100 weights + 100 biases = 78,500 and head
has 100 * 10 + 10 = 1,010.
"""
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from unetjax.models import layers
from unetjax.runtime.errors import ConfigError


class MLP(nnx.Module):
  """Dense -> activation [-> dropout] per hidden layer, then dense logits."""

  def __init__(self, *, in_channels: int, num_outputs: int,
               image_size: int = 28, hidden_sizes: Sequence[int] = (100,),
               activation: str = "relu", dropout: float = 0.0,
               dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
    if not hidden_sizes or not all(
        isinstance(h, int) and h > 0 for h in hidden_sizes):
      raise ConfigError(f"model.hidden_sizes={tuple(hidden_sizes)!r}: "
                        "expected one or more positive integers")
    layers.check_dropout(dropout)
    self.image_size = image_size
    self.activation = layers.activation(activation)
    widths = [image_size * image_size * in_channels, *hidden_sizes]
    self.hidden = nnx.List([
        nnx.Linear(n_in, n_out, dtype=dtype, param_dtype=param_dtype,
                   rngs=rngs) for n_in, n_out in zip(widths, widths[1:])])
    self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout else None
    self.head = nnx.Linear(widths[-1], num_outputs, dtype=dtype,
                           param_dtype=param_dtype, rngs=rngs)

  def check_input(self, height: int, width: int) -> None:
    layers.check_image_size("mlp", self.image_size, height, width)

  def __call__(self, x: jax.Array) -> jax.Array:
    self.check_input(*x.shape[1:3])
    x = x.reshape(x.shape[0], -1)
    for dense in self.hidden:
      x = self.activation(dense(x))
      if self.dropout is not None:
        x = self.dropout(x)
    return self.head(x)
