"""Shipped models: saved from a run, loaded without it, and the nuclei model
that `unetjax-predict --model nuclei` runs on a fresh install."""
import json
import os

import numpy as np
import pytest

from unetjax.runtime.errors import ConfigError, WorkdirError

NUCLEI_DATA = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "unetjax", "data", "nuclei_data")


def _outputs(run, images):
  from unetjax.inference import segment  # pylint: disable=g-import-not-at-top
  segmenter = segment.Segmenter(run.model(), run.task, run.info.in_channels,
                                tile_size=64, batch_size=4,
                                normalization=run.input)
  return [np.asarray(segmenter.logits(image)) for image in images]


def test_saved_model_loads_without_its_workdir_and_predicts_alike(
    trained_workdir, tmp_path):
  from unetjax.inference import pretrained, trained  # pylint: disable=g-import-not-at-top
  where = str(tmp_path / "shipped")
  written = pretrained.save(trained_workdir, where, source="test")
  assert sorted(os.path.relpath(p, where) for p in written) == [
      "metrics.json", "model.json", "plots/samples.png", "weights.npz"]
  original = trained.load(trained_workdir, "best")
  shipped = pretrained.load_folder(where)
  assert shipped.config.to_dict() == original.config.to_dict()
  assert shipped.info == original.info and shipped.input == original.input
  # Every variable is the run's, rounded to float16 and back.
  from flax import nnx  # pylint: disable=g-import-not-at-top
  ours = dict(nnx.to_flat_state(nnx.state(original.model())))
  theirs = dict(nnx.to_flat_state(nnx.state(shipped.model())))
  assert set(ours) == set(theirs)
  for path, variable in ours.items():
    value = np.asarray(variable.value)
    expected = value.astype(np.float16).astype(value.dtype) if (
        np.issubdtype(value.dtype, np.floating)) else value
    np.testing.assert_array_equal(np.asarray(theirs[path].value), expected)
  with np.load(os.path.join(where, "weights.npz")) as stored:
    assert {stored[k].dtype for k in stored.files} == {np.dtype(np.float16)}
  # Applied to images, the float16 copy gives nearly the run's logits and
  # the same mask.
  rng = np.random.default_rng(0)
  channels = original.info.in_channels
  images = [rng.integers(0, 256, (16, 16, channels), dtype=np.uint8),
            rng.integers(0, 256, (40, 24, channels), dtype=np.uint8)]
  for a, b in zip(_outputs(original, images), _outputs(shipped, images)):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=0.05)
    assert (a.argmax(-1) == b.argmax(-1)).mean() > 0.99


def test_weights_that_do_not_fit_the_model_are_refused(trained_workdir,
                                                       tmp_path):
  from unetjax.inference import pretrained  # pylint: disable=g-import-not-at-top
  where = str(tmp_path / "shipped")
  pretrained.save(trained_workdir, where)
  path = os.path.join(where, "weights.npz")
  with np.load(path) as stored:
    arrays = {k: stored[k] for k in stored.files}
  first = sorted(arrays)[0]
  np.savez(path, **{k: v for k, v in arrays.items() if k != first})
  with pytest.raises(WorkdirError, match=f"missing \\['{first}'\\]"):
    pretrained.load_folder(where)
  np.savez(path, **{**arrays, first: np.zeros((1, 2), np.float16)})
  with pytest.raises(WorkdirError, match=f"{first} has shape \\(1, 2\\)"):
    pretrained.load_folder(where)
  meta_path = os.path.join(where, "model.json")
  with open(meta_path, "w", encoding="utf-8") as f:
    json.dump({"unetjax_pretrained": 99}, f)
  with pytest.raises(WorkdirError, match="not a version-1"):
    pretrained.load_folder(where)


def test_shipped_names_and_paths(tmp_path, monkeypatch):
  from unetjax.inference import pretrained  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="no such shipped model; shipped: "
                     "nuclei"):
    pretrained.folder("nucleus")
  monkeypatch.chdir(tmp_path)
  assert pretrained.shipped("nuclei")
  assert not pretrained.shipped("nucleus")
  (tmp_path / "nuclei").mkdir()  # a folder of that name is a path
  assert not pretrained.shipped("nuclei")
