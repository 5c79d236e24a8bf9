"""Colorization task, the bundled-photos dataset and the skip ablation's
parameter count."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from skimage import color as skcolor

from unetjax import models, tasks
from unetjax.data import DataInfo, sample_photos
from unetjax.models.unet import UNet
from unetjax.runtime.errors import ConfigError
from unetjax.tasks.colorization import AB_SCALE, Colorization

_RGB_INFO = DataInfo(name="photos", num_classes=1, in_channels=3,
                     class_names=("photo",))


@pytest.fixture(name="rgb")
def fixture_rgb():
  return np.random.default_rng(0).uniform(0.1, 0.9, (2, 4, 4, 3)).astype(
      np.float32)


def _psnr(a, b):
  return 10 * np.log10(1 / np.mean((a - b) ** 2, axis=(1, 2, 3)))


def test_input_is_lightness_and_model_gets_one_channel(rgb):
  task = Colorization(info=_RGB_INFO)
  assert tasks.model_in_channels(task, _RGB_INFO) == 1
  np.testing.assert_allclose(task.inputs({"image": rgb}),
                             skcolor.rgb2lab(rgb)[..., :1] / 100, atol=1e-4)


def test_rgb_target_l2_loss_and_psnr_by_hand(rgb):
  task = Colorization(info=_RGB_INFO, target="rgb", loss="l2")
  delta = np.zeros_like(rgb)
  delta[0] = 0.05
  delta[1, :2] = -0.1
  loss, outputs = task.loss_and_outputs(jnp.asarray(rgb + delta),
                                        {"image": rgb})
  assert loss == pytest.approx(np.mean(delta ** 2), rel=1e-5)
  # MSE 0.0025 -> 26.02 dB; MSE 0.005 -> 23.01 dB.
  np.testing.assert_allclose(outputs["psnr"], [26.0206, 23.0103], atol=1e-3)
  colourless = skcolor.lab2rgb(skcolor.rgb2lab(rgb) * [1, 0, 0])
  np.testing.assert_allclose(outputs["psnr_gray"], _psnr(colourless, rgb),
                             atol=1e-3)


def test_ab_target_l1_loss_and_psnr(rgb):
  task = Colorization(info=_RGB_INFO, target="ab", loss="l1")
  assert task.num_outputs == 2
  ab = skcolor.rgb2lab(rgb)[..., 1:] / AB_SCALE
  loss, outputs = task.loss_and_outputs(jnp.asarray(ab + 0.1),
                                        {"image": rgb})
  assert loss == pytest.approx(0.1, rel=1e-3)
  shifted = np.concatenate([skcolor.rgb2lab(rgb)[..., :1],
                            (ab + 0.1) * AB_SCALE], -1)
  np.testing.assert_allclose(
      outputs["psnr"], _psnr(np.clip(skcolor.lab2rgb(shifted), 0, 1), rgb),
      atol=2e-2)
  _, exact = task.loss_and_outputs(jnp.asarray(ab), {"image": rgb})
  assert exact["psnr"].min() > 60  # only float32 round-trip error left


def test_rejects_gray_data_and_unknown_options():
  gray = DataInfo(name="cells", num_classes=2, in_channels=1,
                  class_names=("a", "b"))
  with pytest.raises(ConfigError, match="needs RGB images"):
    Colorization(info=gray)
  with pytest.raises(ConfigError, match="task.target='hsv'"):
    Colorization(info=_RGB_INFO, target="hsv")
  with pytest.raises(ConfigError, match="task.loss='l3'"):
    Colorization(info=_RGB_INFO, loss="l3")


def test_skip_connections_add_the_decoder_input_weights():
  def count(skip):
    return models.count_params(nnx.eval_shape(lambda: UNet(
        in_channels=1, num_outputs=2, depth=3, features=4, skip=skip,
        batchnorm=True, rngs=nnx.Rngs(0))))

  # Each decoder level's first 3x3 conv reads 2w channels instead of w:
  # 9 * w * w more weights at widths w = 4, 8, 16 (its bias and BN depend
  # only on its output width).
  assert count(True) - count(False) == 9 * (4 ** 2 + 8 ** 2 + 16 ** 2)


def test_sample_photos_val_crops_come_from_an_unseen_strip():
  dataset = sample_photos.build(crop_size=16, image_scale=64,
                                val_fraction=0.25, num_train=20, num_val=10)
  train, val = dataset.split("train"), dataset.split("val")
  assert train.images.shape == (20, 16, 16, 3)
  assert val.images.dtype == np.uint8 and len(val) == 10
  widths = [photo.shape[1] for photo in sample_photos.photos(64)]
  for split, in_val in ((train, False), (val, True)):
    for name in split.ids:
      index, left = int(name.split("_")[1][5:]), int(name.split("_")[3])
      boundary = round(widths[index] * 0.75)
      assert (left >= boundary) if in_val else (left + 16 <= boundary)
  with pytest.raises(ConfigError, match="data.crop_size=17"):
    sample_photos.build(crop_size=17, image_scale=64, val_fraction=0.25)


def test_psnr_is_averaged_per_image_over_the_set(rgb):
  task = Colorization(info=_RGB_INFO, target="rgb", loss="l2")
  error = np.array([0.05, 0.02], np.float32)[:, None, None, None]
  _, outputs = task.loss_and_outputs(jnp.asarray(rgb + error),
                                     {"image": rgb, "mask": jnp.ones(2)})
  both = task.metrics_class.single_from_model_output(**outputs).compute()
  assert both["psnr"] == pytest.approx((26.0206 + 33.9794) / 2, abs=1e-3)
  outputs["mask"] = jnp.array([1.0, 0.0])  # eval padding never counts
  first = task.metrics_class.single_from_model_output(**outputs).compute()
  assert first["psnr"] == pytest.approx(26.0206, abs=1e-3)
