"""The folders, GlaS and ISBI loaders store their examples on disk and
stream them like DSB: the same batches, metrics and parameters as the
same files held in memory (`cache=False`), exact resume, a cache that
follows every changed, added or removed file, and a data folder that is
never written."""
import json
import os
import signal

import numpy as np
import pytest
import tifffile
from conftest import checkpoint_leaves, tiny_cells_config
from PIL import Image

from unetjax import data as datasets
from unetjax import tasks
from unetjax.data import folders, glas, input_pipeline, isbi2012, stored
from unetjax.runtime.errors import ConfigError, DataError, TrainingStopped

SIZES = [(40, 52), (36, 36), (64, 40), (33, 47), (48, 48), (70, 60),
         (40, 40), (52, 36)]


def _write_folders(root):
  """8 RGB images of their own sizes with instance masks: image 1 has
  R = G = B (one channel on disk, served as RGB), image 2 is a 16-bit
  TIFF whose values are not 8-bit ones (the split is then float32), one
  object has id 300 (uint16 on disk)."""
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(root, "images"))
  os.makedirs(os.path.join(root, "masks"))
  for i, (h, w) in enumerate(SIZES):
    image = rng.integers(0, 150, (h, w, 3), dtype=np.uint8)
    if i == 1:
      image[..., 1] = image[..., 2] = image[..., 0]
    ids = np.zeros((h, w), np.uint16)
    for k, (y, x) in enumerate([(2, 3), (h // 2, w // 2), (h - 10, 4)]):
      ids[y:y + 7, x:x + 6] = 300 if (i, k) == (3, 1) else k + 1
    image[ids > 0] += 100
    if i == 2:
      tifffile.imwrite(os.path.join(root, "images", f"{i:02d}.tif"),
                       image.astype(np.uint16) * 257 + 3)
    else:
      Image.fromarray(image).save(os.path.join(root, "images", f"{i:02d}.png"))
    Image.fromarray(ids).save(os.path.join(root, "masks", f"{i:02d}.png"))
  return root


def _snapshot(root):
  """{path: (size, mtime)} of everything under root."""
  found = {}
  for folder, _, files in os.walk(root):
    for name in files:
      info = os.stat(os.path.join(folder, name))
      found[os.path.join(folder, name)] = (info.st_size, info.st_mtime_ns)
  return found


def _config(data_dir, cache, **overrides):
  config = tiny_cells_config()
  config.data = {"name": "folders", "dir": data_dir, "instances": True,
                 "val_fraction": 0.25, "train_examples": 0, "cache": cache,
                 "normalize": "percentile", "percentiles": (1.0, 99.8)}
  config.task = {"name": "instances", "target": "weight_map", "min_size": 0,
                 "class_weights": ()}
  config.augment.crop_size = 32
  config.augment.flip = config.augment.rot90 = True
  config.augment.elastic = True
  config.batch_size = config.eval_batch_size = 2
  config.num_steps = 6
  config.log_every_steps = 2
  config.eval_every_steps = 3
  config.num_sample_images = 1
  config.update(overrides)
  return config


def _prepared(config):
  """The dataset as training builds it: the task's targets and maps."""
  dataset = datasets.build(config)
  task = tasks.build(config, dataset.info)
  return dataset.transformed(task.prepare)


def test_a_folders_set_of_varied_sizes_streams_the_in_memory_batches(
    tmp_path):
  root = _write_folders(str(tmp_path / "data"))
  before = _snapshot(root)
  on_disk = _prepared(_config(root, True))
  in_memory = _prepared(_config(root, False))
  assert on_disk.info == in_memory.info and on_disk.info.in_channels == 3
  train, val = on_disk.split("train"), on_disk.split("val")
  assert isinstance(train, stored.StoredSplit)
  assert not isinstance(in_memory.split("train"), stored.StoredSplit)
  assert train.image_dtype == np.float32  # the 16-bit image among them
  assert train.ids == tuple(f"{i:02d}" for i in range(6))
  assert train.sizes.tolist() == [list(s) for s in SIZES[:6]]
  assert np.load(os.path.join(train.folders[3], "label.npy")).dtype == (
      np.uint16)
  assert np.load(train.image_path(1)).shape == (36, 36, 1)  # R = G = B
  assert set(train.map_dtypes) == {"weight"}
  assert set(val.map_dtypes) == {"weight", "instances"}
  setting = {"normalize": "percentile", "percentiles": [1.0, 99.8]}
  kwargs = dict(batch_size=2, seed=3, start_step=0, normalization=setting,
                augment_config=_config(root, True).augment)
  streamed = input_pipeline.train_batches(train, **kwargs)
  held = input_pipeline.train_batches(in_memory.split("train"), **kwargs)
  for _ in range(7):  # past an epoch of 6 examples
    a, b = next(streamed), next(held)
    assert sorted(a) == sorted(b)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  for by_size in (False, True):
    got = list(input_pipeline.eval_batches(
        val, batch_size=2, by_size=by_size, normalization=setting))
    expected = list(input_pipeline.eval_batches(
        in_memory.split("val"), batch_size=2, by_size=by_size,
        normalization=setting))
    assert len(got) == len(expected) == 1
    assert sorted(got[0]) == sorted(expected[0])
    for key in got[0]:
      np.testing.assert_allclose(got[0][key], expected[0][key], rtol=1e-6,
                                 atol=1e-6, err_msg=key)
  assert _snapshot(root) == before  # the data folder is never written


def _evaluations(workdir):
  """{step: {val/...: value}} of history.jsonl."""
  found = {}
  with open(os.path.join(workdir, "history.jsonl"), encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      values = {k: v for k, v in row.items() if k.startswith("val/")}
      if values:
        found.setdefault(row["step"], {}).update(values)
  return found


def test_a_stopped_stored_folders_run_ends_as_the_in_memory_run(
    tmp_path, monkeypatch):
  """Stored, stopped after step 4 and resumed: the parameters of the
  uninterrupted in-memory run, bit for bit, and its validation scores."""
  from unetjax.training import train  # pylint: disable=g-import-not-at-top
  root = _write_folders(str(tmp_path / "data"))
  reference = str(tmp_path / "in_memory")
  train.train_and_evaluate(_config(root, False), reference)
  workdir = str(tmp_path / "stored")
  real_batches = train.input_pipeline.train_batches

  def interrupted(split, *args, start_step, **kwargs):
    assert isinstance(split, stored.StoredSplit)
    for step, batch in enumerate(real_batches(split, *args,
                                              start_step=start_step,
                                              **kwargs), start_step + 1):
      if step == 4:
        os.kill(os.getpid(), signal.SIGINT)
      yield batch
  monkeypatch.setattr(train.input_pipeline, "train_batches", interrupted)
  with pytest.raises(TrainingStopped, match="SIGINT after step 4"):
    train.train_and_evaluate(_config(root, True), workdir)
  monkeypatch.undo()
  train.train_and_evaluate(_config(root, True), workdir)
  step, got = checkpoint_leaves(workdir)
  ref_step, expected = checkpoint_leaves(reference)
  assert step == ref_step == 6
  for a, b in zip(got, expected, strict=True):
    np.testing.assert_array_equal(a, b)
  scores, ref_scores = _evaluations(workdir), _evaluations(reference)
  assert sorted(scores) == sorted(ref_scores) == [3, 6]
  for at in (3, 6):
    assert sorted(scores[at]) == sorted(ref_scores[at])
    for key, value in ref_scores[at].items():  # NaN where none matched
      np.testing.assert_allclose(scores[at][key], value, rtol=1e-5,
                                 atol=1e-6, err_msg=key)
  assert np.isfinite(scores[6]["val/loss"])


def _examples(cache_root, dataset):
  return set(os.listdir(os.path.join(cache_root, dataset, "examples")))


def test_the_folders_cache_follows_changed_added_and_removed_files(
    tmp_path, monkeypatch):
  monkeypatch.setenv("UNETJAX_CACHE_DIR", str(tmp_path / "cache"))
  root = _write_folders(str(tmp_path / "data"))
  first = folders.build(dir=root, instances=True, val_fraction=0.25)
  stored_first = _examples(tmp_path / "cache", "folders")
  assert len(stored_first) == 8
  train = first.split("train")
  before = _snapshot(root)
  # Unchanged files: the same examples, nothing written.
  again = folders.build(dir=root, instances=True, val_fraction=0.25)
  assert again.split("train").folders == train.folders
  assert _examples(tmp_path / "cache", "folders") == stored_first
  # A mask edited in place (same size): read again.
  mask_path = os.path.join(root, "masks", "00.png")
  ids = np.asarray(Image.open(mask_path))
  ids = np.where(ids == 1, 5, ids).astype(np.uint16)
  Image.fromarray(ids).save(mask_path)
  later = os.stat(mask_path).st_mtime_ns + 10 ** 9
  os.utime(mask_path, ns=(later, later))
  edited = folders.build(dir=root, instances=True, val_fraction=0.25)
  labels = edited.split("train").read(0)["label"]
  np.testing.assert_array_equal(labels, ids)
  assert edited.split("train").folders[1:] == train.folders[1:]
  assert edited.split("train").folders[0] != train.folders[0]
  # A pair added, a pair removed.
  for sub, name in (("images", "08.png"), ("masks", "08.png")):
    os.symlink(os.path.join(root, sub, "05.png"),
               os.path.join(root, sub, name))
  os.remove(os.path.join(root, "images", "04.png"))
  os.remove(os.path.join(root, "masks", "04.png"))
  changed = folders.build(dir=root, instances=True, val_fraction=0.25)
  ids_now = changed.split("train").ids + changed.split("val").ids
  assert ids_now == ("00", "01", "02", "03", "05", "06", "07", "08")
  # "08" links "05"'s files: one stored example for both.
  assert changed.split("val").folders[1] == changed.split("train").folders[4]
  # Only the edits touched the data folder, never the loader.
  after = _snapshot(root)
  assert {k: v for k, v in after.items() if "04" not in k and "08" not in k
          and "masks/00" not in k} == {
              k: v for k, v in before.items() if "04" not in k
              and "masks/00" not in k}


def test_a_bad_mask_found_while_storing_is_raised_as_in_memory(tmp_path):
  root = _write_folders(str(tmp_path / "data"))
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(
      os.path.join(root, "masks", "06.png"))
  for cache in (True, False):
    with pytest.raises(DataError, match=r"masks/06.png: mask of size 8x8 "
                       r"for an image of size 40x40"):
      folders.build(dir=root, instances=True, val_fraction=0.25, cache=cache)


def test_isbi_slices_are_stored_and_follow_a_changed_label_stack(
    tmp_path, monkeypatch):
  monkeypatch.setenv("UNETJAX_CACHE_DIR", str(tmp_path / "cache"))
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 16, 16), dtype=np.uint8)
  labels = np.where(rng.random((5, 16, 16)) < 0.7, 255, 0).astype(np.uint8)
  tifffile.imwrite(tmp_path / "train-volume.tif", images)
  tifffile.imwrite(tmp_path / "train-labels.tif", labels)
  data = isbi2012.build(dir=str(tmp_path), val_slices=(1,))
  val = data.split("val")
  assert isinstance(val, stored.StoredSplit) and val.ids == ("slice_01",)
  np.testing.assert_array_equal(val.read(0)["image"][..., 0], images[1])
  assert len(_examples(tmp_path / "cache", "isbi2012")) == 5
  tifffile.imwrite(tmp_path / "train-labels.tif", 255 - labels)
  later = os.stat(tmp_path / "train-labels.tif").st_mtime_ns + 10 ** 9
  os.utime(tmp_path / "train-labels.tif", ns=(later, later))
  again = isbi2012.build(dir=str(tmp_path), val_slices=(1,)).split("val")
  np.testing.assert_array_equal(again.read(0)["label"], 1 - labels[1] // 255)
  assert len(_examples(tmp_path / "cache", "isbi2012")) == 10


def test_glas_stores_only_the_split_it_is_asked_for(tmp_path, monkeypatch):
  monkeypatch.setenv("UNETJAX_CACHE_DIR", str(tmp_path / "cache"))
  rng = np.random.default_rng(0)
  for part, count in (("train", 2), ("testA", 2), ("testB", 1)):
    for n in range(1, count + 1):
      Image.fromarray(rng.integers(0, 256, (20 + n, 24, 3), np.uint8)).save(
          tmp_path / f"{part}_{n}.bmp")
      anno = np.zeros((20 + n, 24), np.uint8)
      anno[2:9, 3:9] = 1
      Image.fromarray(anno).save(tmp_path / f"{part}_{n}_anno.bmp")
  test = glas.build(dir=str(tmp_path)).split("test")
  assert isinstance(test, stored.StoredSplit) and test.ids == ("testB_1",)
  assert len(_examples(tmp_path / "cache", "glas")) == 1


def test_a_cache_folder_that_cannot_be_written_says_what_to_do(
    tmp_path, monkeypatch):
  root = _write_folders(str(tmp_path / "data"))
  blocked = tmp_path / "blocked"
  blocked.write_bytes(b"a file where the cache folder would be")
  monkeypatch.setenv("UNETJAX_CACHE_DIR", str(blocked))
  with pytest.raises(DataError, match=r"blocked/folders/examples/\w+: cannot "
                     r"store an example there .*UNETJAX_CACHE_DIR.*"
                     r"data.cache=False"):
    folders.build(dir=root, instances=True, val_fraction=0.25)
  assert folders.build(dir=root, instances=True, val_fraction=0.25,
                       cache=False).info.in_channels == 3


def test_a_broken_link_in_the_data_folder_is_named(tmp_path):
  root = _write_folders(str(tmp_path / "data"))
  os.symlink(str(tmp_path / "gone.png"), os.path.join(root, "images",
                                                       "09.png"))
  os.symlink(str(tmp_path / "gone.png"), os.path.join(root, "masks",
                                                       "09.png"))
  with pytest.raises(DataError, match=r"images/09.png: no such file"):
    folders.build(dir=root, instances=True, val_fraction=0.25)


def test_the_otsu_baseline_scores_a_stored_split_as_the_in_memory_one(
    tmp_path):
  from unetjax.tasks import baselines  # pylint: disable=g-import-not-at-top
  root = _write_folders(str(tmp_path / "data"))
  scores = [baselines.otsu_dice(folders.build(
      dir=root, instances=True, val_fraction=0.25, cache=cache).split("train"))
            for cache in (True, False)]
  assert scores[0] == scores[1]
  assert 0 < scores[0]["dice"] < 1


def test_the_benchmarks_fixed_batch_reads_a_stored_split_of_varied_sizes(
    tmp_path):
  """`unetjax-benchmark --input fixed` on a stored split: the first
  examples' top-left crops, as the in-memory split gives them."""
  from unetjax.benchmarks import training  # pylint: disable=g-import-not-at-top
  root = _write_folders(str(tmp_path / "data"))
  stored = datasets.build(_config(root, True)).split("train")
  in_memory = datasets.build(_config(root, False)).split("train")
  fixed = training.fixed_batch(stored, 2, crop_size=32)
  expected = training.fixed_batch(in_memory, 2, crop_size=32)
  assert fixed["image"].shape[:3] == (2, 32, 32)
  for key in ("image", "label"):
    np.testing.assert_array_equal(fixed[key], expected[key])
  with pytest.raises(ConfigError, match="of varying sizes"):
    training.fixed_batch(stored, 2, crop_size=0)
