"""Stored splits streamed from disk: the same batches as the same examples
held in memory, exact from any step, each process reading only its rows."""
import ml_collections
import numpy as np
import pytest

from unetjax.data import Split, input_pipeline, normalize, stored

SIZES = [(40, 52), (36, 36), (64, 40), (33, 47), (48, 48)]


def _examples():
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, size + (2,), dtype=np.uint8)
            for size in SIZES]
  labels = [rng.integers(0, 300, size).astype(np.int32) for size in SIZES]
  weights = [rng.random(size, dtype=np.float32) for size in SIZES]
  return images, labels, weights


def stored_split(root: str) -> stored.StoredSplit:
  """The five examples written under `root` (again if there) as a stored
  split."""
  return _stored(__import__("pathlib").Path(root))


def augment_config(**overrides):
  return _augment(**overrides)


def _stored(tmp_path) -> stored.StoredSplit:
  images, labels, weights = _examples()
  folders, metas = [], []
  for i, (image, label, weight) in enumerate(zip(images, labels, weights)):
    folder = str(tmp_path / f"e{i}")
    metas.append(stored.write_example(folder, {
        "image": image, "label": label, "weight": weight}))
    folders.append(folder)
  assert metas[0]["dtypes"]["label"] == "int32"  # what was given...
  assert np.load(tmp_path / "e0" / "label.npy").dtype == np.uint16  # kept
  windows = [(0, 0) + size for size in SIZES]
  return stored.StoredSplit(folders, windows, [f"e{i}" for i in range(5)],
                            2, np.uint8, {"weight": np.float32}, (0, 299),
                            str(tmp_path / "derived"), 8)


def _memory() -> Split:
  """The same examples, zero-padded to 64x56 as loaders stack them."""
  images, labels, weights = _examples()
  padded = np.zeros((5, 64, 56, 2), np.uint8)
  padded_labels = np.zeros((5, 64, 56), np.int32)
  padded_weights = np.zeros((5, 64, 56), np.float32)
  for i, (h, w) in enumerate(SIZES):
    padded[i, :h, :w] = images[i]
    padded_labels[i, :h, :w] = labels[i]
    padded_weights[i, :h, :w] = weights[i]
  return Split(padded, padded_labels, tuple(f"e{i}" for i in range(5)),
               np.array(SIZES), {"weight": padded_weights})


def _augment(**overrides):
  config = ml_collections.ConfigDict(dict(
      crop_size=32, flip=True, rot90=True, brightness=0.0, contrast=0.0,
      elastic=True, elastic_grid=3, elastic_sigma=2.0))
  config.update(overrides)
  return config


def _take(batches, count):
  return [next(batches) for _ in range(count)]


def _same(got, expected):
  assert len(got) == len(expected)
  for a, b in zip(got, expected):
    assert sorted(a) == sorted(b)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("normalization", [
    None, {"normalize": "percentile", "percentiles": [1.0, 99.8]}])
def test_stored_split_trains_on_the_same_batches_as_in_memory(
    tmp_path, normalization):
  kwargs = dict(batch_size=3, seed=4, start_step=0, augment_config=_augment(),
                normalization=normalization)
  from_disk = _take(input_pipeline.train_batches(_stored(tmp_path), **kwargs),
                    4)
  in_memory = _take(input_pipeline.train_batches(_memory(), **kwargs), 4)
  _same(from_disk, in_memory)
  assert from_disk[0]["image"].shape == (3, 32, 32, 2)
  assert from_disk[0]["label"].max() > 255  # ids above uint8 survive


def test_resuming_the_stream_at_step_s_gives_the_rest_bit_identical(
    tmp_path):
  split = _stored(tmp_path)
  kwargs = dict(batch_size=3, seed=1, augment_config=_augment())
  whole = _take(input_pipeline.train_batches(split, start_step=0, **kwargs),
                7)
  resumed = _take(input_pipeline.train_batches(split, start_step=4,
                                               **kwargs), 3)
  _same(resumed, whole[4:])


def rows_of_processes(seed: int, n: int, sizes, crop: int, batch_size: int,
                      process_count: int, epochs: int = 60):
  """{process: {(example, crop row, crop column)}} over the first `epochs`
  epochs of the training stream: which reads belong to whose rows. The
  crop corner is drawn from the stream position, so it tells apart two
  reads of one example."""
  from unetjax.data import augment  # pylint: disable=g-import-not-at-top
  from unetjax.runtime.imports import tensorflow  # pylint: disable=g-import-not-at-top
  tf = tensorflow()
  order = np.concatenate([input_pipeline.epoch_order(tf, seed, e, n).numpy()
                          for e in range(epochs)])
  local = batch_size // process_count
  rows = {p: set() for p in range(process_count)}
  for k, index in enumerate(order):
    corner = augment.crop_corner(tf, tf.constant([seed, k], tf.int64), crop,
                                 sizes[index]).numpy()
    rows[(k % batch_size) // local].add(
        (int(index), int(corner[0]), int(corner[1])))
  return rows


def recording_reads(monkeypatch) -> list:
  """StoredSplit.read patched to record (index, y0, x0) of every read."""
  reads = []
  original = stored.StoredSplit.read

  def counted(self, index, y0=0, x0=0, *args, **kwargs):
    reads.append((int(index), int(y0), int(x0)))
    return original(self, index, y0, x0, *args, **kwargs)
  monkeypatch.setattr(stored.StoredSplit, "read", counted)
  return reads


def test_each_process_reads_only_its_rows_of_every_batch(tmp_path,
                                                         monkeypatch):
  """Two processes' parts make the global batch, and a process reads only
  the examples of its rows (tests/test_parallel.py checks it again with
  two real processes)."""
  split = _stored(tmp_path)
  reads = recording_reads(monkeypatch)
  kwargs = dict(batch_size=4, seed=2, start_step=0,
                augment_config=_augment(elastic=False))
  whole = _take(input_pipeline.train_batches(split, **kwargs), 2)
  parts = [_take(input_pipeline.train_batches(
      split, process_index=p, process_count=2, **kwargs), 2) for p in (0, 1)]
  for step in range(2):
    for key in whole[step]:
      np.testing.assert_array_equal(
          np.concatenate([parts[0][step][key], parts[1][step][key]]),
          whole[step][key])
  del reads[:]
  one = _take(input_pipeline.train_batches(
      split, process_index=1, process_count=2, **kwargs), 1)
  assert one[0]["image"].shape[0] == 2
  rows = rows_of_processes(2, len(split), SIZES, 32, 4, 2)
  seen = set(reads)
  assert seen and seen <= rows[1]
  assert not seen & (rows[0] - rows[1])


def test_eval_batches_of_a_stored_split_equal_the_in_memory_ones(tmp_path):
  for by_size in (False, True):
    for normalization in (None, {"normalize": "percentile",
                                 "percentiles": [2.0, 98.0]}):
      kwargs = dict(batch_size=2, by_size=by_size, align=8,
                    normalization=normalization)
      got = list(input_pipeline.eval_batches(_stored(tmp_path), **kwargs))
      expected = list(input_pipeline.eval_batches(_memory(), **kwargs))
      for a, b in zip(got, expected):
        assert sorted(a) == sorted(b)
        for key in a:
          np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6,
                                     err_msg=key)
      assert len(got) == len(expected) == 3
      if by_size:  # sorted by area: 36x36 and 33x47 first, cut to 40x48
        assert got[0]["image"].shape == (2, 40, 48, 2)
        assert got[0]["index"].tolist() == [1, 3]


def test_percentile_normalisation_maps_the_percentiles_to_0_and_1():
  image = np.arange(1000, dtype=np.float32).reshape(10, 100, 1) / 1000
  chosen = {"normalize": "percentile", "percentiles": [1.0, 99.8]}
  out = normalize.apply(image, chosen)
  low, high = np.percentile(image, [1.0, 99.8])  # 0.00999, 0.997002
  assert abs(low - 0.00999) < 1e-6 and abs(high - 0.997002) < 1e-6
  np.testing.assert_allclose(out, (image - low) / (high - low), rtol=1e-5,
                             atol=1e-7)
  # the same image as uint8 or as [0, 1] floats: the same input
  eight = np.random.default_rng(0).integers(0, 256, (8, 9, 3), np.uint8)
  np.testing.assert_allclose(normalize.apply(eight, chosen),
                             normalize.apply(eight / np.float32(255), chosen),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(normalize.apply(eight, None),
                                eight / np.float32(255))


def test_a_scaled_set_links_each_image_folder_n_times(tmp_path):
  """scripts/make_scaled_dsb.py: N times the ids, links not copies."""
  import os  # pylint: disable=g-import-not-at-top

  from PIL import Image  # pylint: disable=g-import-not-at-top

  from unetjax.benchmarks import scale  # pylint: disable=g-import-not-at-top
  from unetjax.data import dsb2018  # pylint: disable=g-import-not-at-top
  for name in ("a", "b"):
    folder = tmp_path / "src" / "stage1_train" / name
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(
        folder / "images" / f"{name}.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:4] = 255
    Image.fromarray(mask).save(folder / "masks" / "m.png")
  assert scale.make_scaled(str(tmp_path / "src"), str(tmp_path / "x3"),
                           3) == 6
  found = dsb2018.find_examples(str(tmp_path / "x3"))
  assert sorted(found) == ["a", "a_x1", "a_x2", "b", "b_x1", "b_x2"]
  link = tmp_path / "x3" / "stage1_train" / "b_x2"
  assert os.path.islink(link)
  assert os.path.realpath(found["b_x2"][0]) == str(
      tmp_path / "src" / "stage1_train" / "b" / "images" / "b.png")
  # the copies share one stored example each: same cache key
  assert (dsb2018._cache_key(*found["b_x2"], "error", 1)  # pylint: disable=protected-access
          == dsb2018._cache_key(*found["b"], "error", 1))  # pylint: disable=protected-access
