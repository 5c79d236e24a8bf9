"""ISBI-2012, GlaS and folder datasets on small files the tests write."""
import os

import numpy as np
import pytest
import tifffile
from conftest import ISBI_DIR, in_memory
from PIL import Image

from unetjax import data as datasets
from unetjax.data import folders, glas, image_io, isbi2012
from unetjax.runtime.errors import ConfigError, DataError


def _save(path, array, mode=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array, mode).save(path) if mode else Image.fromarray(
      array).save(path)


def _stack(count=6, size=16, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
  labels = np.where(rng.random((count, size, size)) < 0.7, 255, 0).astype(
      np.uint8)
  return images, labels


@pytest.fixture(params=[True, False], ids=["stored", "in_memory"])
def use_cache(request):
  """Each loader's two forms: stored on disk (the default) and in memory;
  a test reads both through `_split` and expects the same contents."""
  return request.param


def _split(data, name, use_cache):  # pylint: disable=redefined-outer-name
  return in_memory(data.split(name), stored_expected=use_cache)


# --- ISBI-2012 ---------------------------------------------------------------


def test_isbi_tiff_stacks_map_255_to_foreground_and_hold_out_a_fold(
    tmp_path, use_cache):
  images, labels = _stack()
  tifffile.imwrite(tmp_path / "train-volume.tif", images)
  tifffile.imwrite(tmp_path / "train-labels.tif", labels)
  data = isbi2012.build(dir=str(tmp_path), fold=1, num_folds=3, cache=use_cache)
  train, val = _split(data, "train", use_cache), _split(data, "val", use_cache)
  assert val.ids == ("slice_02", "slice_03")
  assert len(train) == 4 and not data.has_split("test")
  np.testing.assert_array_equal(val.images[..., 0], images[2:4])
  np.testing.assert_array_equal(val.labels, labels[2:4] // 255)
  assert data.info.in_channels == 1 and data.info.num_classes == 2


def test_isbi_png_slices_with_chosen_validation_slices(tmp_path, use_cache):
  images, labels = _stack(count=4)
  for i in range(4):
    _save(str(tmp_path / "train" / "images" / f"{i:02d}.png"), images[i])
    _save(str(tmp_path / "train" / "labels" / f"{i:02d}.png"), labels[i])
  data = isbi2012.build(dir=str(tmp_path), val_slices=(3, 0), cache=use_cache)
  assert data.split("val").ids == ("00", "03")
  np.testing.assert_array_equal(_split(data, "train", use_cache).labels,
                                labels[1:3] // 255)
  np.testing.assert_array_equal(_split(data, "train", use_cache).images[..., 0],
                                images[1:3])


@pytest.mark.parametrize("kwargs", [dict(val_slices=(7,)),
                                    dict(val_slices=(0, 1, 2, 3)),
                                    dict(fold=3, num_folds=3),
                                    dict(num_folds=1)])
def test_isbi_rejects_impossible_validation_choices(tmp_path, kwargs):
  images, labels = _stack(count=4)
  tifffile.imwrite(tmp_path / "train-volume.tif", images)
  tifffile.imwrite(tmp_path / "train-labels.tif", labels)
  with pytest.raises(ConfigError, match="data.(val_slices|fold)"):
    isbi2012.build(dir=str(tmp_path), **kwargs)


def test_isbi_label_values_other_than_0_and_255_name_file_and_values(
    tmp_path):
  images, labels = _stack()
  labels[2, 0, 0] = 1
  tifffile.imwrite(tmp_path / "train-volume.tif", images)
  tifffile.imwrite(tmp_path / "train-labels.tif", labels)
  with pytest.raises(DataError, match=r"train-labels.tif: mask values \[1\]"):
    isbi2012.build(dir=str(tmp_path))


def test_isbi_missing_data_says_where_to_get_it(tmp_path):
  with pytest.raises(DataError, match="imagej.net"):
    isbi2012.build(dir=str(tmp_path / "absent"))
  with pytest.raises(DataError, match="neither train-volume.tif"):
    isbi2012.build(dir=str(tmp_path))


def test_isbi_stack_and_labels_of_different_length_fail(tmp_path):
  images, labels = _stack()
  tifffile.imwrite(tmp_path / "train-volume.tif", images)
  tifffile.imwrite(tmp_path / "train-labels.tif", labels[:5])
  with pytest.raises(DataError, match="train-labels.tif: labels of shape"):
    isbi2012.build(dir=str(tmp_path))


@pytest.mark.skipif(not os.path.isdir(ISBI_DIR), reason="no ISBI-2012 data")
def test_real_isbi_data_loads_as_documented():
  data = isbi2012.build(dir=ISBI_DIR, fold=5, num_folds=6)
  train, val = _split(data, "train", True), _split(data, "val", True)
  assert train.images.shape == (25, 512, 512, 1)
  assert val.ids == ("25", "26", "27", "28", "29")
  assert set(np.unique(train.labels)) == {0, 1}
  assert 0.7 < train.labels.mean() < 0.85  # README: about 78% cell interior
  # The baseline the docs quote: "cell interior" everywhere on slices 25-29.
  truth = val.labels
  assert 2 * truth.sum() / (truth.sum() + truth.size) == pytest.approx(
      0.8895, abs=5e-5)


# --- GlaS --------------------------------------------------------------------


def _glas(tmp_path, parts=(("train", 3), ("testA", 2), ("testB", 1))):
  rng = np.random.default_rng(0)
  for part, count in parts:
    for n in range(1, count + 1):
      height, width = 40 + 8 * n, 48 - 4 * n
      _save(str(tmp_path / f"{part}_{n}.bmp"),
            rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
      anno = np.zeros((height, width), np.uint8)
      anno[2:10, 3:9], anno[20:30, 5:20] = 1, 7  # two glands
      _save(str(tmp_path / f"{part}_{n}_anno.bmp"), anno)
  return tmp_path


def test_glas_binarises_instances_and_pads_varied_sizes(tmp_path, use_cache):
  data = glas.build(dir=str(_glas(tmp_path)), cache=use_cache)
  train = _split(data, "train", use_cache)
  assert train.ids == ("train_1", "train_2", "train_3")
  np.testing.assert_array_equal(train.sizes, [[48, 44], [56, 40], [64, 36]])
  assert train.images.shape == (3, 64, 64, 3)  # padded to multiples of 32
  assert train.images.dtype == np.uint8
  expected = np.zeros((48, 44), np.int32)
  expected[2:10, 3:9] = expected[20:30, 5:20] = 1
  np.testing.assert_array_equal(train.labels[0, :48, :44], expected)
  assert train.labels[0, 48:].sum() == 0 and train.labels[0, :, 44:].sum() == 0
  assert data.split("val").ids == ("testA_1", "testA_2")
  assert data.split("test").ids == ("testB_1",)
  first = data.split("train").take(1)  # train_examples=1 keeps the true size
  np.testing.assert_array_equal(first.sizes, [[48, 44]])
  swapped = glas.build(dir=str(tmp_path), val_split="testB")
  assert swapped.split("val").ids == ("testB_1",)


def test_glas_missing_annotation_and_missing_part_fail(tmp_path):
  _glas(tmp_path)
  os.remove(tmp_path / "testA_2_anno.bmp")
  with pytest.raises(DataError, match="testA_2.bmp: no annotation"):
    glas.build(dir=str(tmp_path)).split("val")
  with pytest.raises(DataError, match="no testB_N.bmp"):
    glas.build(dir=str(_glas(tmp_path / "g", parts=(("train", 1),
                                                    ("testA", 1)))))


def test_glas_keeps_instance_ids_when_asked_and_finds_upper_case_names(
    tmp_path, use_cache):
  _glas(tmp_path)
  os.rename(tmp_path / "train_2.bmp", tmp_path / "train_2.BMP")
  os.rename(tmp_path / "train_2_anno.bmp", tmp_path / "train_2_anno.BMP")
  os.rename(tmp_path / "testA_1_anno.bmp", tmp_path / "testA_1_anno.BMP")
  data = glas.build(dir=str(tmp_path), instances=True, cache=use_cache)
  assert data.info.instances and data.info.num_classes == 2
  train = _split(data, "train", use_cache)
  assert train.ids == ("train_1", "train_2", "train_3")
  expected = np.zeros((56, 40), np.int32)
  expected[2:10, 3:9], expected[20:30, 5:20] = 1, 7
  np.testing.assert_array_equal(train.labels[1, :56, :40], expected)
  assert data.split("val").ids == ("testA_1", "testA_2")
  binary = glas.build(dir=str(tmp_path), cache=use_cache)
  assert not binary.info.instances
  np.testing.assert_array_equal(
      _split(binary, "train", use_cache).labels[1, :56, :40],
                                expected > 0)


# --- generic folders ---------------------------------------------------------


def test_folders_read_16bit_instance_ids_from_png_and_tiff(tmp_path, use_cache):
  ids = np.zeros((8, 8), np.uint16)
  ids[:4, :4], ids[4:, 4:], ids[0, 7] = 300, 1000, 65535
  _pair(tmp_path, "a", np.zeros((8, 8), np.uint8), ids)  # 16-bit PNG
  _save(str(tmp_path / "images" / "b.png"), np.zeros((8, 8), np.uint8))
  tifffile.imwrite(tmp_path / "masks" / "b.tif", ids[::-1])
  data = folders.build(dir=str(tmp_path), instances=True, val_fraction=0.5,
                       cache=use_cache)
  assert data.info.instances
  assert data.info.class_names == ("background", "object")
  np.testing.assert_array_equal(_split(data, "train", use_cache).labels[0], ids)
  np.testing.assert_array_equal(_split(data, "val", use_cache).labels[0],
                                ids[::-1])
  with pytest.raises(ConfigError, match="data.num_classes=3 with "
                     "data.instances=True"):
    folders.build(dir=str(tmp_path), instances=True, num_classes=3)
  tifffile.imwrite(tmp_path / "masks" / "b.tif",
                   np.full((8, 8), -2, np.int32))
  with pytest.raises(DataError, match=r"b.tif: negative instance ids"):
    folders.build(dir=str(tmp_path), instances=True, val_fraction=0.5,
                  cache=use_cache)


def _pair(root, stem, image, mask, image_ext="png", mask_ext="png",
          image_mode=None, mask_mode=None):
  _save(str(root / "images" / f"{stem}.{image_ext}"), image, image_mode)
  _save(str(root / "masks" / f"{stem}.{mask_ext}"), mask, mask_mode)


def _palette_mask(mask):
  image = Image.fromarray(mask, "P")
  image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
  return image


def test_folders_read_rgba_16bit_and_palette_files_correctly(tmp_path,
                                                          use_cache):
  mask = np.zeros((16, 16), np.uint8)
  mask[4:8] = 1
  rgba = np.zeros((16, 16, 4), np.uint8)
  rgba[..., 0], rgba[..., 3] = 200, 10  # mostly transparent: alpha dropped
  _pair(tmp_path, "a_rgba", rgba, mask)
  gray16 = np.full((16, 16), 65535, np.uint16)
  tifffile.imwrite(str(tmp_path / "images" / "b_16bit.tif"), gray16)
  _palette_mask(mask * 2).save(tmp_path / "masks" / "b_16bit.png")
  palette = Image.fromarray(np.full((16, 16), 1, np.uint8), "P")
  palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
  palette.save(tmp_path / "images" / "c_palette.png")
  _save(str(tmp_path / "masks" / "c_palette.bmp"), mask)
  with pytest.raises(DataError, match="channel"):  # gray 16-bit among RGB
    folders.build(dir=str(tmp_path), num_classes=3, val_fraction=0.3,
                  cache=use_cache)
  rgb16 = np.full((16, 16, 3), 32768, np.uint16)
  tifffile.imwrite(str(tmp_path / "images" / "b_16bit.tif"), rgb16)
  data = folders.build(dir=str(tmp_path), num_classes=3, val_fraction=0.3,
                       cache=use_cache)
  train, val = _split(data, "train", use_cache), _split(data, "val", use_cache)
  assert data.info.in_channels == 3 and train.images.dtype == np.float32
  np.testing.assert_allclose(train.images[0, 0, 0], [200 / 255, 0, 0])
  np.testing.assert_allclose(train.images[1, 0, 0], [32768 / 65535] * 3)
  np.testing.assert_array_equal(val.images[0, 0, 0], [10, 20, 30])  # uint8
  np.testing.assert_array_equal(train.labels[1], mask * 2)  # indices kept
  assert train.sizes is None and val.ids == ("c_palette",)


def test_folders_map_mask_values_to_classes(tmp_path, use_cache):
  mask = np.zeros((8, 8), np.uint8)
  mask[:, 4:] = 255
  for stem in "abc":
    _pair(tmp_path, stem, np.zeros((8, 8), np.uint8), mask)
  data = folders.build(dir=str(tmp_path), mask_values={"0": 0, "255": 1},
                       val_fraction=0.34, cache=use_cache)
  np.testing.assert_array_equal(_split(data, "val", use_cache).labels[0],
                                mask // 255)
  with pytest.raises(DataError, match=r"masks/a.png: mask values \[0, 255\] found; "
                     r"expected class ids 0..1"):
    folders.build(dir=str(tmp_path), val_fraction=0.34, cache=use_cache)


def test_folders_with_train_val_test_subfolders(tmp_path):
  for split, count in (("train", 2), ("val", 1), ("test", 1)):
    for i in range(count):
      _pair(tmp_path / split, f"{split}{i}", np.zeros((8, 8, 3), np.uint8),
            np.ones((8, 8), np.uint8), image_ext="jpg", mask_ext="tif")
  data = folders.build(dir=str(tmp_path))
  assert {s: len(data.split(s)) for s in ("train", "val", "test")} == {
      "train": 2, "val": 1, "test": 1}


@pytest.mark.parametrize("case,message", [
    ("colour_mask", "a colour mask"),
    ("size_mismatch", r"mask of size 8x6 for an image of size 8x8"),
    ("missing_mask", r"images/b.png: no partner named b"),
    ("missing_image", r"masks/z.png: no partner named z"),
    ("empty_folder", r"images: no image files"),
    ("no_folder", r"is not a folder"),
    ("truncated", r"b.png: (corrupt or truncated|not an image file)"),
])
def test_folders_bad_inputs_fail_naming_the_file(tmp_path, case, message):
  mask = np.zeros((8, 8), np.uint8)
  _pair(tmp_path, "a", np.zeros((8, 8), np.uint8), mask)
  _pair(tmp_path, "b", np.zeros((8, 8), np.uint8), mask)
  if case == "colour_mask":
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 0] = 1
    _save(str(tmp_path / "masks" / "b.png"), colour)
  elif case == "size_mismatch":
    _save(str(tmp_path / "masks" / "b.png"), mask[:, :6])
  elif case == "missing_mask":
    os.remove(tmp_path / "masks" / "b.png")
  elif case == "missing_image":
    _save(str(tmp_path / "masks" / "z.png"), mask)
  elif case == "empty_folder":
    for name in os.listdir(tmp_path / "images"):
      os.remove(tmp_path / "images" / name)
  elif case == "truncated":
    path = tmp_path / "masks" / "b.png"
    path.write_bytes(path.read_bytes()[:45])
  directory = tmp_path / "absent" if case == "no_folder" else tmp_path
  with pytest.raises(DataError, match=message):
    folders.build(dir=str(directory))


def test_mask_values_mapping_to_undeclared_classes_is_a_config_error(
    tmp_path):
  with pytest.raises(ConfigError, match="maps to classes \\[2\\]"):
    folders.build(dir=str(tmp_path), mask_values={0: 0, 255: 2})


def test_the_registry_builds_each_dataset_by_name(tmp_path):
  images, labels = _stack()
  tifffile.imwrite(tmp_path / "train-volume.tif", images)
  tifffile.imwrite(tmp_path / "train-labels.tif", labels)
  for name in ("isbi2012", "glas", "folders"):
    assert callable(datasets.DATASETS.get(name))
  assert len(datasets.DATASETS.get("isbi2012")(dir=str(tmp_path)).split(
      "val")) == 1


def test_read_stack_tells_an_rgb_page_from_gray_pages(tmp_path):
  rgb = np.arange(3 * 9 * 3, dtype=np.uint8).reshape(3, 9, 3)  # 3 rows high
  gray_pages = np.arange(3 * 5 * 7, dtype=np.uint8).reshape(3, 5, 7)
  tifffile.imwrite(tmp_path / "rgb.tif", rgb)
  tifffile.imwrite(tmp_path / "pages.tif", gray_pages)
  np.testing.assert_allclose(image_io.read_stack(str(tmp_path / "rgb.tif")),
                             rgb[None] / 255.0)
  np.testing.assert_allclose(image_io.read_stack(str(tmp_path / "pages.tif")),
                             gray_pages[..., None] / 255.0)
