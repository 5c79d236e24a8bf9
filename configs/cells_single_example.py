"""How far one training example goes: a U-Net trained on a single image.

Reproduces the single-example experiment: the embedded cells data with
`data.train_examples=1` (the first 64x64 training image, seen again and
again with flips and turns), 40,000 steps of Adam 1e-3, validated on 64
unseen images. The architecture comes from a JSON spec file
(configs/u_net.json, format in unetjax/models/spec.py); hand over another
with --config.model.spec=path/to/u_net.json.

Plots: plots/learning_curves.png (train and val pixel accuracy, loss, Dice)
and plots/learning_curves_closeup.png (the first 500 steps). Expect train
accuracy near 1 within a few hundred steps and val accuracy levelling off
well below it (about 0.9): one image teaches the cells' look, not their
variety. 40,000 steps take hours on a CPU; --config.num_steps=2000 shows
the shape of the curves.

  python -m unetjax.main --config configs/cells_single_example.py \\
      --workdir workdirs/single
"""
import os

from unetjax.runtime.config import base_config

SPEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "u_net.json")


def get_config():
  config = base_config()
  config.model = dict(name="unet", spec=SPEC)
  config.data = dict(name="cells", train_examples=1, image_size=64,
                     num_train=1, num_val=64, num_test=64, seed=0)
  config.task = dict(name="binary_segmentation", dice_weight=0.0,
                     closeup_steps=500)
  config.optimizer.learning_rate = 1e-3
  config.augment.flip = True
  config.augment.rot90 = True
  config.batch_size = 8
  config.eval_batch_size = 32
  config.num_steps = 40_000
  config.log_every_steps = 10
  config.eval_every_steps = 50
  config.best_metric = "val/accuracy"
  config.best_mode = "max"
  return config
