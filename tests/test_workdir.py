"""Workdir safety: locks, other experiments, foreign dirs, --fresh.

None of these trains: the checks run before anything is built or written.
"""
import json
import os
import shutil

import pytest

from tests.conftest import tiny_cells_config
from unetjax.runtime.errors import ConfigError, WorkdirError
from unetjax.training import train
from unetjax.training import workdir as workdir_lib


def _snapshot(directory):
  """{relative path: bytes} of every file, to prove nothing changed."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, directory)] = f.read()
  return files


def _workdir_of(config, path):
  """A workdir of `config` with results (a stand-in committed checkpoint)."""
  os.makedirs(os.path.join(path, "checkpoints", "3"))
  workdir_lib.save_config(str(path), config)
  return str(path)


def test_a_workdir_in_use_is_refused_and_left_alone(tmp_path):
  workdir = _workdir_of(tiny_cells_config(), tmp_path / "wd")
  with workdir_lib.locked(workdir):
    before = _snapshot(workdir)
    with pytest.raises(WorkdirError, match=f"{workdir} is in use by pid "
                       f"{os.getpid()}"):
      train.train_and_evaluate(tiny_cells_config(), workdir)
    assert _snapshot(workdir) == before


def test_another_experiment_is_refused_naming_what_differs(tmp_path):
  workdir = _workdir_of(tiny_cells_config(), tmp_path / "wd")
  before = _snapshot(workdir)
  with pytest.raises(WorkdirError) as error:
    train.train_and_evaluate(tiny_cells_config(**{"model.features": 8}),
                             workdir)
  assert "holds a different experiment (model.features: 4 -> 8)" in str(
      error.value)
  assert "--fresh" in str(error.value)
  assert _snapshot(workdir) == before


def test_resumable_changes_are_accepted_and_recorded(tmp_path):
  workdir = _workdir_of(tiny_cells_config(), tmp_path / "wd")
  longer = tiny_cells_config(num_steps=60)
  workdir_lib.check_config(workdir, longer)
  workdir_lib.save_config(workdir, longer)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["num_steps"] == 60


def test_a_directory_that_is_not_a_workdir_is_refused(tmp_path):
  (tmp_path / "notes.txt").write_text("my thesis")
  with pytest.raises(WorkdirError, match="is not empty and has no "
                     "config.json.*notes.txt"):
    train.train_and_evaluate(tiny_cells_config(), str(tmp_path))
  assert _snapshot(tmp_path) == {"notes.txt": b"my thesis"}


def test_a_rejected_run_leaves_no_new_workdir(tmp_path):
  workdir = tmp_path / "new"
  with pytest.raises(Exception, match="data.num_train=0"):
    train.train_and_evaluate(tiny_cells_config(**{"data.num_train": 0}),
                             str(workdir))
  assert not workdir.exists()


def test_fresh_picks_a_new_sibling_then_resumes_there(tmp_path):
  workdir = _workdir_of(tiny_cells_config(), tmp_path / "wd")
  wider = tiny_cells_config(**{"model.features": 8})
  assert workdir_lib.fresh_sibling(workdir, tiny_cells_config()) == workdir
  sibling = workdir_lib.fresh_sibling(workdir, wider)
  assert sibling == f"{workdir}-2" and not os.path.exists(sibling)
  _workdir_of(wider, sibling)
  assert workdir_lib.fresh_sibling(workdir, wider) == sibling
  assert workdir_lib.fresh_sibling(
      workdir, tiny_cells_config(**{"model.features": 2})) == f"{workdir}-3"


def test_a_workdir_without_results_takes_a_corrected_config(tmp_path,
                                                            capsys):
  """A run that diverged (or was killed) before its first checkpoint
  leaves nothing to resume or lose: the corrected command may start there.
  Once a checkpoint exists, another config is refused."""
  workdir = str(tmp_path / "wd")
  os.makedirs(os.path.join(workdir, "checkpoints"))
  workdir_lib.save_config(workdir, tiny_cells_config(
      **{"optimizer.learning_rate": 100.0}))
  corrected = tiny_cells_config()
  workdir_lib.check_config(workdir, corrected)
  workdir_lib.save_config(workdir, corrected)
  assert "starting over there with changed optimizer.learning_rate" in (
      capsys.readouterr().out)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["optimizer"]["learning_rate"] == 3e-3
  os.makedirs(os.path.join(workdir, "checkpoints", "2"))
  with pytest.raises(WorkdirError, match="optimizer.learning_rate: 0.003 -> "
                     "100.0"):
    workdir_lib.check_config(workdir, tiny_cells_config(
        **{"optimizer.learning_rate": 100.0}))


def test_a_finished_run_says_so_and_changes_no_file(trained_workdir,
                                                    tmp_path, capsys):
  workdir = str(tmp_path / "wd")
  shutil.copytree(trained_workdir, workdir)
  before = _stamps(workdir)
  with open(os.path.join(workdir, "metrics.json")) as f:
    recorded = json.load(f)
  capsys.readouterr()
  assert train.train_and_evaluate(tiny_cells_config(), workdir) == recorded
  assert "already finished" in capsys.readouterr().out
  with pytest.raises(ConfigError, match="num_steps=3 but .* has a "
                     "checkpoint at step 6"):
    train.train_and_evaluate(tiny_cells_config(num_steps=3), workdir)
  assert _stamps(workdir) == before


def _stamps(directory):
  """{path: (bytes, mtime)} of every file but the lock, which runs re-take."""
  found = {}
  for root, _, names in os.walk(directory):
    for name in names:
      if name != workdir_lib.LOCK_FILE:
        path = os.path.join(root, name)
        with open(path, "rb") as f:
          found[path] = (f.read(), os.stat(path).st_mtime_ns)
  return found
