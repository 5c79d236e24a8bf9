"""Data parallelism gives the 1-device result: 8 devices, and 2 processes.

The sharded runs happen in subprocesses, since the device count and the
distributed runtime are fixed when JAX starts; the 1-device reference runs
in the test process. Tiny model, few steps: what is compared is the loss and
every parameter after the same steps on the same batches.
"""
import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import tiny_cells_config

from unetjax.data import input_pipeline
from unetjax.runtime import checkpointing
from unetjax.runtime.errors import ConfigError
from unetjax.training import experiment as experiment_lib
from unetjax.training import health as health_lib
from unetjax.training import parallel
from unetjax.training import steps as steps_lib

NUM_STEPS = 3
# One child alone takes about a minute on 2 busy cores; a hung distributed
# run is stopped long before pytest's or CI's own limits.
CHILD_TIMEOUT = 420
TOLERANCE = dict(rtol=1e-4, atol=1e-5)
_RUN_HERE = ("import sys; sys.path.insert(0, {tests!r}); import test_parallel;"
             " test_parallel.write_run({out!r}, {ckpt!r})")


def tiny_config():
  return tiny_cells_config(batch_size=8, eval_batch_size=8,
                           **{"data.num_train": 16})


def run_steps(checkpoint_dir: str = "") -> dict[str, np.ndarray]:
  """Loss and parameters after NUM_STEPS train steps, on every process."""
  experiment = experiment_lib.build_experiment(tiny_config())
  config = experiment.config
  steps = steps_lib.jit_steps(experiment)
  batches = input_pipeline.train_batches(
      experiment_lib.train_split(config, experiment.dataset),
      batch_size=config.batch_size, seed=config.seed, start_step=0,
      augment_config=config.augment, process_index=jax.process_index(),
      process_count=jax.process_count())
  sharding = parallel.data_sharding(experiment.mesh)
  state = experiment.state
  replicated = parallel.replicated(experiment.mesh)
  metrics = jax.device_put(experiment.task.metrics_class.empty(), replicated)
  health = jax.device_put(health_lib.initial_health(), replicated)
  for step in range(NUM_STEPS):
    batch = parallel.global_batch(next(batches), sharding)
    if step == 0:  # as training does: compile, then wait for the others
      steps_lib.compile_ahead(steps.train, state, metrics, health, batch)
      parallel.sync_processes("compiled")
    state, metrics, health = steps.train(state, metrics, health, batch)
  loss = float(metrics.compute()["loss"])
  if checkpoint_dir:
    mngr = checkpointing.manager(checkpoint_dir, keep=1,
                                 best_metric=config.best_metric,
                                 best_mode=config.best_mode)
    checkpointing.save(mngr, NUM_STEPS, state, {"step": NUM_STEPS},
                       {config.best_metric: loss})
    mngr.wait_until_finished()
    mngr.close()
  return {"loss": np.float64(loss), **flat_params(state)}


def flat_params(state) -> dict[str, np.ndarray]:
  """Every float array of the model and optimizer state, by path."""
  return {"/".join(map(str, path)): parallel.to_host(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(state)
          if leaf.dtype.kind == "f"}


def write_run(out: str, checkpoint_dir: str) -> None:
  """Subprocess entry: joins the run if launched so, writes process 0's;
  with STORED_SPLIT_DIR set, each process also records which stored
  examples its pipeline read (`record_stored_reads`)."""
  parallel.initialize_distributed()
  results = run_steps(checkpoint_dir)
  if os.environ.get("STORED_SPLIT_DIR"):
    record_stored_reads(os.environ["STORED_SPLIT_DIR"],
                        f"{out}.reads.{jax.process_index()}.json")
  if jax.process_index() == 0:
    np.savez(out, devices=jax.device_count(), **results)


def record_stored_reads(folder: str, path: str) -> None:
  """Two batches of a stored split through this process's pipeline; the
  (example, crop corner) of every read it made, as JSON."""
  import json  # pylint: disable=g-import-not-at-top

  import test_streaming  # pylint: disable=g-import-not-at-top
  monkeypatch = pytest.MonkeyPatch()
  reads = test_streaming.recording_reads(monkeypatch)
  split = test_streaming.stored_split(folder)
  batches = input_pipeline.train_batches(
      split, batch_size=4, seed=2, start_step=0,
      augment_config=test_streaming.augment_config(elastic=False),
      process_index=jax.process_index(), process_count=jax.process_count())
  shapes = [next(batches)["image"].shape for _ in range(2)]
  with open(path, "w") as f:
    json.dump({"reads": sorted(set(reads)), "shapes": shapes}, f)
  monkeypatch.undo()


def run_subprocesses(out: str, envs: list[dict[str, str]],
                     checkpoint_dir: str = "") -> dict[str, np.ndarray]:
  code = _RUN_HERE.format(tests=os.path.dirname(__file__), out=out,
                          ckpt=checkpoint_dir)
  run_children([code] * len(envs), envs, out)
  return dict(np.load(out))


def run_children(codes: list[str], envs: list[dict[str, str]], logs: str,
                 timeout: float = CHILD_TIMEOUT) -> None:
  """Runs `python -c code` per env; all must exit 0 within `timeout` s.

  The children of one distributed run wait for each other, so when one
  fails the others would wait for it until their own timeouts: as soon as
  one exits non-zero, or the time is up, the rest are killed, and the
  failure reports every child's output (written to files `logs`.N.log, so
  a killed child's output is kept and no full pipe can block a child).
  """
  procs, paths = [], []
  for i, (code, env) in enumerate(zip(codes, envs)):
    paths.append(f"{logs}.{i}.log")
    with open(paths[-1], "w") as f:
      procs.append(subprocess.Popen([sys.executable, "-c", code],
                                    env={**os.environ, **env}, stdout=f,
                                    stderr=subprocess.STDOUT))
  deadline = time.monotonic() + timeout
  while (any(p.poll() is None for p in procs)
         and not any(p.returncode for p in procs)
         and time.monotonic() < deadline):
    time.sleep(0.2)
  killed = [i for i, p in enumerate(procs) if p.poll() is None]
  for i in killed:
    procs[i].kill()
    procs[i].wait()
  failed = [i for i, p in enumerate(procs) if p.returncode and i not in killed]
  if not killed and not failed:
    return
  reports = []
  for i, (proc, path) in enumerate(zip(procs, paths)):
    with open(path) as f:
      text = f.read()
    state = "killed" if i in killed else f"exit {proc.returncode}"
    reports.append(f"--- child {i} ({state}) ---\n{text[-3000:]}")
  why = (f"child {failed[0]} failed" if failed else
         f"children {killed} still running after {timeout:.0f} s")
  pytest.fail(f"{why}; output of every child:\n" + "\n".join(reports),
              pytrace=False)


def test_a_failing_child_stops_its_peers_and_both_outputs_are_reported(
    tmp_path):
  logs = str(tmp_path / "run")
  codes = [  # child 0 fails once child 1 is up and waiting for it
      "import sys, time\n"
      f"while 'waits' not in open({logs + '.1.log'!r}).read():\n"
      "  time.sleep(0.05)\n"
      "print('child 0 broke', flush=True)\nsys.exit(3)",
      "import time; print('child 1 waits', flush=True); time.sleep(600)"]
  with pytest.raises(pytest.fail.Exception) as failure:
    run_children(codes, [{}, {}], logs)
  report = str(failure.value)
  assert report.startswith("child 0 failed")
  assert "--- child 0 (exit 3) ---\nchild 0 broke" in report
  assert "--- child 1 (killed) ---\nchild 1 waits" in report


def test_children_past_the_time_limit_are_killed_and_reported(tmp_path):
  codes = ["import time; time.sleep(600)"] * 2
  with pytest.raises(pytest.fail.Exception) as failure:
    run_children(codes, [{}, {}], str(tmp_path / "run"), timeout=1)
  report = str(failure.value)
  assert report.startswith("children [0, 1] still running after 1 s")
  assert "--- child 0 (killed) ---" in report
  assert "--- child 1 (killed) ---" in report


@pytest.fixture(scope="module")
def one_device():
  assert jax.device_count() == 1
  return run_steps()


def assert_same_run(got: dict[str, np.ndarray],
                    want: dict[str, np.ndarray]) -> None:
  assert set(got) - {"devices"} == set(want)
  for key, value in want.items():
    np.testing.assert_allclose(got[key], value, err_msg=key, **TOLERANCE)


def test_training_sharded_over_8_devices_equals_one_device(one_device,
                                                           tmp_path):
  got = run_subprocesses(str(tmp_path / "run.npz"), [{
      "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}])
  assert got["devices"] == 8
  assert_same_run(got, one_device)


def test_two_processes_equal_one_and_their_checkpoint_restores(one_device,
                                                               tmp_path):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  envs = [{"JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
           "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i)}
          for i in range(2)]
  workdir = str(tmp_path / "workdir")
  import test_streaming  # pylint: disable=g-import-not-at-top
  stored_dir = tmp_path / "stored"
  test_streaming.stored_split(str(stored_dir))
  for env in envs:
    env["STORED_SPLIT_DIR"] = str(stored_dir)
  got = run_subprocesses(str(tmp_path / "run.npz"), envs, workdir)
  assert got["devices"] == 2
  assert_same_run(got, one_device)

  # Each process read only examples of its own rows of each global batch.
  rows = test_streaming.rows_of_processes(2, len(test_streaming.SIZES),
                                          test_streaming.SIZES, 32, 4, 2)
  for process in (0, 1):
    with open(f"{tmp_path / 'run.npz'}.reads.{process}.json") as f:
      record = json.load(f)
    assert record["shapes"] == [[2, 32, 32, 2]] * 2
    seen = {tuple(read) for read in record["reads"]}
    assert seen and seen <= rows[process]
    assert not seen & (rows[1 - process] - rows[process])

  experiment = experiment_lib.build_experiment(tiny_config())
  mngr = checkpointing.manager(workdir, keep=1, best_metric="val/dice",
                               best_mode="max", read_only=True)
  state, meta = checkpointing.restore(mngr, NUM_STEPS, experiment.state)
  assert meta["step"] == NUM_STEPS
  restored = flat_params(state)
  for key, value in restored.items():
    np.testing.assert_array_equal(value, got[key], err_msg=key)


def test_distributed_env_must_be_integers(monkeypatch):
  monkeypatch.setenv("UNETJAX_XLA_FLAGS", "0")  # leave XLA_FLAGS alone
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
  with pytest.raises(ConfigError, match="JAX_NUM_PROCESSES='two'"):
    parallel.initialize_distributed()


def test_batch_not_divisible_by_devices_is_rejected(monkeypatch):
  monkeypatch.setattr(jax, "device_count", lambda: 3)
  with pytest.raises(ConfigError, match="batch_size=8 is not divisible"):
    parallel.check_batch_size("batch_size", 8)
