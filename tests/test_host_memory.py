"""Giving freed heap back to the OS, compiling a step ahead of its run, and
no garbage collection while it is traced."""
import ctypes
import gc
import logging
import os
import weakref

import jax
import jax.numpy as jnp
import pytest

from unetjax.runtime import host_memory
from unetjax.training import steps as steps_lib

MIB = 2**20


def resident_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(host_memory._malloc_trim() is None,
                    reason="the C library has no malloc_trim (not glibc)")
def test_freed_heap_goes_back_to_the_os():
  libc = ctypes.CDLL(None)
  libc.malloc.restype = ctypes.c_void_p
  libc.malloc.argtypes = [ctypes.c_size_t]
  libc.free.argtypes = [ctypes.c_void_p]
  chunk = 64 * 1024  # below glibc's mmap threshold: taken from the heap
  chunks = [libc.malloc(chunk) for _ in range(2048)]  # 128 MiB
  for address in chunks:
    ctypes.memset(address, 1, chunk)  # make the pages resident
  # Every other chunk freed: holes between live chunks, which free() itself
  # never hands back (it only shrinks the top of the heap).
  for address in chunks[::2]:
    libc.free(address)
  before = resident_bytes()

  assert host_memory.release_free_heap()

  assert before - resident_bytes() > 32 * MIB
  for address in chunks[1::2]:
    libc.free(address)


def test_compile_ahead_is_reused_by_the_jitted_step(caplog):
  step = jax.jit(lambda x: jnp.tanh(x) * 2)
  x = jnp.arange(5.0)

  compiled = steps_lib.compile_ahead(step, x)
  with jax.log_compiles(), caplog.at_level(logging.WARNING):
    y = step(x)

  assert not [r for r in caplog.records if "Compiling" in r.getMessage()]
  assert compiled.cost_analysis()["flops"] > 0
  assert jnp.allclose(y, jnp.tanh(x) * 2)


def test_the_step_is_traced_with_the_garbage_collector_paused():
  collector_enabled_while_traced = []

  def step(x):
    collector_enabled_while_traced.append(gc.isenabled())
    return x + 1

  steps_lib.compile_ahead(jax.jit(step), jnp.arange(3.0))

  assert collector_enabled_while_traced == [False]
  assert gc.isenabled()


def test_a_paused_collector_stays_as_the_caller_left_it():
  gc.disable()
  try:
    with host_memory.garbage_collection_paused():
      assert not gc.isenabled()
    assert not gc.isenabled()
  finally:
    gc.enable()
  with host_memory.garbage_collection_paused():
    assert not gc.isenabled()
  assert gc.isenabled()


class Cycle:
  me = None


def test_the_start_pause_lasts_until_start_done_and_only_once():
  assert gc.isenabled()
  try:
    host_memory.pause_collection_for_start()
    assert not gc.isenabled()
    with host_memory.garbage_collection_paused():  # a trace meanwhile
      pass
    assert not gc.isenabled()  # still paused: the start is not over
    cycle = Cycle()
    cycle.me = cycle
    collected = weakref.finalize(cycle, lambda: None)
    del cycle
    assert collected.alive  # reference counting cannot free a cycle
    host_memory.start_done()
    assert gc.isenabled()
    assert not collected.alive  # the start's garbage collected at once
    gc.disable()  # someone else's pause, after the start
    host_memory.start_done()  # a second call changes nothing
    assert not gc.isenabled()
  finally:
    gc.enable()


def test_a_collector_already_off_is_left_off_by_the_start():
  gc.disable()
  try:
    host_memory.pause_collection_for_start()
    host_memory.start_done()
    assert not gc.isenabled()
  finally:
    gc.enable()


def test_training_turns_the_collector_back_on_after_its_first_step(
    tiny_config, tmp_path):
  from unetjax.training import train  # pylint: disable=g-import-not-at-top
  enabled_at_steps = []
  wait = train.steps_lib.CompilingAhead.wait

  def noting(self, *args):  # called just before the first step
    enabled_at_steps.append(gc.isenabled())
    return wait(self, *args)

  host_memory.pause_collection_for_start()
  try:
    train.steps_lib.CompilingAhead.wait = noting
    train.train_and_evaluate(tiny_config(num_steps=2, eval_every_steps=2),
                             str(tmp_path / "wd"))
    assert enabled_at_steps == [False]
    assert gc.isenabled()
  finally:
    train.steps_lib.CompilingAhead.wait = wait
    host_memory.start_done()
    gc.enable()


def test_a_command_line_that_fails_before_training_turns_it_back_on():
  from unetjax import main  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit):
    main.run(["unetjax-train", "--help"])
  assert gc.isenabled()
