"""`unused_imports.hidden` and the start-up imports it keeps out."""
import subprocess
import sys

import pytest

from tests.conftest import REPO
from unetjax.runtime import imports as unused_imports


def test_hidden_module_cannot_be_imported_inside_and_can_after(tmp_path,
                                                                monkeypatch):
  (tmp_path / "unetjax_probe_mod.py").write_text("VALUE = 7\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  sys.modules.pop("unetjax_probe_mod", None)
  with unused_imports.hidden("unetjax_probe_mod"):
    with pytest.raises(ImportError):
      import unetjax_probe_mod  # pylint: disable=g-import-not-at-top,unused-import
  assert "unetjax_probe_mod" not in sys.modules
  import unetjax_probe_mod  # pylint: disable=g-import-not-at-top
  assert unetjax_probe_mod.VALUE == 7
  del sys.modules["unetjax_probe_mod"]


def test_a_module_already_imported_is_left_alone():
  import json  # pylint: disable=g-import-not-at-top
  with unused_imports.hidden("json"):
    import json as again  # pylint: disable=g-import-not-at-top,reimported
    assert again is json
  assert sys.modules["json"] is json


def test_hidden_is_undone_when_the_block_raises():
  sys.modules.pop("unetjax_never_there", None)
  with pytest.raises(RuntimeError):
    with unused_imports.hidden("unetjax_never_there"):
      raise RuntimeError("inside")
  assert "unetjax_never_there" not in sys.modules


def test_start_path_imports_neither_scikit_learn_nor_pyplot_until_used():
  """Building a task and importing the writers (Keras included, which the
  TensorBoard writer needs) load neither scikit-learn nor pyplot; both
  import normally afterwards, pyplot on the file-only Agg backend."""
  code = ("import sys\n"
          "import unetjax.tasks.instances, unetjax.tasks.segmentation\n"
          "from unetjax.training import writers\nfrom unetjax.viz import plots\n"
          "print(sorted(m for m in ('sklearn', 'matplotlib.pyplot', 'keras')"
          " if m in sys.modules))\n"
          "import sklearn.metrics\n"
          "print(sklearn.metrics.confusion_matrix([0, 1, 1], [0, 1, 0])"
          ".tolist())\n"
          "print(plots.pyplot().get_backend().lower())\n")
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.splitlines() == ["['keras']", "[[1, 0], [1, 1]]", "agg"]
