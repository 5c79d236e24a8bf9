"""Host memory housekeeping around start-up and compiling the train step.

`release_free_heap` gives heap memory that compilation freed back to the
operating system; `garbage_collection_paused` keeps Python's collector from
rescanning the process's long-lived objects while a step is traced;
`pause_collection_for_start` and `start_done` keep it off from a training
process's start to its first step.

XLA's compiler and model construction use a few hundred MB of C heap and
free it once they are done, but glibc keeps freed heap pages in the
process. A train step's buffers are large allocations that glibc maps
anew, so without this they come on top of that freed heap. On the reference
U-Net's benchmark (docs/performance.md, `--input fixed`) this took peak
RSS from 2.74 to 2.41 GiB.
"""
import contextlib
import ctypes
import ctypes.util
import functools
import gc


def release_free_heap() -> bool:
  """Returns the heap's free pages to the OS (glibc's `malloc_trim`).

  Cheap (milliseconds) and safe at any time. False where the C library
  has no `malloc_trim` (not glibc: macOS, musl), where nothing is done.
  """
  trim = _malloc_trim()
  if trim is None:
    return False
  trim(0)
  return True


@functools.cache
def _malloc_trim():
  name = ctypes.util.find_library("c")
  if name is None:
    return None
  return getattr(ctypes.CDLL(name), "malloc_trim", None)


@contextlib.contextmanager
def garbage_collection_paused():
  """Python's cyclic garbage collector off inside the block, as it was after.

  Tracing a train step makes a few hundred thousand short-lived Python
  objects, which set off full collections that rescan every long-lived one
  (JAX, TensorFlow, the model: about 250,000 objects): about 0.3 s of the
  reference U-Net's cold compile (docs/performance.md). Reference counting
  still frees objects inside the block; only cycles made there wait for
  the collector's next run.
  """
  was_enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if was_enabled:
      gc.enable()


_START = {"paused": False}


def pause_collection_for_start() -> None:
  """Python's cyclic garbage collector off until `start_done()`.

  A training process imports JAX, Flax, Orbax and TensorFlow and builds its
  experiment before the first step: a few hundred thousand long-lived
  objects made in a row, each few thousand of which set off a collection,
  and the full ones rescan all of them while finding almost nothing to
  free: `gc.callbacks` counted about 1 s of collection before the first
  step of a warm default run, 0.74 s of it in six full collections
  (docs/performance.md, "Sixth pass"). Reference counting still frees
  everything that is not in a cycle; `start_done` collects the cycles.
  """
  if gc.isenabled():
    gc.disable()
    _START["paused"] = True


def start_done() -> None:
  """Collects the start's garbage and turns the collector back on, if
  `pause_collection_for_start` turned it off; later calls, and calls in a
  process that never paused it, do nothing. The collection is not left to
  the collector's next full run, which can come much later: at the first
  step of `configs/dsb2018.py` on the real data it freed 27,748 objects and
  540 MiB of resident memory."""
  if _START["paused"]:
    _START["paused"] = False
    gc.collect()
    gc.enable()
