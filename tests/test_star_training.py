"""The star target end to end: a tiny DSB-layout run trains, evaluates
objects, draws its figures and predicts objects of unseen images."""
import os

import numpy as np
from test_instance_task import _write_kaggle_layout


def test_star_target_trains_scores_and_predicts_objects(tmp_path,
                                                        monkeypatch):
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from configs import dsb2018  # pylint: disable=g-import-not-at-top
  from unetjax.inference import segment  # pylint: disable=g-import-not-at-top
  from unetjax.runtime import history  # pylint: disable=g-import-not-at-top
  from unetjax.training import train  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("UNETJAX_CACHE_DIR", str(tmp_path / "cache"))
  _write_kaggle_layout(tmp_path / "data")
  config = dsb2018.get_config()
  star = [t for t in dsb2018.get_sweeps()["approaches"]
          if t["task.target"] == "star"][0]
  for key, value in star.items():  # the sweep's own trial
    section, name = key.split(".")
    config[section][name] = value
  config.task.n_rays = 8
  config.data.dir = str(tmp_path / "data")
  config.data.channels = 1
  config.data.val_fraction = config.data.test_fraction = 0.25
  config.model.depth, config.model.features = 2, 8
  config.augment.crop_size = 24  # flips and turns move the ids too
  config.batch_size = config.eval_batch_size = 4
  config.num_steps, config.log_every_steps, config.eval_every_steps = 40, 10, 20
  config.task.min_size = 0
  config.optimizer.learning_rate = 1e-2
  config.schedule.name = "constant"
  workdir = str(tmp_path / "wd")
  final = train.train_and_evaluate(config, workdir)
  for split in ("val", "test"):
    for key in ("challenge_score", "ap50", "f1_50", "object_dice", "dice"):
      assert key in final[split], (split, key)
  losses = [r["train/loss"] for r in history.read(workdir)
            if "train/loss" in r]
  assert losses[-1] < losses[0]
  assert os.path.exists(os.path.join(workdir, "plots", "samples.png"))
  _write_kaggle_layout(tmp_path / "unseen", count=2, size=40, seed=5)
  out = tmp_path / "objects"
  written = segment.predict_files(
      workdir, str(tmp_path / "unseen" / "*" / "images" / "*.png"),
      str(out), checkpoint="latest", instances=True, probabilities=True)
  assert len(written) == 6
  for n in range(2):
    ids = np.asarray(Image.open(out / f"img{n:02d}_instances.png"))
    assert ids.shape == (40, 40)
    found = np.unique(ids)
    np.testing.assert_array_equal(found, np.arange(len(found)))
    mask = np.asarray(Image.open(out / f"img{n:02d}_mask.png"))
    assert set(np.unique(mask)) <= {0, 1}  # the probability's, not argmax
