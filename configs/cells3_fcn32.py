"""Embedded stand-in for pets_fcn32: FCN-32 (ResNet-18) on 3-class cells.

Needs no download. Same data and task as configs/cells3_unet.py, but the
model is FCN-32s: a ResNet-18 backbone (base width 16, BatchNorm, trained
from scratch), a 1x1 class head at stride 32 and a 64x64 stride-32
transposed conv initialised to bilinear. At 64x64 the class map is 2x2
before up-sampling, so expect blobs: a val mean IoU well below the U-Net's
(the border class nearly absent), the architecture comparison of the FCN
and U-Net papers in miniature. Measured with --config.num_steps=300: val
mean IoU 0.359 (border IoU 0.002) against the U-Net's 0.877, 80 s of
training on 2 heavily shared CPU cores.

  python -m unetjax.main --config configs/cells3_fcn32.py --workdir workdirs/cells3_fcn32
"""
from configs import cells3_unet


def get_config():
  config = cells3_unet.get_config()
  config.model = dict(name="fcn32", depth=18, width=16,
                      upsampling="transpose", backbone_checkpoint="")
  return config
