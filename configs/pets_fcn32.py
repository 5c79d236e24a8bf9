"""FCN-32s (ResNet-18 backbone) on Oxford-IIIT Pet trimaps at 224x224.

The FCN paper's coarsest variant: ResNet-18 features at stride 32 (7x7 at
224), a 1x1 class head and a learned 64x64 stride-32 transposed conv
initialised to bilinear (`--config.model.upsampling=bilinear` fixes it).
Trained from scratch here; `--config.model.backbone_checkpoint=WORKDIR`
starts from a ResNet-18 this package trained as a classifier. Same task and
optimizer as configs/pets_unet.py. Not run here (no download); expect
blob-like masks and a mean IoU below the U-Net's, lost mostly on the thin
border class, which a 32-pixel grid cannot draw (on the embedded cells the
gap was 0.36 against 0.88). Needs the TFDS download once;
configs/cells3_fcn32.py runs without it.

  python -m unetjax.main --config configs/pets_fcn32.py --workdir workdirs/pets_fcn32

Sweeps: `adam_lr` (Adam at 1e-3 and 1e-4 for the FCN) and `unet_vs_fcn32`
(the same trials as configs/pets_unet.py's, so either file runs it).
"""
from configs import pets_unet


def get_config():
  config = pets_unet.get_config()
  config.model = dict(name="fcn32", depth=18, width=64,
                      upsampling="transpose", backbone_checkpoint="")
  config.data.image_size = 224
  return config


def get_sweeps():
  """Named sweeps for `python -m unetjax.sweep --sweep NAME`."""
  return {
      "adam_lr": pets_unet.get_sweeps()["adam_lr"],
      "unet_vs_fcn32": [{"trial": "unet", "config": "pets_unet.py"},
                        {"trial": "fcn32"}],
  }


def get_sweep_columns():
  return pets_unet.get_sweep_columns()
