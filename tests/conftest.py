"""Shared test helpers: tiny configs that compile and train in seconds."""
import os
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One persistent XLA cache for the suite and the CLI processes it starts:
# compiling (seconds per initializer on 2 cores) dominates these tiny runs.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), "unetjax-test-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ISBI_DIR = os.environ.get(
    "UNETJAX_ISBI_DIR", os.path.join(REPO, "..", "shared", "data", "isbi2012"))


def tiny_cells_config(**overrides):
  """The default experiment shrunk to 16x16 images and a depth-2 U-Net."""
  from configs import cells  # pylint: disable=g-import-not-at-top
  config = cells.get_config()
  config.model.depth = 2
  config.model.features = 4
  config.data.image_size = 16
  config.data.num_train = 8
  config.data.num_val = 5
  config.data.num_test = 3
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_steps = 6
  config.log_every_steps = 2
  config.eval_every_steps = 3
  config.num_sample_images = 2
  config.schedule.name = "constant"  # independent of num_steps
  for key, value in overrides.items():
    section = config
    *parents, leaf = key.split(".")
    for parent in parents:
      section = section[parent]
    section[leaf] = value
  return config


@pytest.fixture(scope="session", autouse=True)
def stored_examples_cache(tmp_path_factory):
  """The loaders' stored examples (`stored.cache_dir`) in a folder of the
  session's, never the user's cache; the CLI processes tests start
  inherit it."""
  before = os.environ.get("UNETJAX_CACHE_DIR")
  os.environ["UNETJAX_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
  yield os.environ["UNETJAX_CACHE_DIR"]
  if before is None:
    os.environ.pop("UNETJAX_CACHE_DIR", None)
  else:
    os.environ["UNETJAX_CACHE_DIR"] = before


@pytest.fixture
def tiny_config():
  return tiny_cells_config


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
  """A tiny cells run trained once per session, shared by the tool tests.

  Read-only for the tests: they write their outputs elsewhere.
  """
  from unetjax.training import train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("trained") / "wd")
  train.train_and_evaluate(tiny_cells_config(), workdir)
  return workdir


def in_memory(split, stored_expected: bool | None = None):
  """A loader's split as its `cache=False` form holds it: a stored split's
  examples read and zero-padded to its `shape`, labels int32, `sizes`
  None when all are alike; an in-memory split as it is. One test then
  checks the contents of either. `stored_expected` True/False also checks
  which form the loader gave."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from unetjax.data import Split, stored  # pylint: disable=g-import-not-at-top
  is_stored = isinstance(split, stored.StoredSplit)
  if stored_expected is not None:
    assert is_stored == stored_expected, type(split)
  if not is_stored:
    return split
  height, width = split.shape
  images = np.zeros((len(split), height, width, split.channels),
                    split.image_dtype)
  labels = np.zeros((len(split), height, width), np.int32)
  for index in range(len(split)):
    example = split.read(index)
    rows, cols = example["label"].shape
    images[index, :rows, :cols] = example["image"]
    labels[index, :rows, :cols] = example["label"]
  sizes = split.sizes
  return Split(images, labels, split.ids,
               None if (sizes == sizes[0]).all() else sizes.copy())


def same_conv(x, kernel, conv=None):
  """A stride-1, SAME-padded NHWC convolution (`conv`: a function with
  `lax.conv_general_dilated`'s signature, that one by default)."""
  import jax  # pylint: disable=g-import-not-at-top  (env above comes first)
  conv = conv or jax.lax.conv_general_dilated
  return conv(x, kernel, (1, 1), "SAME",
              dimension_numbers=("NHWC", "HWIO", "NHWC"))


def gradient_temporary_bytes(loss, *args) -> int:
  """XLA's temporary buffers for the compiled gradient of `loss` at `args`:
  what the backward pass holds beyond the arguments and results."""
  import jax  # pylint: disable=g-import-not-at-top
  compiled = jax.jit(jax.grad(loss)).lower(*args).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def checkpoint_leaves(workdir):
  """(step, every array of the latest checkpoint's state as numpy, random
  keys as their data): what bit-identical resume compares."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from unetjax.inference import trained  # pylint: disable=g-import-not-at-top
  run = trained.load(workdir, "latest")
  return run.step, [np.asarray(jax.random.key_data(x)
                               if jax.dtypes.issubdtype(x.dtype,
                                                        jax.dtypes.prng_key)
                               else x) for x in jax.tree.leaves(run.state)]
