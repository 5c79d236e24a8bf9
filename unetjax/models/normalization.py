"""BatchNorm whose backward pass keeps only its input.

Differentiated by JAX, `nnx.BatchNorm` leaves XLA two full-size tensors per
layer for the backward pass: its input and the centred input `x - mean`.
Here the normalisation has its gradient written out, computed from the
input alone, so only the input is kept. On the reference U-Net (benchmark,
2-core CPU) XLA's buffers for the train step shrink from 1.80 to 1.38 GiB
and the peak RSS from 2.37 to 1.96 GiB. The forward pass and the statistics
are `nnx.BatchNorm`'s, operation for operation.
"""
import functools

import jax
import jax.numpy as jnp
from flax import nnx


class BatchNorm(nnx.BatchNorm):
  """`nnx.BatchNorm` over all axes but the last, same variables and values.

  Supports what the models use: statistics over every axis but the last,
  learned scale and bias, `use_fast_variance`, no mask and no `axis_name`
  (data parallelism is SPMD `jit`, where XLA reduces across devices).
  """

  def __init__(self, num_features: int, **kwargs):
    unsupported = {k: kwargs[k] for k in ("axis", "use_bias", "use_scale",
                                          "use_fast_variance", "axis_name")
                   if k in kwargs}
    if unsupported:
      raise TypeError(f"BatchNorm does not support {unsupported}; use "
                      "nnx.BatchNorm for these")
    super().__init__(num_features, **kwargs)

  def __call__(self, x: jax.Array,
               use_running_average: bool | None = None) -> jax.Array:
    if use_running_average is None:
      use_running_average = self.use_running_average
    if use_running_average is None:
      raise ValueError("BatchNorm needs use_running_average: call "
                       "model.train() or model.eval() first")
    x, mean, var, scale, bias = self.promote_dtype(
        (x, self.mean[...], self.var[...], self.scale[...], self.bias[...]),
        dtype=self.dtype)
    if not use_running_average:
      mean, var = batch_statistics(x)
      # `set_value`, not `[...] =`: on a tracer, flax's `[...] =` asks for
      # its sharding, and JAX's error for that scans the whole trace so far.
      self.mean.set_value(jax.lax.stop_gradient(
          self.momentum * self.mean[...] + (1 - self.momentum) * mean))
      self.var.set_value(jax.lax.stop_gradient(
          self.momentum * self.var[...] + (1 - self.momentum) * var))
    y = normalize(x, mean, var, scale, bias, self.epsilon)
    return y.astype(jnp.result_type(x, scale, bias) if self.dtype is None
                    else self.dtype)


def batch_statistics(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and variance over all axes but the last, in at least float32, as
  `nnx.BatchNorm` computes them (E[x^2] - E[x]^2, clipped at zero)."""
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  axes = tuple(range(x.ndim - 1))
  mean, mean_of_squares = x.mean(axes), jax.lax.square(x).mean(axes)
  return mean, jnp.maximum(0.0, mean_of_squares - jax.lax.square(mean))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def normalize(x, mean, var, scale, bias, epsilon):
  """(x - mean) * rsqrt(var + epsilon) * scale + bias, per last-axis
  feature; the gradient needs only x and the per-feature values."""
  return (x - mean) * (jax.lax.rsqrt(var + epsilon) * scale) + bias


def _normalize_fwd(x, mean, var, scale, bias, epsilon):
  return (normalize(x, mean, var, scale, bias, epsilon),
          (x, mean, var, scale, bias))


def _normalize_bwd(epsilon, residuals, g):
  x, mean, var, scale, bias = residuals
  axes = tuple(range(x.ndim - 1))
  inv_std = jax.lax.rsqrt(var + epsilon)
  # The barrier keeps XLA from merging this with the forward pass's
  # `x - mean` and keeping that alive until here.
  x, mean = jax.lax.optimization_barrier((x, mean))
  centred = x - mean
  g_bias = g.sum(axes)
  g_centred_sum = (g * centred).sum(axes)
  gain = inv_std * scale
  g_x = g * gain
  g_mean = -g_bias * gain
  g_var = g_centred_sum * scale * -0.5 * inv_std ** 3
  g_scale = g_centred_sum * inv_std
  return (g_x.astype(x.dtype), g_mean.astype(mean.dtype),
          g_var.astype(var.dtype), g_scale.astype(scale.dtype),
          g_bias.astype(bias.dtype))


normalize.defvjp(_normalize_fwd, _normalize_bwd)
