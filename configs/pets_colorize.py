"""U-Net colorization of Oxford-IIIT Pet photos, with and without skips.

Input: the lightness L of each 128x128 photo; output: the a, b channels of
Lab, L1 loss (`--config.task.target=rgb`, `--config.task.loss=l2` for the
variants). The ablation the U-Net paper's skip connections invite:

  python -m unetjax.main --config configs/pets_colorize.py --workdir workdirs/pets_colorize
  python -m unetjax.main --config configs/pets_colorize.py --workdir workdirs/pets_colorize_noskip --config.model.skip=False

Not run here (no download). Expect PSNR only a little above `psnr_gray`
(the photo with its colour removed): pets and backgrounds are mostly
desaturated, so an L1 model predicts muted colours. With target ab the
true L passes through, so the skip ablation shows mostly in where colour
lands (blotchy without skips); with target rgb the model must rebuild L
and losing the skips costs sharpness as well. Needs the TFDS download
once; configs/photos_colorize.py runs without it.

Sweeps: `skips` (on, off) and `adam_lr` (Adam at 1e-3 and 1e-4):

  python -m unetjax.sweep --config configs/pets_colorize.py --sweep skips \\
      --root workdirs/sweeps/pets_colorize
"""
from configs import pets_unet


def get_config():
  config = pets_unet.get_config()
  config.model.skip = True
  config.task = dict(name="colorization", target="ab", loss="l1")
  config.best_metric = "val/psnr"
  return config


def get_sweeps():
  """Named sweeps for `python -m unetjax.sweep --sweep NAME`."""
  return {
      "skips": [{"trial": "skips", "model.skip": True},
                {"trial": "no_skips", "model.skip": False}],
      "adam_lr": pets_unet.get_sweeps()["adam_lr"],
  }


def get_sweep_columns():
  columns = ["num_params", "train_seconds", "train/loss", "val/loss",
             "val/psnr", "val/psnr_gray", "test/psnr"]
  return {name: columns for name in get_sweeps()}
