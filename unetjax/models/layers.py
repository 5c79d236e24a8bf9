"""Layers shared by the models."""
import inspect
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from unetjax.runtime.errors import ConfigError


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

  Each input pixel becomes a 2x2 output block: a matmul with the kernel and
  a depth-to-space reshape (`upsample_2x2`). XLA's CPU backend lowers the
  gradient of `nnx.ConvTranspose` to a dilated, reversed convolution that
  runs at a few GFLOP/s; this form runs as matmuls. It equals
  `nnx.ConvTranspose(kernel_size=(2, 2), strides=(2, 2), padding='VALID')`
  whose kernel is this one flipped in both spatial axes (tests check it).
  """

  def __init__(self, in_features: int, out_features: int, *,
               dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
    init = nnx.initializers.lecun_normal()
    self.kernel = nnx.Param(
        init(rngs.params(), (2, 2, in_features, out_features), param_dtype))
    self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype))
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    y = upsample_2x2(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    return y + self.bias[...].astype(self.dtype)


@jax.custom_vjp
def upsample_2x2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Each pixel of an NHWC batch times `kernel` [2, 2, in, out] becomes the
  2x2 block of the output (no bias), with a gradient written out by hand.

  One matmul [pixels, in] x [in, 2*2*out], then depth-to-space. Written as
  an einsum and differentiated by JAX, XLA's CPU backend computed it in a
  [2*2*out, pixels] layout and copied the output and its gradient in and
  out of that layout, slowly; here the only copies are the depth-to-space
  and its inverse. On the 8x128x128x64 -> 8x256x256x32 level: forward 89
  -> 57 ms, backward 229 -> 76 ms.
  """
  n, h, w, c = x.shape
  out = kernel.shape[-1]
  y = x.reshape(n * h * w, c) @ _kernel_rows(kernel)
  return (y.reshape(n, h, w, 2, 2, out).transpose(0, 1, 3, 2, 4, 5)
          .reshape(n, 2 * h, 2 * w, out))


def _kernel_rows(kernel: jax.Array) -> jax.Array:
  """[2, 2, in, out] -> [in, 2*2*out], the order of each 2x2 block."""
  _, _, c, out = kernel.shape
  return kernel.transpose(2, 0, 1, 3).reshape(c, 4 * out)


def _upsample_fwd(x, kernel):
  return upsample_2x2(x, kernel), (x, kernel)


def _upsample_bwd(residuals, g):
  x, kernel = residuals
  n, h, w, c = x.shape
  out = kernel.shape[-1]
  g_blocks = (g.reshape(n, h, 2, w, 2, out).transpose(0, 1, 3, 2, 4, 5)
              .reshape(n * h * w, 4 * out))  # space-to-depth
  dx = (g_blocks @ _kernel_rows(kernel).T).reshape(x.shape)
  dkernel = jax.lax.dot_general(x.reshape(-1, c), g_blocks,
                                (((0,), (0,)), ((), ())))
  return dx, dkernel.reshape(c, 2, 2, out).transpose(1, 2, 0, 3)


upsample_2x2.defvjp(_upsample_fwd, _upsample_bwd)


_CONV_SIGNATURE = inspect.signature(jax.lax.conv_general_dilated)


def late_input_conv(lhs: jax.Array, rhs: jax.Array, *args,
                    **kwargs) -> jax.Array:
  """`lax.conv_general_dilated` whose weight gradient reads its input late,
  through a copy of its own.

  For the weight gradient XLA's CPU backend copies each convolution's input
  into a [features, H, W, batch] layout. Two things make that copy cheap:
  - It is made once the backward pass reaches this convolution: the input is
    tied to the incoming gradient (plus zero times one of its elements per
    example). Left alone, XLA made it during the forward pass and held it
    (reference U-Net: XLA's buffers for the step 1.38 -> 1.20 GiB).
  - On CPU it is a transpose on its own (`unfused_transpose`), not a loop
    that also recomputes the input from the BatchNorm before it (reference
    U-Net step 4.30 -> 4.02 s).
  With a finite gradient the values are those of `lax.conv_general_dilated`;
  a non-finite one gives a non-finite weight gradient, as it would anyway.
  """
  settings = _CONV_SIGNATURE.bind(lhs, rhs, *args, **kwargs).arguments
  del settings["lhs"], settings["rhs"]

  def conv(x, kernel, **overrides):
    return jax.lax.conv_general_dilated(x, kernel, **(settings | overrides))

  @jax.custom_vjp
  def late_conv(x, kernel):
    return conv(x, kernel)

  def forward(x, kernel):
    return conv(x, kernel), (x, kernel)

  def weight_gradient(x, kernel, g, **overrides):
    return jax.vjp(lambda k: conv(x, k, **overrides), kernel)[1](g)[0]

  def weight_gradient_on_cpu(x, kernel, g):
    """The same, from the input already in the layout XLA copies it to."""
    numbers = jax.lax.conv_dimension_numbers(
        x.shape, kernel.shape, settings.get("dimension_numbers"))
    batch, feature, *spatial = numbers.lhs_spec
    x_t = unfused_transpose(x, (feature, *spatial, batch),
                            jnp.isfinite(kernel.ravel()[0]))
    numbers_t = numbers._replace(
        lhs_spec=(x.ndim - 1, 0, *range(1, x.ndim - 1)))
    return weight_gradient(x_t, kernel, g, dimension_numbers=numbers_t)

  def backward(residuals, g):
    x, kernel = residuals
    # One element per example, so a batch sharded over devices stays local.
    first_of_each_example = g[(slice(None),) + (slice(0, 1),) * (g.ndim - 1)]
    x = x + (first_of_each_example * 0).astype(x.dtype)
    g_x = jax.vjp(lambda x: conv(x, kernel), x)[1](g)[0]
    # Elsewhere the compiler picks its own layouts, and a conditional would
    # wait for its predicate on the host.
    g_kernel = jax.lax.platform_dependent(
        x, kernel, g, cpu=weight_gradient_on_cpu, default=weight_gradient)
    return g_x, g_kernel

  late_conv.defvjp(forward, backward)
  return late_conv(lhs, rhs)


def unfused_transpose(x: jax.Array, permutation: tuple[int, ...],
                      runtime_flag: jax.Array) -> jax.Array:
  """`x.transpose(permutation)` as a copy of its own, apart from the work
  that produces x.

  XLA's CPU backend runs a transpose alone as a tiled copy (about 25 ms for
  an 8x256x256x32 float32 array on the 2-core machine) but, with elementwise
  work fused into it, as a loop over single elements (60-130 ms). XLA does
  not fuse across the branches of a conditional (and removes an
  `optimization_barrier` before fusing). Both branches are this transpose,
  so the value of `runtime_flag`, any boolean XLA cannot fold, does not
  matter: it only keeps the conditional from being folded away.
  """
  def transpose(v):
    return v.transpose(permutation)
  return jax.lax.cond(runtime_flag, transpose, transpose, x)


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
