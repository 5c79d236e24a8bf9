"""`benchmark --predict`: the bookkeeping, the torch port, MONAI's maths."""
import os

import numpy as np
import pytest
from flax import nnx

from unetjax.benchmarks import common
from unetjax.benchmarks import monai_worker as mw
from unetjax.benchmarks import predict as pb
from unetjax.data import DataInfo
from unetjax.inference import inputs, segment
from unetjax.models.unet import UNet
from unetjax.tasks.segmentation import BinarySegmentation

TASK = BinarySegmentation(info=DataInfo("t", 2, 1, ("bg", "fg")))


def _model():
  model = UNet(in_channels=1, num_outputs=1, depth=2, features=4,
               batchnorm=True, rngs=nnx.Rngs(0))
  pb._calibrate_batchnorm(model)  # pylint: disable=protected-access
  return model


def test_summary_takes_medians_and_ratios():
  runs = {"stack": {
      "jax": [dict(megapixels_per_s=x, predict_s=10.0 / x, wall_s=12.0,
                   peak_rss_bytes=600, startup_s=2.0, process_s=11.0)
              for x in (3.0, 1.0, 2.0)],
      "monai": [dict(megapixels_per_s=1.0, predict_s=10.0, wall_s=14.0,
                     peak_rss_bytes=800, startup_s=3.0, process_s=13.0),
                dict(error="boom")]}}
  summary = pb.summarize(runs)
  assert summary["stack"]["jax"]["megapixels_per_s"] == 2.0
  assert summary["stack"]["jax"]["predict_s"] == 5.0
  assert summary["stack"]["speed_ratio"] == 2.0
  assert summary["stack"]["memory_ratio"] == 0.75
  text = pb.table(dict(config="c", tta=False, blend="hann", repeats=3,
                       machine=common.machine(), runs=runs,
                       summary=summary))
  assert "boom" in text and "2.00" in text


def test_inputs_have_the_cases_shapes(tmp_path):
  stack = pb.write_inputs(str(tmp_path), "stack", pages=3, size=40)
  image = pb.write_inputs(str(tmp_path), "image", size=48)
  assert inputs.input_shape(stack) == (3, 1)
  assert pb.megapixels(stack) == 3 * 40 * 40 / 1e6
  assert pb.megapixels(image) == 48 * 48 / 1e6


def test_ported_weights_give_the_torch_twin_the_same_logits():
  torch = pytest.importorskip("torch")
  model = _model()
  spec = mw.torch_spec(model, TASK)
  twin = mw.torch_model(torch, spec, mw.torch_state_dict(model))
  assert set(mw.torch_state_dict(model)) == set(twin.state_dict()) - {
      k for k in twin.state_dict() if k.endswith("num_batches_tracked")}
  image = np.random.default_rng(0).random((2, 32, 32, 1), np.float32)
  ours = np.asarray(model(image))
  with torch.no_grad():
    theirs = twin(torch.from_numpy(image.transpose(0, 3, 1, 2))).numpy()
  np.testing.assert_allclose(ours, theirs.transpose(0, 2, 3, 1), atol=1e-4)


def test_monai_and_unetjax_blend_alike_where_their_tiles_coincide():
  pytest.importorskip("monai")
  import torch  # pylint: disable=g-import-not-at-top
  model = _model()
  twin = mw.torch_model(torch, mw.torch_spec(model, TASK),
                         mw.torch_state_dict(model))
  # 448 = 256 + 192: tiles at 0 and 192 on both axes, in both.
  image = np.random.default_rng(1).random((448, 448, 1), np.float32)
  segmenter = segment.Segmenter(model, TASK, 1, tile_size=256, batch_size=8)
  assert segmenter.plan(448).starts == (0, 192)
  theirs = mw.monai_infer(torch, twin, image, tta=False, blend="hann")
  np.testing.assert_allclose(segmenter.logits(image), theirs, atol=1e-4)


@pytest.mark.skipif(not os.path.isdir("configs"), reason="needs configs/")
def test_the_isbi_model_has_the_issues_parameter_count():
  from unetjax import models  # pylint: disable=g-import-not-at-top
  model, task = pb.build_model("isbi2012")
  assert models.count_params(model) == 2_738_186
  assert mw.torch_spec(model, task)["features"] == 19
