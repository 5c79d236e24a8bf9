"""Embedded stand-in for pets_colorize: U-Net colorization of bundled photos.

Needs no download: 64x64 crops of the ten colour photos that ship with
scikit-image and scikit-learn (validation crops from a strip of each photo
never trained on). A U-Net (depth 3, 16 base features, BatchNorm) maps the
lightness L to the a, b channels of Lab under an L1 loss. The experiment is
the skip-connection ablation:

  python -m unetjax.main --config configs/photos_colorize.py --workdir workdirs/photos_skip
  python -m unetjax.main --config configs/photos_colorize.py --workdir workdirs/photos_noskip --config.model.skip=False

What to expect: `val/psnr_gray` (the crop with its colour removed, 23.64
dB here) is the floor. Ten photos are too few to learn colour that carries
to unseen strips, so val PSNR stays near that floor either way (measured,
300 steps: 23.15 dB with skips, 23.80 without), while train PSNR rises
above its floor (22.4-22.7 against 20.3). With target ab the true L is
passed through, so edges stay sharp even without skips; what the skips
change is where the colour goes (without them it comes in blotches with
grid artefacts from the 8x8 bottleneck, see plots/samples.png).
`--config.task.target=rgb` makes the model rebuild L too, and there the
skips matter: 200 steps gave val PSNR 20.54 dB with skips and 18.07
without (the no-skip output is a blurred, blocky scene).
"""
from unetjax.runtime.config import base_config


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
