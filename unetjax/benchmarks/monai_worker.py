"""The MONAI side of `benchmark --predict`: the same U-Net in PyTorch
(`torch_unet.torch_unet`) through MONAI's `sliding_window_inference`, and
the NNX weights in the torch twin's names and layouts.

torch and monai are the `bench` extra, never package dependencies: this
module imports them only inside its functions.
"""
import os
import sys
import time
from typing import Any

import numpy as np

# Both sides' settings: 256-pixel tiles, a quarter overlap, 8 a batch.
from unetjax.benchmarks import common, torch_unet

# Both sides' settings: 256-pixel tiles, a quarter overlap, 8 a batch.
TILE, OVERLAP, BATCH = 256, 0.25, 8


def torch_spec(model, task) -> dict[str, Any]:
  """The torch twin's spec for an unetjax UNet (SAME padding, BatchNorm)."""
  return dict(depth=model.depth, features=int(model.down[0].convs[0].out_features),
              batchnorm=bool(len(model.down[0].norms)), bn_momentum=0.9,
              in_channels=1, num_outputs=task.num_outputs)


def torch_state_dict(model) -> dict[str, np.ndarray]:
  """The NNX UNet's weights under the torch twin's names and layouts:
  conv kernels HWIO -> OIHW, the 2x2 up-sampling [2, 2, in, out] ->
  ConvTranspose2d's [in, out, 2, 2] (no flip: `layers.upsample_2x2`
  writes input pixel (h, w) times kernel[i, j] to output (2h+i, 2w+j),
  as ConvTranspose2d does), the 1x1 head's [in, out] -> [out, in, 1, 1]."""
  weights = {}

  def block(prefix, nnx_block):
    step = 3 if len(nnx_block.norms) else 2  # conv, [bn], relu
    for i, conv in enumerate(nnx_block.convs):
      weights[f"{prefix}.{step * i}.weight"] = np.asarray(
          conv.kernel[...]).transpose(3, 2, 0, 1)
      if conv.bias is not None:
        weights[f"{prefix}.{step * i}.bias"] = np.asarray(conv.bias[...])
    for i, norm in enumerate(nnx_block.norms):
      for ours, theirs in (("scale", "weight"), ("bias", "bias"),
                           ("mean", "running_mean"), ("var", "running_var")):
        weights[f"{prefix}.{step * i + 1}.{theirs}"] = np.asarray(
            getattr(norm, ours)[...])

  for i, down in enumerate(model.down):
    block(f"down.{i}", down)
  block("bottleneck", model.bottleneck)
  for i, (up, decode) in enumerate(zip(model.up, model.decode)):
    weights[f"up.{i}.weight"] = np.asarray(
        up.layer.kernel[...]).transpose(2, 3, 0, 1)
    weights[f"up.{i}.bias"] = np.asarray(up.layer.bias[...])
    block(f"decode.{i}", decode)
  weights["head.weight"] = np.asarray(
      model.head.kernel[...]).T[:, :, None, None]
  weights["head.bias"] = np.asarray(model.head.bias[...])
  return weights


def monai_infer(torch, model, image: np.ndarray, *, tta: bool,
                blend: str) -> np.ndarray:
  """Logits [H, W, outputs] of `image` [H, W, C] by MONAI's sliding window."""
  from monai.inferers import sliding_window_inference  # pylint: disable=g-import-not-at-top

  from unetjax.inference import tiling  # pylint: disable=g-import-not-at-top

  def predictor(tiles):
    if not tta:
      return model(tiles)
    total = 0
    for turns in range(4):
      for flip in (False, True):
        view = torch.rot90(tiles, turns, dims=(2, 3))
        view = torch.flip(view, dims=(3,)) if flip else view
        out = model(view)
        out = torch.flip(out, dims=(3,)) if flip else out
        total = total + torch.rot90(out, -turns, dims=(2, 3))
    return total / 8

  hann = torch.from_numpy(np.outer(tiling.window(TILE),
                                   tiling.window(TILE)).astype(np.float32))
  x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
  with torch.no_grad():
    out = sliding_window_inference(
        x, TILE, BATCH, predictor, overlap=OVERLAP,
        mode="gaussian" if blend == "gaussian" else "constant",
        roi_weight_map=None if blend == "gaussian" else hann)
  return out[0].numpy().transpose(1, 2, 0)


def torch_model(torch, spec, weights=None):
  """The torch twin in eval mode, with `weights` (torch_state_dict) if given."""
  model = torch_unet.torch_unet(torch, spec)  # pylint: disable=protected-access
  if weights is not None:
    model.load_state_dict({k: torch.from_numpy(np.array(v))
                           for k, v in weights.items()}, strict=False)
  return model.eval()


def run_monai(spec: dict[str, Any], path: str, output: str, tta: bool,
              blend: str) -> dict[str, Any]:
  """A user's MONAI script on one input: read, infer page by page, write.

  `import monai` imports TensorFlow when it is installed (as it is next to
  unetjax), about 5 s and 0.5 GiB; it is kept out here, so the figures are
  MONAI's best, as in an environment without TensorFlow."""
  sys.modules.setdefault("tensorflow", None)  # import monai: no TF
  import monai  # pylint: disable=g-import-not-at-top
  import tifffile  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  from unetjax.benchmarks import predict as pb  # pylint: disable=g-import-not-at-top
  model = torch_model(torch, spec)
  ready = time.perf_counter()
  start_s = pb._process_seconds()
  os.makedirs(output, exist_ok=True)
  stem = os.path.splitext(os.path.basename(path))[0]
  if path.endswith(".tif"):
    pages = tifffile.imread(path)
    masks = np.stack([
        (monai_infer(torch, model, page[..., None].astype(np.float32) / 255,
                     tta=tta, blend=blend)[..., 0] > 0).astype(np.uint8)
        for page in pages])
    tifffile.imwrite(os.path.join(output, f"{stem}_mask.tif"), masks)
  else:
    image = np.asarray(Image.open(path), np.float32)[..., None] / 255
    mask = (monai_infer(torch, model, image, tta=tta,
                        blend=blend)[..., 0] > 0).astype(np.uint8)
    Image.fromarray(mask).save(os.path.join(output, f"{stem}_mask.png"))
  seconds = time.perf_counter() - ready
  return dict(framework="monai", torch_version=torch.__version__,
              monai_version=monai.__version__,
              torch_threads=torch.get_num_threads(), startup_s=start_s,
              predict_s=seconds, megapixels_per_s=pb.megapixels(path) / seconds,
              process_s=pb._process_seconds(),
              peak_rss_bytes=common.peak_rss_bytes())


