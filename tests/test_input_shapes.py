"""The training batch's shapes, worked out without TensorFlow, are those of
the batches the pipeline yields; the train step compiled ahead for them in
a thread is the one its first call runs, and a wrong stand-in costs a
compile, never a result."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unetjax.data import Split, input_pipeline
from unetjax.runtime.config import base_config
from unetjax.training import parallel
from unetjax.training import steps as steps_lib


def _augment(**overrides):
  config = base_config().augment
  config.update(overrides)
  return config


def _segmentation(images, labels_dtype=np.int32, **maps):
  n, height, width = images.shape[:3]
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, (n, height, width)).astype(labels_dtype)
  return Split(images, labels, tuple(map(str, range(n))), maps=maps)


def _cases():
  rng = np.random.default_rng(1)
  gray = (rng.random((5, 20, 20, 1)) * 255).astype(np.uint8)
  rgb = rng.random((3, 12, 18, 3)).astype(np.float32)
  padded = Split(rng.random((2, 32, 32, 1)).astype(np.float32),
                 np.ones((2, 32, 32), np.uint8), ("a", "b"),
                 np.array([[16, 24], [24, 16]]))
  digits = Split(rng.random((6, 8, 8, 1)), rng.integers(0, 10, 6),
                 tuple("abcdef"))
  with_maps = _segmentation(
      gray, weights=rng.random((5, 20, 20)).astype(np.float32),
      instances=rng.integers(0, 9, (5, 20, 20)).astype(np.int32))
  return {
      "uint8 gray, whole images, flips": (
          _segmentation(gray), 4, _augment(flip=True)),
      "float rgb, not square, brightness and contrast": (
          _segmentation(rgb, np.int64), 2,
          _augment(brightness=0.2, contrast=0.3)),
      "maps, crop, turns, elastic": (
          with_maps, 3, _augment(crop_size=12, rot90=True, elastic=True)),
      "variable sizes, crop inside the true size": (
          padded, 2, _augment(crop_size=8)),
      "classification, float64 images, a batch over epochs": (
          digits, 8, _augment(flip=True)),
  }


@pytest.mark.parametrize("name", list(_cases()))
def test_the_worked_out_shapes_are_the_pipelines(name):
  split, batch_size, augment = _cases()[name]
  batch = next(input_pipeline.train_batches(
      split, batch_size=batch_size, seed=0, start_step=0,
      augment_config=augment))

  shapes = input_pipeline.train_batch_shapes(
      split, batch_size=batch_size, augment_config=augment)

  assert shapes == {k: (v.shape, v.dtype) for k, v in batch.items()}


def test_each_process_yields_its_share_of_the_worked_out_batch():
  split, _, augment = _cases()["maps, crop, turns, elastic"]
  shapes = input_pipeline.train_batch_shapes(split, batch_size=4,
                                             augment_config=augment)
  local = next(input_pipeline.train_batches(
      split, batch_size=4, seed=0, start_step=0, augment_config=augment,
      process_index=1, process_count=2))

  assert {k: ((4,) + v.shape[1:], v.dtype) for k, v in local.items()} == shapes


def _step_and_batch():
  mesh = parallel.make_mesh()
  sharding = parallel.data_sharding(mesh)
  step = jax.jit(lambda w, batch: (w * batch["image"]).sum(axis=(1, 2, 3)))
  split, batch_size, augment = _cases()["uint8 gray, whole images, flips"]
  shapes = input_pipeline.train_batch_shapes(split, batch_size=batch_size,
                                             augment_config=augment)
  batch = parallel.global_batch(next(input_pipeline.train_batches(
      split, batch_size=batch_size, seed=0, start_step=0,
      augment_config=augment)), sharding)
  return step, jnp.float32(2.0), batch, steps_lib.abstract_batch(
      shapes, sharding)


def test_the_step_compiled_ahead_in_a_thread_is_the_one_its_call_runs(
    caplog):
  step, w, batch, stand_in = _step_and_batch()

  with steps_lib.CompilingAhead(step, w, stand_in) as ahead:
    compiled = ahead.wait(w, batch)
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
      out = step(w, batch)

  assert not [r for r in caplog.records if "Compiling" in r.getMessage()]
  assert compiled.cost_analysis()["flops"] > 0
  np.testing.assert_allclose(out, 2 * np.asarray(batch["image"]).sum(
      axis=(1, 2, 3)), rtol=1e-6)


def test_a_wrong_stand_in_is_reported_and_compiled_again(caplog):
  step, w, batch, stand_in = _step_and_batch()
  wrong = dict(stand_in, image=jax.ShapeDtypeStruct(
      (4, 8, 8, 1), jnp.float32, sharding=stand_in["image"].sharding))

  with caplog.at_level(logging.WARNING):
    with steps_lib.CompilingAhead(step, w, wrong) as ahead:
      ahead.wait(w, batch)
  out = step(w, batch)

  assert any("compiled ahead for other shapes" in r.getMessage()
             and "(4, 20, 20, 1)" in r.getMessage() for r in caplog.records)
  np.testing.assert_allclose(out, 2 * np.asarray(batch["image"]).sum(
      axis=(1, 2, 3)), rtol=1e-6)


def test_a_failed_compile_is_raised_in_the_waiting_thread():
  def bad(batch):
    raise ValueError("no such layer")  # raised while lowering, here

  with pytest.raises(ValueError, match="no such layer"):
    steps_lib.CompilingAhead(jax.jit(bad), jnp.zeros(3))

  class Lowered:  # what the compiler raises comes from the thread
    def compile(self):
      raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")

  class Step:
    def lower(self, *args):
      return Lowered()

  ahead = steps_lib.CompilingAhead(Step(), jnp.zeros(3))
  with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
    ahead.wait(jnp.zeros(3))


def test_training_compiles_its_step_once_from_the_stand_ins(tiny_config,
                                                           tmp_path, caplog):
  from unetjax.training import train  # pylint: disable=g-import-not-at-top
  config = tiny_config(num_steps=2, eval_every_steps=2)
  config.augment.crop_size = 8
  config.augment.rot90 = True

  with jax.log_compiles(), caplog.at_level(logging.WARNING):
    train.train_and_evaluate(config, str(tmp_path / "wd"))

  messages = [r.getMessage() for r in caplog.records]
  compiles = [m for m in messages if m.startswith("Compiling jit(train_step)")]
  assert len(compiles) == 1, compiles
  assert "float32[4,8,8,1]), ShapedArray(int32[4,8,8]))" in compiles[0]
  assert not [m for m in messages if "compiled ahead for other" in m]
