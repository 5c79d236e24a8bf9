"""Training on a stored (streamed) DSB-layout set of images of several
sizes: a run stopped and resumed ends bit-identical to the uninterrupted
one; evaluate reads only the split it scores; predict --instances needs
neither the data folder nor its cache."""
import os
import shutil
import signal

import numpy as np
import pytest
from conftest import checkpoint_leaves
from PIL import Image

from unetjax import data as datasets
from unetjax.data import stored
from unetjax.runtime.errors import TrainingStopped

SIZES = [(40, 52), (36, 36), (64, 40), (33, 47), (48, 48), (70, 60),
         (40, 40), (52, 36)]


def _write_dsb(root):
  rng = np.random.default_rng(0)
  for i, (h, w) in enumerate(SIZES):
    folder = os.path.join(root, "stage1_train", f"id{i}")
    os.makedirs(os.path.join(folder, "images"))
    os.makedirs(os.path.join(folder, "masks"))
    image = rng.integers(0, 60, (h, w), dtype=np.uint8)
    for k, (y, x) in enumerate([(2, 3), (h // 2, w // 2), (h - 10, 4)]):
      mask = np.zeros((h, w), np.uint8)
      mask[y:y + 7, x:x + 6] = 255
      image[mask > 0] += 150
      Image.fromarray(mask).save(os.path.join(folder, "masks", f"m{k}.png"))
    Image.fromarray(image).save(os.path.join(folder, "images", f"id{i}.png"))


def _config(data_dir, **overrides):
  from configs import dsb2018  # pylint: disable=g-import-not-at-top
  config = dsb2018.get_config()
  config.model.depth = 2
  config.model.features = 4
  config.data.dir = data_dir
  config.data.channels = 1
  config.data.val_fraction = 0.25
  config.data.test_fraction = 0.125
  config.data.train_max_side = 64  # a 70x60 training image: 2 pieces
  config.data.normalize = "percentile"
  config.data.percentiles = (1.0, 99.8)
  config.augment.crop_size = 32
  config.batch_size = config.eval_batch_size = 2
  config.num_steps = 8
  config.log_every_steps = 2
  config.eval_every_steps = 4
  config.num_sample_images = 1
  config.task.min_size = 0
  config.schedule.name = "constant"
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def dsb_run(tmp_path_factory):
  """(data dir, cache dir, workdir of an uninterrupted 8-step run)."""
  from unetjax.training import train  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("streaming")
  os.environ["UNETJAX_CACHE_DIR"] = str(root / "cache")
  _write_dsb(str(root / "data"))
  train.train_and_evaluate(_config(str(root / "data")), str(root / "ref"))
  return str(root / "data"), str(root / "cache"), str(root / "ref")


def test_the_split_is_stored_per_example_and_streamed(dsb_run):
  data_dir, cache, _ = dsb_run
  dataset = datasets.build(_config(data_dir))
  train = dataset.split("train")
  assert isinstance(train, stored.StoredSplit)
  whole = {i.split("_")[0] for i in train.ids}
  assert len(whole) == 5  # of 8: 1 test, 2 val
  assert len(train) == 5 + ("id5" in whole)  # 70x60: two 35x60 pieces
  assert sorted(map(tuple, train.sizes.tolist())) == sorted(
      [SIZES[int(i[2:])] for i in whole if i != "id5"]
      + [(35, 60)] * 2 * ("id5" in whole))
  assert len(os.listdir(os.path.join(cache, "dsb2018", "examples"))) == 8


def test_a_stopped_streaming_run_resumes_bit_identical(dsb_run, tmp_path,
                                                       monkeypatch):
  from unetjax.training import train  # pylint: disable=g-import-not-at-top
  data_dir, _, reference = dsb_run
  workdir = str(tmp_path / "wd")
  real_batches = train.input_pipeline.train_batches

  def interrupted(*args, start_step, **kwargs):
    for step, batch in enumerate(real_batches(*args, start_step=start_step,
                                              **kwargs), start_step + 1):
      if step == 6:
        os.kill(os.getpid(), signal.SIGINT)
      yield batch
  monkeypatch.setattr(train.input_pipeline, "train_batches", interrupted)
  with pytest.raises(TrainingStopped, match="SIGINT after step 6"):
    train.train_and_evaluate(_config(data_dir), workdir)
  monkeypatch.undo()
  train.train_and_evaluate(_config(data_dir), workdir)
  step, got = checkpoint_leaves(workdir)
  ref_step, expected = checkpoint_leaves(reference)
  assert step == ref_step == 8
  for a, b in zip(got, expected, strict=True):
    np.testing.assert_array_equal(a, b)


def test_evaluate_reads_only_the_split_it_scores(dsb_run, tmp_path,
                                                 monkeypatch):
  from unetjax import evaluate  # pylint: disable=g-import-not-at-top
  _, _, reference = dsb_run
  read = []
  real_split = datasets.Dataset.split
  monkeypatch.setattr(datasets.Dataset, "split",
                      lambda self, name: read.append(name)
                      or real_split(self, name))
  report = evaluate.evaluate_workdir(reference, checkpoint="latest",
                                     split="test", out=str(tmp_path / "e"))
  assert report["num_examples"] == 1
  assert set(read) == {"test"}


def test_predict_instances_reads_no_training_data(dsb_run, tmp_path,
                                                  monkeypatch):
  from unetjax.inference import segment  # pylint: disable=g-import-not-at-top
  data_dir, cache, reference = dsb_run
  image = os.path.join(data_dir, "stage1_train", "id5", "images", "id5.png")
  shutil.copy(image, tmp_path / "in.png")
  moved = str(tmp_path / "gone")
  shutil.move(data_dir, moved + "_data")
  shutil.move(cache, moved + "_cache")
  try:
    def no_data(*args, **kwargs):
      raise AssertionError("training data was read")
    monkeypatch.setattr(datasets, "build", no_data)
    monkeypatch.setattr(stored.StoredSplit, "read", no_data)
    written = segment.predict_files(reference, str(tmp_path / "in.png"),
                                    str(tmp_path / "out"), checkpoint="latest",
                                    tile_size=32, instances=True)
  finally:
    shutil.move(moved + "_data", data_dir)
    shutil.move(moved + "_cache", cache)
  assert any(path.endswith(".png") and "instances" in path
             for path in written), written
