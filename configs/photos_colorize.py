"""Embedded stand-in for pets_colorize: U-Net colorization of bundled photos.

Needs no download: 64x64 crops of the ten colour photos that ship with
scikit-image and scikit-learn (validation crops from a strip of each photo
never trained on). A U-Net (depth 3, 16 base features, BatchNorm) maps the
lightness L to the a, b channels of Lab under an L1 loss. The experiment is
the skip-connection ablation:

  python -m unetjax.main --config configs/photos_colorize.py --workdir workdirs/photos_skip
  python -m unetjax.main --config configs/photos_colorize.py --workdir workdirs/photos_noskip --config.model.skip=False

What to expect: `val/psnr_gray` (the photo with its colour removed) is the
floor; a model that only learns "mostly brownish" barely beats it. With
skips the U-Net keeps the exact edges of L and places colour on them;
without skips every pixel comes through the 8x8 bottleneck and colours
bleed across edges, so its PSNR stays lower.
"""
from unetjax.config import base_config


def get_config():
  config = base_config()
  config.model = dict(name="unet", depth=3, features=16, batchnorm=True,
                      skip=True)
  config.data = dict(name="sample_photos", train_examples=0, crop_size=64,
                     image_scale=256, val_fraction=0.3, num_train=512,
                     num_val=64, seed=0)
  config.task = dict(name="colorization", target="ab", loss="l1")
  config.optimizer.learning_rate = 1e-3
  config.augment.flip = True
  config.batch_size = 16
  config.num_steps = 600
  config.log_every_steps = 50
  config.eval_every_steps = 200
  config.best_metric = "val/psnr"
  config.best_mode = "max"
  return config
