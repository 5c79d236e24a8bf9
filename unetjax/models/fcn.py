"""FCN-32s (Long, Shelhamer & Darrell, 2015) on a ResNet backbone.

The backbone's stride-32 features go through a 1x1 class head and are
up-sampled 32x back to the input size, either by a learned 64x64 stride-32
transposed convolution initialised to bilinear interpolation (the paper's)
or by fixed bilinear resizing. The coarse stride is the point of the
experiment: a U-Net's skip connections recover the detail FCN-32 loses.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx, traverse_util

from unetjax.models.resnet import ResNet
from unetjax.runtime import checkpointing
from unetjax.runtime.errors import CheckpointError, ConfigError

STRIDE = 32
_UPSAMPLING = ("transpose", "bilinear")


def bilinear_kernel(factor: int, channels: int) -> np.ndarray:
  """[2f, 2f, C, C] kernel that makes a stride-f transposed conv bilinear."""
  size = 2 * factor
  center = factor - 0.5
  taps = 1 - np.abs(np.arange(size) - center) / factor
  kernel = np.zeros((size, size, channels, channels), np.float32)
  kernel[:, :, np.arange(channels), np.arange(channels)] = np.outer(
      taps, taps)[..., None]
  return kernel


class StridedUpsample(nnx.Module):
  """A 2f x 2f, stride-f transposed conv cropped by f/2 to exactly f x size.

  Written as what it computes: each input pixel adds a 2f x 2f patch,
  overlapping its neighbours' by f, so output block (p, q) is the sum of
  four einsums with the kernel's quarters and the inputs (p - a, q - b),
  then a depth-to-space reshape. XLA on CPU lowers the weight gradient of
  `nnx.ConvTranspose` to a slow dilated convolution; this runs as matmuls.
  It equals `nnx.ConvTranspose(kernel_size=(2f, 2f), strides=(f, f),
  padding='VALID')` with this kernel flipped, cropped by f/2 (tests check).
  """

  def __init__(self, features: int, factor: int, *, dtype=jnp.float32,
               param_dtype=jnp.float32):
    self.factor = factor
    self.kernel = nnx.Param(jnp.asarray(bilinear_kernel(factor, features),
                                        param_dtype))
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    f = self.factor
    kernel = self.kernel[...].astype(self.dtype).reshape(2, f, 2, f, c, -1)
    padded = jnp.pad(x.astype(self.dtype), ((0, 0), (1, 1), (1, 1), (0, 0)))
    shifted = jnp.stack([
        jnp.stack([padded[:, 1 - a:h + 2 - a, 1 - b:w + 2 - b]
                   for b in (0, 1)]) for a in (0, 1)])
    y = jnp.einsum("abnhwc,aibjco->nhiwjo", shifted, kernel)
    y = y.reshape(n, (h + 1) * f, (w + 1) * f, -1)
    return y[:, f // 2:f // 2 + h * f, f // 2:f // 2 + w * f]


class FCN32(nnx.Module):
  """ResNet features -> 1x1 class logits at stride 32 -> up-sampled 32x."""

  def __init__(self, *, in_channels: int, num_outputs: int, depth: int = 18,
               width: int = 64, bn_momentum: float = 0.9,
               upsampling: str = "transpose", backbone_checkpoint: str = "",
               dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
    if upsampling not in _UPSAMPLING:
      raise ConfigError(f"model.upsampling={upsampling!r}: expected one of "
                        f"{_UPSAMPLING}")
    self.backbone = ResNet(in_channels=in_channels, num_outputs=0,
                           depth=depth, width=width, bn_momentum=bn_momentum,
                           dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.classifier = nnx.Conv(self.backbone.num_features, num_outputs, (1, 1),
                               dtype=dtype, param_dtype=param_dtype,
                               rngs=rngs)
    self.upsample = StridedUpsample(
        num_outputs, STRIDE, dtype=dtype,
        param_dtype=param_dtype) if upsampling == "transpose" else None
    if backbone_checkpoint:
      load_backbone(self.backbone, backbone_checkpoint)

  def check_input(self, height: int, width: int) -> None:
    if height % STRIDE or width % STRIDE:
      raise ConfigError(f"image size {height}x{width}: FCN-32 needs height "
                        f"and width divisible by {STRIDE}")

  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, _ = x.shape
    self.check_input(h, w)
    logits = self.classifier(self.backbone.features(x))
    if self.upsample is not None:
      return self.upsample(logits)
    return jax.image.resize(logits, (n, h, w, logits.shape[-1]), "bilinear")


def load_backbone(backbone: ResNet, workdir: str) -> None:
  """Copies the ResNet weights of the latest checkpoint in `workdir`.

  The checkpoint may be a ResNet classifier's (its head is ignored) or an
  FCN's; every backbone variable must be there with the same shape.
  """
  saved = _saved_model_state(workdir)
  saved = {tuple(str(k) for k in path if k != "value"): value
           for path, value in traverse_util.flatten_dict(saved).items()}
  if any(path[0] == "backbone" for path in saved):
    saved = {path[1:]: v for path, v in saved.items() if path[0] == "backbone"}
  state = nnx.state(backbone)
  flat = traverse_util.flatten_dict(state.to_pure_dict())
  for path, current in flat.items():
    key = tuple(str(k) for k in path)
    name = ".".join(key)
    if key not in saved:
      raise CheckpointError(f"backbone_checkpoint {workdir}: no variable "
                            f"{name}; is it a ResNet of the same depth?")
    if saved[key].shape != current.shape:
      raise CheckpointError(
          f"backbone_checkpoint {workdir}: {name} has shape "
          f"{tuple(saved[key].shape)}, the model expects {tuple(current.shape)}"
          " (check model.depth, model.width and the input channels)")
    flat[path] = jnp.asarray(saved[key], current.dtype)
  nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(flat))
  nnx.update(backbone, state)


def _saved_model_state(workdir: str) -> dict:
  """The model part of the latest train-state checkpoint, as nested dicts."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise CheckpointError(f"backbone_checkpoint={workdir!r}: no checkpoints/ "
                          "folder there; expected a workdir of this package")
  mngr = checkpointing.manager(workdir, keep=1, best_metric="val/loss",
                               best_mode="min", read_only=True)
  step = checkpointing.resolve_step(mngr, "latest")
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))
  mngr.close()
  return restored["state"]["0"]  # the train state is (model, optimizer)
