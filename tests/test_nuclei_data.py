"""The embedded `nuclei` data: shipped files, instance maps, the wheel."""
import csv
import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import REPO

from unetjax.data import DATASETS, nuclei
from unetjax.runtime.errors import ConfigError

DATA = os.path.join(REPO, "unetjax", "data", "nuclei_data")
DSB_DIR = os.environ.get(
    "UNETJAX_DSB2018_DIR",
    os.path.join(REPO, "..", "shared", "data", "dsb2018"))


def _manifest():
  with open(os.path.join(DATA, "manifest.csv"), newline="") as f:
    return {row["id"]: row for row in csv.DictReader(f)}


def test_shipped_images_load_as_256_gray_with_one_id_per_nucleus():
  manifest = _manifest()
  assert 60 <= len(manifest) <= 100
  data = DATASETS.get("nuclei")()
  assert data.info.instances and data.info.in_channels == 1
  assert data.info.class_names == ("background", "nucleus")
  splits = {s: data.split(s) for s in ("train", "val", "test")}
  assert [len(splits[s]) for s in splits] == [64, 8, 8]
  assert sorted(sum((s.ids for s in splits.values()), ())) == sorted(manifest)
  for split in splits.values():
    assert split.images.shape[1:] == (256, 256, 1) and split.sizes is None
    assert split.images.dtype == np.uint8 and split.labels.dtype == np.int32
    for image_id, image, labels in zip(split.ids, split.images, split.labels):
      count = int(manifest[image_id]["nuclei"])
      # ids are exactly 1..n, every one a non-empty nucleus
      np.testing.assert_array_equal(np.unique(labels), np.arange(count + 1))
      assert image.max() > image.min()  # not blank


def test_split_options_work_as_for_dsb2018():
  first = nuclei.build(split_seed=0).split("val").ids
  assert nuclei.build(split_seed=0).split("val").ids == first
  assert nuclei.build(split_seed=1).split("val").ids != first
  data = nuclei.build(val_fraction=0.25, test_fraction=0)
  assert not data.has_split("test") and len(data.split("val")) == 20
  with pytest.raises(ConfigError, match="data.val_fraction=0"):
    nuclei.build(val_fraction=0)


def _setuptools_major() -> int:
  try:
    return int(importlib.metadata.version("setuptools").split(".")[0])
  except (importlib.metadata.PackageNotFoundError, ValueError):
    return 0


def test_package_data_is_small_attributed_and_in_the_wheel(tmp_path):
  files = [os.path.join(root, name) for root, _, names in os.walk(DATA)
           for name in names]
  assert sum(os.path.getsize(f) for f in files) <= 4.5e6
  manifest = _manifest()
  attribution = open(os.path.join(DATA, "ATTRIBUTION")).read()
  assert "CC0" in attribution and "Caicedo" in attribution
  assert all(image_id in attribution for image_id in manifest)
  assert len(files) == 2 * len(manifest) + 3  # + manifest, README, ATTRIBUTION
  if _setuptools_major() < 77:  # pyproject's build requirement, offline
    pytest.skip("building the wheel offline needs setuptools >= 77 here")
  source = tmp_path / "src"
  source.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(REPO, name), source)
  shutil.copytree(os.path.join(REPO, "unetjax"), source / "unetjax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  built = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
       "--no-build-isolation", "-w", str(tmp_path / "wheel"), str(source)],
      capture_output=True, text=True, timeout=300)
  assert built.returncode == 0, built.stderr[-2000:]
  wheel, = (tmp_path / "wheel").glob("*.whl")
  names = set(zipfile.ZipFile(wheel).namelist())
  prefix = "unetjax/data/nuclei_data/"
  for relative in (os.path.relpath(f, DATA) for f in files):
    assert prefix + relative.replace(os.sep, "/") in names


@pytest.mark.skipif(not os.path.isdir(os.path.join(DSB_DIR, "stage1_train")),
                    reason="../shared/data/dsb2018 not present")
def test_shipped_maps_equal_the_dsb_masks_they_came_from():
  from unetjax.data import dsb2018  # pylint: disable=g-import-not-at-top
  examples = dsb2018.find_examples(DSB_DIR)
  data = nuclei.build()
  split = data.split("test")
  for i in range(3):
    image, instances = dsb2018.load_example(*examples[split.ids[i]], 1)
    np.testing.assert_array_equal(split.images[i], image)
    np.testing.assert_array_equal(split.labels[i], instances)
