"""ISBI-2012 with a dilated-bottleneck U-Net (~2.7M params), addition on.

The comparison of the dilated U-Net papers: the bottleneck's two convs are
replaced by 4 cascaded 3x3 convs with dilation 1, 2, 4, 8 whose outputs are
summed (`addition`), widening the receptive field without more
down-sampling. Features 16, 32, 64, 128 and 224 at the bottleneck, with
BatchNorm, give 2,654,737 parameters, close to the standard U-Net of
configs/isbi2012.py (2,738,186), trained the same way.

Addition off (only the last dilated conv's output goes on):
  python -m unetjax.main --config configs/isbi2012_dilated.py \\
      --config.data.dir=../shared/data/isbi2012 --workdir workdirs/dil \\
      --config.model.addition=False

Expect about the val Dice of the standard U-Net (>= 0.95 given the same
time); docs/microscopy.md has the short-run table.
"""
from configs import isbi2012


def get_config():
  config = isbi2012.get_config()
  config.model = dict(name="unet", depth=4, features=(16, 32, 64, 128, 224),
                      batchnorm=True, dilate=True, dilate_rate=2,
                      dilate_depth=4, addition=True)
  return config


def get_sweeps():
  """Addition on and off; the four-model table is isbi2012.py's `models`."""
  return {"addition": [{"trial": "addition", "model.addition": True},
                       {"trial": "no_addition", "model.addition": False}]}


def get_sweep_columns():
  return {"addition": isbi2012.get_sweep_columns()["models"]}
