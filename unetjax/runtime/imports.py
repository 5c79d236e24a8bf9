"""Keeping out of an import the optional modules it would load for nothing.

TensorFlow's `__init__` imports Keras, and Keras imports scikit-learn (and
through it scipy.stats) and matplotlib's pyplot, each inside a `try` that
goes on without it, only to register things this package never uses. `hidden("keras")` around the
import makes that `try` take its fallback; the module is importable again
afterwards, for whoever needs it. Timings: docs/performance.md.
"""
import contextlib
import functools
import sys


@contextlib.contextmanager
def hidden(*names: str):
  """Within the block, importing any of `names` raises ImportError.

  A module the process already imported is left alone (hiding it would
  change nothing and could confuse its users), and so is one the block
  ended up importing by some other route.
  """
  hide = [name for name in names if name not in sys.modules]
  for name in hide:
    sys.modules[name] = None  # what `import` reads as "cannot be imported"
  try:
    yield
  finally:
    for name in hide:
      if name in sys.modules and sys.modules[name] is None:
        del sys.modules[name]


@functools.cache
def tensorflow():
  """TensorFlow, imported once, with the GPUs hidden from it.

  Keras is kept out of the import: TensorFlow's `__init__` imports Keras 3
  (and, through it, scikit-learn and matplotlib) only to register Keras's
  optimizers for SavedModel, and goes on without it when it cannot be
  imported; `tf.data` never needs it. That is 1.2-1.8 s of every process
  that reads data (docs/performance.md). `tf.keras` still imports it on
  first use (CLU's TensorBoard writer does).
  """
  with hidden("keras"):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  return tf
