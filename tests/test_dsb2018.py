"""The 2018 Data Science Bowl loader on small Kaggle-layout folders."""
import os

import ml_collections
import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from unetjax import data as datasets
from unetjax.data import DataInfo, Split, dsb2018
from unetjax.runtime.errors import ConfigError, DataError

DSB_DIR = os.environ.get(
    "UNETJAX_DSB2018_DIR",
    os.path.join(REPO, "..", "shared", "data", "dsb2018"))


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
  """The instance-map cache of every test here goes to its own folder."""
  monkeypatch.setenv("UNETJAX_CACHE_DIR", str(tmp_path / "cache"))
  return tmp_path / "cache" / "dsb2018"


def _square(shape, y0, y1, x0, x1):
  mask = np.zeros(shape, np.uint8)
  mask[y0:y1, x0:x1] = 255
  return mask


def _write(root, image_id, image, masks, mode=None):
  """One Kaggle folder: images/<id>.png and masks/m<k>.png."""
  folder = os.path.join(root, "stage1_train", image_id)
  os.makedirs(os.path.join(folder, "images"), exist_ok=True)
  os.makedirs(os.path.join(folder, "masks"), exist_ok=True)
  Image.fromarray(image, mode).save(
      os.path.join(folder, "images", f"{image_id}.png"))
  for k, mask in enumerate(masks):
    Image.fromarray(mask).save(os.path.join(folder, "masks", f"m{k}.png"))
  return folder


def _rgba_gray(shape, seed=0):
  gray = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
  return np.dstack([gray, gray, gray, np.full(shape, 255, np.uint8)]), gray


def _dataset(root, count, shape=(12, 16)):
  for i in range(count):
    image, _ = _rgba_gray(shape, seed=i)
    _write(root, f"id{i:02d}", image, [_square(shape, 1, 4, 1, 5)])


def test_masks_combine_into_an_instance_map_pixel_by_pixel(tmp_path):
  shape = (6, 8)
  image, gray = _rgba_gray(shape)
  masks = [_square(shape, 0, 2, 0, 3), _square(shape, 2, 4, 0, 3),
           _square(shape, 3, 6, 5, 8)]  # the first two touch
  _write(str(tmp_path), "a", image, masks)
  for i in range(1, 4):
    _dataset_image, _ = _rgba_gray(shape, seed=i)
    _write(str(tmp_path), f"b{i}", _dataset_image,
           [_square(shape, 1, 2, 1, 2)])
  data = dsb2018.build(dir=str(tmp_path), val_fraction=0.25,
                       test_fraction=0.25)
  assert data.info == DataInfo("dsb2018", 2, 1, ("background", "nucleus"),
                               instances=True)
  split = next(data.split(s) for s in ("train", "val", "test")
               if "a" in data.split(s).ids)
  i = split.ids.index("a")
  expected = np.array([[1, 1, 1, 0, 0, 0, 0, 0],
                       [1, 1, 1, 0, 0, 0, 0, 0],
                       [2, 2, 2, 0, 0, 0, 0, 0],
                       [2, 2, 2, 0, 0, 3, 3, 3],
                       [0, 0, 0, 0, 0, 3, 3, 3],
                       [0, 0, 0, 0, 0, 3, 3, 3]])
  np.testing.assert_array_equal(split.labels[i], expected)
  assert split.labels.dtype == np.int32 and split.images.dtype == np.uint8
  np.testing.assert_array_equal(split.images[i, ..., 0], gray)
  assert sorted(sum((data.split(s).ids for s in ("train", "val", "test")),
                    ())) == ["a", "b1", "b2", "b3"]


def test_registered_and_accepts_the_stage1_train_folder_itself(tmp_path):
  _dataset(str(tmp_path), 5)
  config = ml_collections.ConfigDict({"data": {
      "name": "dsb2018", "dir": str(tmp_path / "stage1_train"),
      "val_fraction": 0.2, "test_fraction": 0.2}})
  data = datasets.build(config)
  assert [len(data.split(s)) for s in ("train", "val", "test")] == [3, 1, 1]


def test_gray_from_colour_is_luminance_and_channels_3_repeats_gray(tmp_path):
  shape = (4, 4)
  rgb = np.zeros(shape + (3,), np.uint8)
  rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 10
  folder = _write(str(tmp_path), "c", rgb, [_square(shape, 0, 1, 0, 1)])
  image_path = os.path.join(folder, "images", "c.png")
  masks = [os.path.join(folder, "masks", "m0.png")]
  gray, _ = dsb2018.load_example(image_path, masks, channels=1)
  # 0.299 * 200 + 0.587 * 100 + 0.114 * 10 = 119.64
  assert gray.shape == (4, 4, 1) and (gray == 120).all()
  colour, _ = dsb2018.load_example(image_path, masks, channels=3)
  np.testing.assert_array_equal(colour, rgb)
  image, plain = _rgba_gray(shape)
  folder = _write(str(tmp_path), "g", plain, [_square(shape, 0, 1, 0, 1)])
  repeated, _ = dsb2018.load_example(
      os.path.join(folder, "images", "g.png"),
      [os.path.join(folder, "masks", "m0.png")], channels=3)
  np.testing.assert_array_equal(repeated, np.dstack([plain] * 3))


def test_overlaps_are_an_error_naming_the_pixels_or_go_to_the_later_mask(
    tmp_path):
  shape = (5, 5)
  image, _ = _rgba_gray(shape)
  folder = _write(str(tmp_path), "o", image, [_square(shape, 0, 3, 0, 3),
                                              _square(shape, 2, 5, 2, 5)])
  paths = (os.path.join(folder, "images", "o.png"),
           [os.path.join(folder, "masks", f"m{k}.png") for k in (0, 1)])
  with pytest.raises(DataError, match=r"m1.png: overlaps m0.png .*by 1 "
                     r"pixel\(s\); set data.overlaps='later'"):
    dsb2018.load_example(*paths, channels=1)
  _, instances = dsb2018.load_example(*paths, channels=1, overlaps="later")
  assert instances[2, 2] == 2 and instances[1, 1] == 1
  assert np.count_nonzero(instances == 1) == 8
  assert np.count_nonzero(instances == 2) == 9


@pytest.mark.parametrize("mask, message", [
    (np.zeros((4, 6), np.uint8), r"m0.png: empty mask"),
    (np.full((4, 6), 128, np.uint8), r"m0.png: mask values \[128\] found; "
     "expected 0 and 255"),
    (np.full((5, 6), 255, np.uint8), r"m0.png: mask of size 5x6 for an "
     r"image of size 4x6"),
])
def test_bad_masks_name_the_file(tmp_path, mask, message):
  image, _ = _rgba_gray((4, 6))
  folder = _write(str(tmp_path), "x", image, [mask])
  with pytest.raises(DataError, match=message):
    dsb2018.load_example(os.path.join(folder, "images", "x.png"),
                         [os.path.join(folder, "masks", "m0.png")], 1)


def _two_images(folder):
  image, _ = _rgba_gray((4, 4))
  Image.fromarray(image).save(os.path.join(folder, "images", "extra.png"))


def _no_image(folder):
  for name in os.listdir(os.path.join(folder, "images")):
    os.remove(os.path.join(folder, "images", name))


def _no_images_folder(folder):
  _no_image(folder)
  os.rmdir(os.path.join(folder, "images"))


def _no_masks_folder(folder):
  os.rename(os.path.join(folder, "masks"), os.path.join(folder, "labels"))


def _no_masks(folder):
  for name in os.listdir(os.path.join(folder, "masks")):
    os.remove(os.path.join(folder, "masks", name))


@pytest.mark.parametrize("damage, message", [
    (_two_images, r"a/images: 2 image files; expected exactly one"),
    (_no_image, r"a/images: 0 image files; expected exactly one"),
    (_no_images_folder, r"a/images: no such folder"),
    (_no_masks_folder, r"a/masks: no such folder"),
    (_no_masks, r"a/masks: no mask files"),
])
def test_layout_errors_name_the_folder(tmp_path, damage, message):
  image, _ = _rgba_gray((4, 4))
  _write(str(tmp_path), "0", image, [_square((4, 4), 0, 1, 0, 1)])
  damage(_write(str(tmp_path), "a", image, [_square((4, 4), 0, 1, 0, 1)]))
  with pytest.raises(DataError, match=message):
    dsb2018.build(dir=str(tmp_path))


def test_missing_data_and_empty_folders_are_named(tmp_path):
  with pytest.raises(DataError, match="absent.* does not exist"):
    dsb2018.build(dir=str(tmp_path / "absent"))
  os.makedirs(tmp_path / "stage1_train" / ".hidden")
  (tmp_path / "stage1_train" / "notes.txt").write_text("x")
  with pytest.raises(DataError, match="stage1_train: no image folders"):
    dsb2018.build(dir=str(tmp_path))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(val_fraction=0.1, test_fraction=0.1), DataError,
     r"5 image\(s\) .* leave a split empty \(5 train, 0 val, 0 test\)"),
    (dict(val_fraction=0.5, test_fraction=1.0), ConfigError,
     "data.test_fraction=1.0: expected 0 <= fraction < 1"),
    (dict(val_fraction=0.6, test_fraction=0.3), DataError,
     r"leave a split empty \(0 train, 3 val, 2 test\)"),
    (dict(val_fraction=0.0), ConfigError, "data.val_fraction=0.0"),
    (dict(channels=4), ConfigError, "data.channels=4"),
    (dict(overlaps="first"), ConfigError, "data.overlaps='first'"),
    (dict(pad_to_multiple=0), ConfigError, "data.pad_to_multiple=0"),
    (dict(train_max_side=8), ConfigError, "data.train_max_side=8"),
    (dict(max_images=-1), ConfigError, "data.max_images=-1"),
])
def test_impossible_options_are_refused_before_loading(tmp_path, kwargs,
                                                       error, message):
  _dataset(str(tmp_path), 5)
  with pytest.raises(error, match=message):
    dsb2018.build(dir=str(tmp_path), **kwargs)


def test_split_follows_sorted_ids_and_seed_not_listing_order(tmp_path,
                                                             monkeypatch):
  _dataset(str(tmp_path), 20)

  def splits(seed):
    data = dsb2018.build(dir=str(tmp_path), split_seed=seed,
                         val_fraction=0.2, test_fraction=0.2)
    return {s: data.split(s).ids for s in ("train", "val", "test")}

  first = splits(0)
  assert [len(first[s]) for s in ("train", "val", "test")] == [12, 4, 4]
  assert sorted(sum(first.values(), ())) == [f"id{i:02d}" for i in range(20)]
  assert all(list(ids) == sorted(ids) for ids in first.values())
  listdir = os.listdir
  monkeypatch.setattr(os, "listdir",
                      lambda path: sorted(listdir(path), reverse=True))
  assert splits(0) == first
  assert splits(1)["val"] != first["val"]
  expected = np.random.default_rng(0).permutation(20)
  assert first["test"] == tuple(sorted(f"id{i:02d}" for i in expected[:4]))


def test_max_images_keeps_a_prefix_of_the_seeded_order(tmp_path):
  _dataset(str(tmp_path), 20)
  data = dsb2018.build(dir=str(tmp_path), max_images=10, val_fraction=0.2,
                       test_fraction=0.2)
  full = dsb2018.build(dir=str(tmp_path), val_fraction=0.1,
                       test_fraction=0.1)
  assert [len(data.split(s)) for s in ("train", "val", "test")] == [6, 2, 2]
  assert set(data.split("test").ids) <= set(full.split("test").ids) | set(
      full.split("val").ids)


def test_large_training_images_are_tiled_val_and_test_stay_whole(tmp_path):
  shape = (40, 70)
  image, gray = _rgba_gray(shape)
  crossing = _square(shape, 15, 25, 20, 30)  # crosses row 20 and column 23
  for name in ("a", "b", "c"):
    _write(str(tmp_path), name, image, [crossing])
  assert dsb2018.tile_grid(shape, 32) == [
      ((0, 20), (0, 23)), ((0, 20), (23, 47)), ((0, 20), (47, 70)),
      ((20, 40), (0, 23)), ((20, 40), (23, 47)), ((20, 40), (47, 70))]
  examples = dsb2018.find_examples(str(tmp_path))
  train = dsb2018.load_split([examples["a"], examples["b"]], 1, "error", 32,
                             pad_to_multiple=8)
  assert len(train) == 12 and train.images.shape == (12, 24, 24, 1)
  assert train.ids[:3] == ("a_y0_x0", "a_y0_x23", "a_y0_x47")
  np.testing.assert_array_equal(train.sizes[:6], [[20, 23], [20, 24],
                                                  [20, 23]] * 2)
  # the nucleus is an object in each of the four pieces it touches
  counts = [int(np.count_nonzero(label == 1)) for label in train.labels[:6]]
  assert counts == [15, 35, 0, 15, 35, 0]
  np.testing.assert_array_equal(train.images[4, :20, :24, 0],
                                gray[20:40, 23:47])
  whole = dsb2018.load_split([examples["c"]], 1, "error", 0, 8)
  assert whole.images.shape == (1, 40, 70, 1) and whole.ids == ("c",)
  assert np.count_nonzero(whole.labels == 1) == 100


def test_check_labels_takes_instance_ids_when_the_dataset_says_so():
  labels = np.array([[[0, 7], [300, 0]]], np.int32)
  split = Split(np.zeros((1, 2, 2, 1), np.uint8), labels, ("a",))
  instances = DataInfo("x", 2, 1, ("background", "object"), instances=True)
  datasets.check_labels(split, instances, "train")
  with pytest.raises(DataError, match=r"labels in \[0, 300\]; expected "
                     r"class ids 0..1"):
    datasets.check_labels(split, DataInfo("x", 2, 1, ("b", "o")), "train")
  negative = Split(split.images, -labels, ("a",))
  with pytest.raises(DataError, match="instance ids down to -300"):
    datasets.check_labels(negative, instances, "val")
  floats = Split(split.images, labels.astype(np.float32), ("a",))
  with pytest.raises(DataError, match="float32 labels; expected integer"):
    datasets.check_labels(floats, instances, "val")


@pytest.mark.skipif(not os.path.isdir(os.path.join(DSB_DIR, "stage1_train")),
                    reason="../shared/data/dsb2018 not present")
def test_real_images_give_one_instance_per_mask():
  examples = dsb2018.find_examples(DSB_DIR)
  assert len(examples) >= 500
  for image_id in sorted(examples)[1:5]:
    image_path, masks = examples[image_id]
    image, instances = dsb2018.load_example(image_path, masks, 1, "later")
    assert image.dtype == np.uint8 and image.shape[:2] == instances.shape
    # 'later' may swallow a small earlier nucleus whole, never more than one
    assert len(masks) - 1 <= len(np.unique(instances)) - 1 <= len(masks)


def _labels(split):
  return [split.labels[i] for i in range(len(split))]


def test_cache_keeps_instance_maps_and_notices_a_changed_mask(
    tmp_path, cache_in_tmp, monkeypatch):
  _dataset(str(tmp_path / "data"), 5)
  first = dsb2018.build(dir=str(tmp_path / "data"), val_fraction=0.2,
                        test_fraction=0.2)
  labels = {s: _labels(first.split(s)) for s in ("train", "val", "test")}
  stored = cache_in_tmp / "examples"
  assert len(os.listdir(stored)) == 5
  combine = dsb2018.combine_masks

  def refuse(*args):
    raise AssertionError("read the masks although they are cached")
  monkeypatch.setattr(dsb2018, "combine_masks", refuse)
  again = dsb2018.build(dir=str(tmp_path / "data"), val_fraction=0.2,
                        test_fraction=0.2)
  for name, expected in labels.items():
    np.testing.assert_array_equal(_labels(again.split(name)), expected)
  monkeypatch.setattr(dsb2018, "combine_masks", combine)
  mask = tmp_path / "data" / "stage1_train" / "id03" / "masks" / "m0.png"
  Image.fromarray(np.full((12, 16), 7, np.uint8)).save(mask)
  os.utime(mask, ns=(1, 1))  # a new mtime even on a coarse clock
  changed = dsb2018.build(dir=str(tmp_path / "data"), val_fraction=0.2,
                          test_fraction=0.2)
  with pytest.raises(DataError, match=r"id03/masks/m0.png: mask values \[7\]"):
    for name in ("train", "val", "test"):
      changed.split(name)
  Image.fromarray(_square((12, 16), 1, 4, 1, 5)).save(mask)
  fixed = dsb2018.build(dir=str(tmp_path / "data"), val_fraction=0.2,
                        test_fraction=0.2)
  for name, expected in labels.items():
    np.testing.assert_array_equal(_labels(fixed.split(name)), expected)
  entries = sorted(os.listdir(stored))
  assert len(entries) == 6  # the entry of the changed mask is a new one
  for entry in entries:  # an unfinished entry is read from the masks again
    (stored / entry / "meta.json").write_bytes(b"damaged")
  fresh = dsb2018.build(dir=str(tmp_path / "data"), val_fraction=0.2,
                        test_fraction=0.2)
  for name, expected in labels.items():
    np.testing.assert_array_equal(_labels(fresh.split(name)), expected)
  assert sum((stored / e / "meta.json").read_bytes() != b"damaged"
             for e in entries) == 5  # rewritten: the 5 current ones


def test_stored_examples_are_their_own_size_narrow_and_tiled_as_windows(
    tmp_path, cache_in_tmp):
  """Per-example files: no padding, uint16 ids on disk, int32 served; a
  large training image's pieces are windows of its one set of files."""
  shape = (40, 70)
  image, gray = _rgba_gray(shape)
  crossing = _square(shape, 15, 25, 20, 30)
  _write(str(tmp_path), "a", image, [crossing] + [
      _square(shape, 0, 1, k, k + 1) for k in range(0, 60, 2)])
  _write(str(tmp_path), "b", image[:20, :30], [_square((20, 30), 0, 2, 0, 2)])
  examples = dsb2018.find_examples(str(tmp_path))
  split = dsb2018.load_split([examples["a"], examples["b"]], 1, "error", 32,
                             8, str(cache_in_tmp))
  assert split.ids[:3] == ("a_y0_x0", "a_y0_x23", "a_y0_x47")
  assert len(split) == 7 and split.ids[-1] == "b"
  np.testing.assert_array_equal(split.sizes[:3], [[20, 23], [20, 24],
                                                  [20, 23]])
  assert split.images[6].shape == (20, 30, 1)  # not padded to 24x24
  np.testing.assert_array_equal(split.images[4][..., 0], gray[20:40, 23:47])
  region = split.read(4, 1, 2, 5, 6)  # rows 21..25, columns 25..30
  np.testing.assert_array_equal(region["image"][..., 0], gray[21:26, 25:31])
  assert region["label"].dtype == np.int32
  assert np.count_nonzero(region["label"] == 1) == 20  # rows 21-24, 25-29
  folders = sorted(os.listdir(cache_in_tmp / "examples"))
  assert len(folders) == 2  # one per image, not per piece
  ids = np.load(cache_in_tmp / "examples" / folders[0] / "label.npy")
  assert ids.dtype in (np.uint8, np.uint16) and ids.shape in ((40, 70),
                                                              (20, 30))
  assert split.label_range == (0, 31)


def test_no_cache_writes_nothing(tmp_path, cache_in_tmp):
  _dataset(str(tmp_path / "data"), 5)
  data = dsb2018.build(dir=str(tmp_path / "data"), val_fraction=0.2,
                       test_fraction=0.2, cache=False)
  assert len(data.split("train")) == 3 and not cache_in_tmp.exists()
