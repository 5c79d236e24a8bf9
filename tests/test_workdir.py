"""Workdir safety: locks, other experiments, foreign dirs, --fresh.

None of these trains: the checks run before anything is built or written.
"""
import json
import os

import pytest

from tests.conftest import tiny_cells_config
from unetjax import train, workdir as workdir_lib
from unetjax.errors import WorkdirError


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
  os.makedirs(path)
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
