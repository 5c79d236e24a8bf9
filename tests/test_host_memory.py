"""Giving freed heap back to the OS, compiling a step ahead of its run, and
no garbage collection while it is traced."""
import ctypes
import gc
import logging
import os

import jax
import jax.numpy as jnp
import pytest

from unetjax import host_memory, steps as steps_lib

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
