"""Every `unetjax-benchmark` mode runs the package's own side, tiny and
without the peers (torch, MONAI) imported, and a failed side fails the
command.

The peers' tests skip where torch or MONAI are missing; these never do, so
an API change that breaks the package's side of a benchmark (as
`segment_files` gaining `kinds` once did, unnoticed) fails `make test`.
"""
import json
import os
import subprocess
import sys
import types

import pytest
from conftest import REPO

from unetjax import benchmark
from unetjax.benchmarks import common, training

# A depth-2, 4-feature U-Net on 16x16 cells: every mode accepts it.
TINY = """from configs import cells


def get_config():
  config = cells.get_config()
  config.model.depth = 2
  config.model.features = 4
  config.data.image_size = 16
  config.data.num_train = 8
  config.data.num_val = 4
  config.data.num_test = 4
  config.batch_size = config.eval_batch_size = 4
  config.num_sample_images = 1
  return config
"""

# Runs the command with torch and monai made unimportable, as on a machine
# without the `bench` extra (its workers inherit the hook).
_HIDE = ("import sys; sys.modules.update(torch=None, monai=None); "
         "from unetjax import benchmark; benchmark.main(sys.argv[1:])")


def _run(tmp_path, *args):
  config = tmp_path / "tiny.py"
  config.write_text(TINY)
  out = tmp_path / "result.json"
  hide = tmp_path / "hide"
  hide.mkdir(exist_ok=True)
  # sitecustomize hides the peers in every worker process too.
  (hide / "sitecustomize.py").write_text(
      "import sys\nsys.modules.update(torch=None, monai=None)\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(hide), REPO, os.environ.get("PYTHONPATH", "")]))
  done = subprocess.run(
      [sys.executable, "-c", _HIDE, "--config", str(config), "--repeats",
       "1", "--json", str(out), *args], cwd=REPO, env=env,
      capture_output=True, text=True, check=False, timeout=600)
  assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
  result = json.loads(out.read_text()) if out.exists() else {}
  assert not common.failures(result.get("runs", {})), result
  return result


def test_training_mode_runs_the_packages_step(tmp_path):
  result = _run(tmp_path, "--steps", "1", "--frameworks", "jax,torch")
  (run,) = result["runs"]["jax"]
  assert run["images_per_s"] > 0 and run["num_params"] > 0
  assert result["runs"]["torch"] == []  # not installed: skipped, not failed


def test_layers_mode_times_every_level(tmp_path):
  result = _run(tmp_path, "--layers", "--steps", "1")
  (run,) = result["runs"]["jax"]
  assert len(run["seconds"]) == 3  # depth 2: two levels and the bottleneck
  assert all(s > 0 for level in run["seconds"] for s in level.values())


def test_predict_mode_segments_both_cases(tmp_path):
  result = _run(tmp_path, "--predict", "--pages", "2", "--size", "40")
  for case in ("stack", "image"):
    (run,) = result["runs"][case]["jax"]
    assert run["written"] == 1 and run["megapixels_per_s"] > 0, case
    assert "monai" not in result["runs"][case]  # not installed


def test_startup_mode_reaches_every_mark(tmp_path):
  result = _run(tmp_path, "--startup", "--steps", "1")
  for kind in ("cold", "warm"):
    assert result["summary"][kind]["first_step_s"] > 0, kind


@pytest.mark.parametrize("mode", ["", "--layers", "--predict", "--startup"])
def test_a_failed_side_makes_the_command_fail(monkeypatch, capsys, mode):
  failed = {"runs": {"case": {"jax": [dict(error="TypeError: boom")]}},
            "summary": {}}
  fake = lambda *a, **k: failed  # pylint: disable=unnecessary-lambda-assignment
  monkeypatch.setattr(training, "benchmark", fake)
  monkeypatch.setattr(benchmark.layer_benchmark, "benchmark_layers", fake)
  monkeypatch.setattr(training, "table", lambda result: "table")
  monkeypatch.setattr(benchmark.layer_benchmark, "table",
                      lambda summary: "table")
  for name in ("predict", "startup"):
    module = types.SimpleNamespace(main=lambda args: failed)
    monkeypatch.setitem(sys.modules, f"unetjax.benchmarks.{name}", module)
    monkeypatch.setattr(sys.modules["unetjax.benchmarks"], name, module,
                        raising=False)
  monkeypatch.setattr(benchmark, "parse_args", _parser_without_predict_group)
  with pytest.raises(SystemExit) as stop:
    benchmark.main([mode] if mode else [])
  assert stop.value.code == ("error: 1 benchmark run(s) failed, so the "
                             "table is incomplete; the first: case jax: "
                             "TypeError: boom")


def _parser_without_predict_group(argv):
  return types.SimpleNamespace(
      config="reference", steps=1, repeats=1, batch_size=0, dtype="",
      set=[], input="pipeline", frameworks="jax", json="",
      layers="--layers" in argv, predict="--predict" in argv,
      startup="--startup" in argv, scale=False, instances=False,
      worker=None, spec="")


def test_failures_name_where_each_run_failed():
  runs = {"stack": {"jax": [dict(error="a"), dict(x=1)],
                    "monai": [dict(error="b")]},
          "image": {"jax": [dict(x=2)]}}
  assert common.failures(runs) == ["stack jax: a", "stack monai: b"]
  assert common.failures({"cold": [dict(x=1)], "warm": []}) == []
