"""U-Net (Ronneberger et al., 2015) and the variants people compare.

Options cover the experiments this package reproduces: SAME or VALID
padding (VALID is the paper's: the output is smaller than the input and skip
features are centre-cropped), BatchNorm, dropout, skip connections on or
off, transposed-conv or bilinear up-sampling, and a dilated bottleneck
(cascaded convs with dilation 1, r, r^2, ..., summed or not).
"""
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from unetjax.models import layers, normalization
from unetjax.runtime.errors import ConfigError

_PADDINGS = ("SAME", "VALID")
_UPSAMPLING = ("transpose", "bilinear")


class ConvBlock(nnx.Module):
  """`num_convs` x (conv -> [BatchNorm] -> activation), then [dropout]."""

  def __init__(self, in_features: int, out_features: int, *, num_convs: int,
               kernel_size: int, padding: str, batchnorm: bool,
               activation: str, dropout: float, bn_momentum: float,
               dilations: Sequence[int] | None = None, dtype, param_dtype,
               rngs: nnx.Rngs):
    dilations = dilations or (1,) * num_convs
    self.convs = nnx.List()
    self.norms = nnx.List()
    for i, dilation in enumerate(dilations):
      self.convs.append(nnx.Conv(
          in_features if i == 0 else out_features, out_features,
          kernel_size=(kernel_size, kernel_size), padding=padding,
          kernel_dilation=dilation, use_bias=not batchnorm, dtype=dtype,
          param_dtype=param_dtype, conv_general_dilated=layers.late_input_conv,
          rngs=rngs))
      if batchnorm:
        self.norms.append(normalization.BatchNorm(
            out_features, momentum=bn_momentum, epsilon=1e-5, dtype=dtype,
            param_dtype=param_dtype, rngs=rngs))
    self.activation = layers.activation(activation)
    self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout else None

  def layer_outputs(self, x: jax.Array) -> list[jax.Array]:
    """The output of every conv layer, for the summed dilated bottleneck."""
    outputs = []
    for i, conv in enumerate(self.convs):
      x = conv(x)
      if self.norms:
        x = self.norms[i](x)
      x = self.activation(x)
      outputs.append(x)
    return outputs

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.layer_outputs(x)[-1]
    return self.dropout(x) if self.dropout is not None else x


class Upsample(nnx.Module):
  """Doubles height and width and sets the channel count."""

  def __init__(self, in_features: int, out_features: int, kind: str, *,
               dtype, param_dtype, rngs: nnx.Rngs):
    if kind == "transpose":
      self.layer = layers.UpConv2x2(in_features, out_features, dtype=dtype,
                                    param_dtype=param_dtype, rngs=rngs)
    else:  # bilinear resize, then a 1x1 conv to set the features
      self.layer = nnx.Conv(in_features, out_features, kernel_size=(1, 1),
                            dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.kind = kind

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.kind == "bilinear":
      n, h, w, c = x.shape
      x = jax.image.resize(x, (n, 2 * h, 2 * w, c), "bilinear")
    return self.layer(x)


class UNet(nnx.Module):
  """Encoder-decoder with skip connections; returns per-pixel logits."""

  def __init__(self, *, in_channels: int, num_outputs: int, depth: int = 4,
               features: int | Sequence[int] = 64, convs_per_level: int = 2,
               kernel_size: int = 3, padding: str = "SAME",
               batchnorm: bool = False, bn_momentum: float = 0.9,
               activation: str = "relu", dropout: float = 0.0,
               skip: bool = True, upsampling: str = "transpose",
               dilate: bool = False, dilate_rate: int = 2,
               dilate_depth: int = 4, addition: bool = True,
               dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
    widths = _level_widths(features, depth)
    _check_options(padding, upsampling, kernel_size, convs_per_level, dropout,
                   dilate_rate, dilate_depth)
    block = dict(num_convs=convs_per_level, kernel_size=kernel_size,
                 padding=padding, batchnorm=batchnorm, activation=activation,
                 bn_momentum=bn_momentum, dtype=dtype,
                 param_dtype=param_dtype, rngs=rngs)
    self.depth = depth
    self.padding = padding
    self.kernel_size = kernel_size
    self.convs_per_level = convs_per_level
    self.skip = skip
    self.dilate = dilate
    self.addition = addition

    self.down = nnx.List()
    in_features = in_channels
    for width in widths[:-1]:
      self.down.append(ConvBlock(in_features, width, dropout=0.0, **block))
      in_features = width
    if dilate:  # dilated convs keep the size: they always pad SAME
      self.bottleneck = ConvBlock(
          in_features, widths[-1], dropout=dropout,
          dilations=[dilate_rate ** i for i in range(dilate_depth)],
          **{**block, "num_convs": dilate_depth, "padding": "SAME"})
    else:
      self.bottleneck = ConvBlock(in_features, widths[-1], dropout=dropout,
                                  **block)
    self.up = nnx.List()
    self.decode = nnx.List()
    for level in reversed(range(depth)):
      self.up.append(Upsample(widths[level + 1], widths[level], upsampling,
                              dtype=dtype, param_dtype=param_dtype, rngs=rngs))
      decoder_in = 2 * widths[level] if skip else widths[level]
      self.decode.append(ConvBlock(decoder_in, widths[level], dropout=0.0,
                                   **block))
    # The 1x1 convolution that maps features to outputs, as the matmul over
    # the feature axis it is: as a convolution, XLA's CPU backend copied its
    # full-resolution input to another layout for the weight gradient
    # (reference U-Net step 4.23 -> 4.10 s, docs/performance.md).
    self.head = nnx.Linear(widths[0], num_outputs, dtype=dtype,
                           param_dtype=param_dtype, rngs=rngs)

  def output_size(self, size: int) -> int:
    """Output height (or width) for an input of `size`; errors if invalid."""
    output, level = self._output_size(size)
    if output is None:
      raise ConfigError(self._size_message(level))
    return output

  def _output_size(self, size: int) -> tuple[int | None, int]:
    """(output size, depth), or (None, the level where `size` fails).

    Raises nothing: `valid_input_sizes`, which the error message of a
    VALID U-Net lists, calls it for every size.
    """
    shrink = 0 if self.padding == "SAME" else (self.kernel_size - 1) * (
        self.convs_per_level)
    for level in range(self.depth):
      size -= shrink
      if size <= 0 or size % 2:
        return None, level
      size //= 2
    if not self.dilate:
      size -= shrink
    for _ in range(self.depth):
      size = 2 * size - shrink
    return (size if size > 0 else None), self.depth

  def _size_message(self, level: int) -> str:
    if self.padding == "SAME":
      return (f"input size must be divisible by 2**depth = {2 ** self.depth} "
              f"for a SAME-padded U-Net of depth {self.depth}")
    return (f"input size is not valid for a VALID-padded U-Net of depth "
            f"{self.depth} (feature map odd or empty at level {level}); "
            f"valid sizes include {valid_input_sizes(self)[:4]}")

  def check_input(self, height: int, width: int) -> None:
    for name, size in (("height", height), ("width", width)):
      try:
        self.output_size(size)
      except ConfigError as e:
        raise ConfigError(f"image {name} {size}: {e}") from None

  def __call__(self, x: jax.Array) -> jax.Array:
    self.check_input(x.shape[1], x.shape[2])
    skips = []
    for block in self.down:
      x = block(x)
      skips.append(x)
      x = layers.max_pool_2x2(x)
    if self.dilate and self.addition:
      x = sum(self.bottleneck.layer_outputs(x))
      if self.bottleneck.dropout is not None:
        x = self.bottleneck.dropout(x)
    else:
      x = self.bottleneck(x)
    for up, block, skip in zip(self.up, self.decode, reversed(skips)):
      x = up(x)
      if self.skip:
        skip = layers.center_crop(skip, x.shape[1], x.shape[2])
        x = jnp.concatenate([skip, x], axis=-1)
      x = block(x)
    return self.head(x)


def valid_input_sizes(model: UNet, limit: int = 1024) -> list[int]:
  """Input sizes up to `limit` the model accepts, smallest first."""
  return [size for size in range(1, limit + 1)
          if model._output_size(size)[0] is not None]  # pylint: disable=protected-access


def _level_widths(features, depth: int) -> list[int]:
  """Feature counts from the top level down to the bottleneck."""
  if not isinstance(depth, int) or depth < 1:
    raise ConfigError(f"model.depth={depth!r}: expected an integer >= 1")
  if isinstance(features, int):
    if features < 1:
      raise ConfigError(f"model.features={features}: expected >= 1")
    return [features * 2 ** level for level in range(depth + 1)]
  widths = list(features)
  if len(widths) != depth + 1 or not all(
      isinstance(w, int) and w > 0 for w in widths):
    raise ConfigError(
        f"model.features={tuple(widths)}: expected one positive integer per "
        f"level and the bottleneck ({depth + 1} for depth {depth}), or one "
        "integer doubled at each level")
  return widths


def _check_options(padding, upsampling, kernel_size, convs_per_level, dropout,
                   dilate_rate, dilate_depth) -> None:
  if padding not in _PADDINGS:
    raise ConfigError(f"model.padding={padding!r}: expected one of "
                      f"{_PADDINGS}")
  if upsampling not in _UPSAMPLING:
    raise ConfigError(f"model.upsampling={upsampling!r}: expected one of "
                      f"{_UPSAMPLING}")
  if kernel_size < 1 or kernel_size % 2 == 0:
    raise ConfigError(f"model.kernel_size={kernel_size}: expected an odd "
                      "integer >= 1")
  if convs_per_level < 1:
    raise ConfigError(f"model.convs_per_level={convs_per_level}: expected "
                      ">= 1")
  if not 0 <= dropout < 1:
    raise ConfigError(f"model.dropout={dropout}: expected 0 <= dropout < 1")
  if dilate_rate < 1 or dilate_depth < 1:
    raise ConfigError(f"model.dilate_rate={dilate_rate}, model.dilate_depth="
                      f"{dilate_depth}: expected integers >= 1")
