"""ResNet-18 and ResNet-34 (He et al., 2016), as torchvision builds them.

Basic residual blocks, BatchNorm, no conv biases, torch's paddings (so the
feature map is exactly input / 32 for sizes divisible by 32). With a head it
is a classifier (global average pool, dense); without one (`num_outputs=0`)
it is the stride-32 backbone of FCN-32, and a classifier's checkpoint can
seed that backbone because both share the layer names.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from unetjax.models import normalization
from unetjax.runtime.errors import ConfigError

BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
# torchvision's conv init (He normal, fan-out); also far cheaper to compile
# on CPU than the truncated normal of nnx's default.
CONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


class BasicBlock(nnx.Module):
  """Two 3x3 convs and a shortcut (1x1 conv when the shape changes)."""

  def __init__(self, in_features: int, out_features: int, stride: int, *,
               norm, dtype, param_dtype, rngs: nnx.Rngs):
    conv = dict(use_bias=False, kernel_init=CONV_INIT, dtype=dtype,
                param_dtype=param_dtype, rngs=rngs)
    self.conv1 = nnx.Conv(in_features, out_features, (3, 3), strides=stride,
                          padding=1, **conv)
    self.norm1 = norm(out_features)
    self.conv2 = nnx.Conv(out_features, out_features, (3, 3), padding=1,
                          **conv)
    self.norm2 = norm(out_features)
    if stride != 1 or in_features != out_features:
      self.shortcut = nnx.Conv(in_features, out_features, (1, 1),
                               strides=stride, **conv)
      self.shortcut_norm = norm(out_features)
    else:
      self.shortcut = self.shortcut_norm = None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self.norm1(self.conv1(x)))
    y = self.norm2(self.conv2(y))
    if self.shortcut is not None:
      x = self.shortcut_norm(self.shortcut(x))
    return jax.nn.relu(x + y)


class ResNet(nnx.Module):
  """Image classifier, or (num_outputs=0) a stride-32 feature extractor."""

  def __init__(self, *, in_channels: int, num_outputs: int, depth: int = 18,
               width: int = 64, bn_momentum: float = 0.9, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    if depth not in BLOCKS_PER_STAGE:
      raise ConfigError(f"model.depth={depth!r}: expected one of "
                        f"{sorted(BLOCKS_PER_STAGE)}")
    if not isinstance(width, int) or width < 1:
      raise ConfigError(f"model.width={width!r}: expected an integer >= 1")

    def norm(features):
      return normalization.BatchNorm(features, momentum=bn_momentum,
                                     epsilon=1e-5, dtype=dtype,
                                     param_dtype=param_dtype, rngs=rngs)

    self.stem = nnx.Conv(in_channels, width, (7, 7), strides=2, padding=3,
                         use_bias=False, kernel_init=CONV_INIT, dtype=dtype,
                         param_dtype=param_dtype, rngs=rngs)
    self.stem_norm = norm(width)
    self.blocks = nnx.List()
    in_features = width
    for stage, count in enumerate(BLOCKS_PER_STAGE[depth]):
      out_features = width * 2 ** stage
      for i in range(count):
        stride = 2 if stage > 0 and i == 0 else 1
        self.blocks.append(BasicBlock(in_features, out_features, stride,
                                      norm=norm, dtype=dtype,
                                      param_dtype=param_dtype, rngs=rngs))
        in_features = out_features
    self.num_features = in_features
    self.head = nnx.Linear(in_features, num_outputs, dtype=dtype,
                           param_dtype=param_dtype,
                           rngs=rngs) if num_outputs else None

  def features(self, x: jax.Array) -> jax.Array:
    """[N, H, W, C] -> [N, H/32, W/32, 8 * width]."""
    x = jax.nn.relu(self.stem_norm(self.stem(x)))
    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for block in self.blocks:
      x = block(x)
    return x

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.features(x)
    if self.head is None:
      return x
    return self.head(x.mean(axis=(1, 2)))
