"""Nuclei side by side: the package, StarDist and Cellpose trained on the
package's own DSB 2018 split for the same wall-clock budget, then scored
on its test split with the package's metric and with StarDist's.

  unetjax-benchmark --instances --minutes 30 \\
      --set data.dir=../shared/data/dsb2018 --peer-python ../peers-venv/bin/python

One tool after another, each in fresh processes (train, then predict):

1. The split is the package's (`configs/dsb2018.py`'s data section and any
   `--set data.*`, e.g. `data.max_images` for a quick run): the train, val
   and test image ids of `unetjax.data.dsb2018.split_ids`. Each image and
   its instance map are written once as TIFFs for the peers (gray, as
   their DSB examples take it; whole images, not the package's training
   tiles) under OUT/data, with the test images' original PNGs beside.
2. The package trains `--config` (default dsb2018) with `unetjax-train`;
   `num_steps` is sized to the budget from its own step time measured
   first (`--package-steps` sets it), and a SIGTERM at the budget ends the
   run with a checkpoint either way. It then predicts the test PNGs with
   `unetjax-predict --instances` (best checkpoint by validation, else the
   latest).
3. StarDist and Cellpose run `instance_peers.py` (its docstring lists
   their defaults and what is changed) with `--peer-python`, which may be
   another environment: Cellpose 3.1 pins numpy < 2.1, below this
   package's, so the peers cannot live beside it. A peer whose package
   that Python lacks is skipped, with a line saying so.
4. Every tool's test objects are scored by `unetjax.instances.metrics`
   (challenge score and AP@0.5 as means over images, as the challenge
   does; F1@0.5 and AP@0.5 pooled over images, as the StarDist paper
   does), and by `stardist.matching.matching_dataset` in both conventions
   where StarDist is installed.

Budget: each tool's clock starts when its training starts: the package's
at the start of `unetjax-train` (reading the data and compiling counted);
a peer's at its training call (its own preparation, such as Cellpose's
flows, counted; importing and reading the TIFFs not). Peak RSS is the
larger of the training and predicting processes'.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from unetjax.benchmarks import common

PEERS = ("stardist", "cellpose")
TOOLS = ("unetjax",) + PEERS
_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "instance_peers.py")
_GRACE_S = 120  # after the budget's SIGTERM: the checkpoint being written


def add_arguments(parser) -> None:
  parser.add_argument("--instances", action="store_true",
                      help="nuclei: the package, StarDist and Cellpose "
                           "trained for --minutes each on the package's "
                           "DSB split (unetjax/benchmarks/instances.py)")
  parser.add_argument("--minutes", type=float, default=30.0,
                      help="--instances: training budget of each tool")
  parser.add_argument("--tools", default=",".join(TOOLS),
                      help="--instances: which of " + ", ".join(TOOLS))
  parser.add_argument("--peer-python", default=sys.executable,
                      help="--instances: the Python that has stardist and "
                           "cellpose (another venv; see the docs)")
  parser.add_argument("--package-steps", type=int, default=0,
                      help="--instances: the package's num_steps (0: sized "
                           "to the budget from a measured step)")
  parser.add_argument("--out", default="workdirs/instances_benchmark",
                      help="--instances: folder for data, runs, objects")


def main(args) -> dict:
  """Runs the benchmark `args` asks for; prints and returns its table."""
  from unetjax.runtime.errors import ConfigError  # pylint: disable=g-import-not-at-top
  tools = [t for t in args.tools.split(",") if t]
  unknown = sorted(set(tools) - set(TOOLS))
  if unknown or args.minutes <= 0:
    raise ConfigError(f"--tools {args.tools} / --minutes {args.minutes}: "
                      f"expected tools from {TOOLS} and minutes > 0")
  config_name = "dsb2018" if args.config == common.REFERENCE else args.config
  config = common.load_config(config_name)
  common.override(config, list(args.set))
  data = export_split(config.data, os.path.join(args.out, "data"))
  available = peers_available(args.peer_python)
  budget_s = args.minutes * 60
  rows = []
  for tool in tools:
    if tool in PEERS and not available.get(tool):
      print(f"{tool}: not importable by {args.peer_python} "
            f"({available.get(tool + '_error', '')}); skipped",
            file=sys.stderr)
      continue
    run_dir = os.path.join(args.out, tool)
    if tool == "unetjax":
      result = run_package(config_name, args.set, data, run_dir, budget_s,
                           args.package_steps)
    else:
      result = run_peer(args.peer_python, tool, data, run_dir, budget_s)
    result.update(tool=tool, minutes=args.minutes)
    if "error" not in result:
      result.update(score_predictions(data, result["pred_dir"]))
      if available.get("stardist"):
        result["stardist_matching"] = stardist_matching(
            args.peer_python, data, result["pred_dir"])
    rows.append(result)
  report = dict(command=" ".join(sys.argv), machine=common.machine(),
                split={k: len(v) for k, v in data["ids"].items()},
                peer_versions=available.get("versions", {}), rows=rows)
  print(table(report))
  return report


# --- the split, written out ---------------------------------------------------

def export_split(data_config, out: str) -> dict:
  """The package's train/val/test split as gray TIFFs + instance-id TIFFs
  (`{split}/images/<id>.tif`, `{split}/masks/<id>.tif`) and the test
  images' original files (`test/original/<id>.png`, links)."""
  import tifffile  # pylint: disable=g-import-not-at-top

  from unetjax.data import dsb2018  # pylint: disable=g-import-not-at-top
  examples = dsb2018.find_examples(data_config.dir)
  splits = dsb2018.split_ids(
      sorted(examples), data_config.val_fraction, data_config.test_fraction,
      data_config.split_seed, data_config.get("max_images", 0))
  for name, ids in splits.items():
    for sub in ("images", "masks"):
      os.makedirs(os.path.join(out, name, sub), exist_ok=True)
    for image_id in ids:
      target = os.path.join(out, name, "masks", f"{image_id}.tif")
      if not os.path.exists(target):  # written once; the ids name them
        image, instances = dsb2018.load_example(
            *examples[image_id], channels=1,
            overlaps=data_config.get("overlaps", "error"))
        tifffile.imwrite(os.path.join(out, name, "images",
                                      f"{image_id}.tif"), image[..., 0])
        tifffile.imwrite(target, instances.astype(np.int32))
  originals = os.path.join(out, "test", "original")
  os.makedirs(originals, exist_ok=True)
  for image_id in splits["test"]:
    link = os.path.join(originals, f"{image_id}.png")
    if not os.path.lexists(link):
      os.symlink(os.path.abspath(examples[image_id][0]), link)
  return {"dir": out, "ids": {k: list(v) for k, v in splits.items()}}


# --- the tools ------------------------------------------------------------

def peers_available(python: str) -> dict:
  """Which peers `python` imports, and their versions."""
  code = ("import importlib, json\n"
          "from importlib import metadata\n"
          "r = {'versions': {}}\n"
          "for name in ('stardist', 'cellpose', 'torch', 'tensorflow', "
          "'keras', 'numpy'):\n"
          "  try:\n"
          "    module = importlib.import_module(name)\n"
          "    r[name] = True\n"
          "    r['versions'][name] = (getattr(module, '__version__', None)"
          " or metadata.version(name))\n"
          "  except Exception as e:\n"
          "    r[name] = False\n"
          "    r[name + '_error'] = repr(e)[:200]\n"
          "print(json.dumps(r))\n")
  try:
    done = subprocess.run([python, "-c", code], capture_output=True,
                          text=True, check=False, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])
  except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as e:
    return {"stardist_error": repr(e), "cellpose_error": repr(e)}


def _timed(command: list[str], log: str, timeout_s: float | None = None
           ) -> tuple[subprocess.CompletedProcess, float, int]:
  """(finished process, wall seconds, its peak RSS in bytes); its output
  goes to `log` (.out and .err). At `timeout_s` the process gets SIGTERM
  (the package's cue to checkpoint and stop), and SIGKILL _GRACE_S later.
  The peak RSS is the kernel's for this child (`os.wait4`): the package's
  commands end with `os._exit` and report none themselves."""
  started = time.perf_counter()
  with open(log + ".out", "w") as out, open(log + ".err", "w") as err:
    process = subprocess.Popen(command, stdout=out, stderr=err)
    signals = [(timeout_s, signal.SIGTERM),
               (None if timeout_s is None else timeout_s + _GRACE_S,
                signal.SIGKILL)]
    while True:
      pid, status, usage = os.wait4(process.pid, os.WNOHANG)
      if pid:
        break
      elapsed = time.perf_counter() - started
      if signals and signals[0][0] is not None and elapsed >= signals[0][0]:
        process.send_signal(signals.pop(0)[1])
      time.sleep(0.2)
  process.returncode = os.waitstatus_to_exitcode(status)
  seconds = time.perf_counter() - started
  with open(log + ".out") as out, open(log + ".err") as err:
    done = subprocess.CompletedProcess(command, process.returncode,
                                       out.read(), err.read())
  return done, seconds, usage.ru_maxrss * 1024


def _last_json(done: subprocess.CompletedProcess, ok=(0,)) -> dict:
  """The JSON object of the last stdout line ({} for a process that prints
  none), or {'error': ...} for an exit status outside `ok`."""
  if done.returncode not in ok:
    tail = ((done.stderr or "").strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit {done.returncode}: {tail[:300]}"}
  lines = (done.stdout or "").strip().splitlines()
  try:
    result = json.loads(lines[-1]) if lines else {}
  except ValueError:
    result = {}
  return result if isinstance(result, dict) else {}


def run_peer(python: str, tool: str, data: dict, run_dir: str,
             budget_s: float) -> dict:
  """A peer trained for the budget, then predicting the test images."""
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(run_dir, ignore_errors=True)  # the benchmark's own folder
  os.makedirs(run_dir)
  done, train_s, train_rss = _timed(
      [python, _WORKER, "train", tool, data["dir"], run_dir, str(budget_s)],
      os.path.join(run_dir, "train"), timeout_s=budget_s + 3600)
  trained = _last_json(done)
  if "error" in trained or "steps" not in trained:
    return {"error": trained.get("error", "train printed no result")}
  done, predict_s, predict_rss = _timed(
      [python, _WORKER, "predict", tool, data["dir"], run_dir],
      os.path.join(run_dir, "predict"))
  predicted = _last_json(done)
  if "error" in predicted:
    return predicted
  return dict(trained, train_process_s=train_s, predict_s=predict_s,
              predict_loop_s=predicted.get("predict_loop_seconds"),
              peak_rss_bytes=max(train_rss, predict_rss),
              pred_dir=os.path.join(run_dir, "pred"))


def run_package(config_name: str, assignments: list[str], data: dict,
                run_dir: str, budget_s: float, num_steps: int = 0) -> dict:
  """The package trained for the budget, then predicting the test PNGs."""
  import shutil  # pylint: disable=g-import-not-at-top
  path = config_name if config_name.endswith(".py") else os.path.join(
      "configs", f"{config_name}.py")
  step_s = None
  if not num_steps:
    sets = [arg for a in assignments for arg in ("--set", a)]
    probe = common.run_worker(["jax", "--config", config_name, "--steps", "3",
                               *sets])
    if "error" in probe:
      return {"error": f"step-time probe: {probe['error']}"}
    step_s = probe["step_s"]
    # Start-up (reading, compiling: the probe's time to its first step)
    # and the evaluations share the budget: 85% of the rest for steps.
    startup_s = probe.get("time_to_first_step_s", 0.0)
    num_steps = max(1, int(0.85 * (budget_s - startup_s) / step_s))
  workdir = os.path.join(run_dir, "workdir")
  shutil.rmtree(run_dir, ignore_errors=True)  # the benchmark's own folder
  os.makedirs(run_dir)
  done, train_s, train_rss = _timed(
      [sys.executable, "-m", "unetjax.main", "--config", path, "--workdir",
       workdir, f"--config.num_steps={num_steps}",
       *(f"--config.{a}" for a in assignments)],
      os.path.join(run_dir, "train"), timeout_s=budget_s)
  # 143: stopped by the budget's SIGTERM, with a checkpoint
  trained = _last_json(done, ok=(0, 128 + signal.SIGTERM))
  if "error" in trained:
    return trained
  stopped = done.returncode != 0
  png_dir = os.path.join(run_dir, "objects")
  for checkpoint in ("best", "latest"):
    done, predict_s, predict_rss = _timed(
        [sys.executable, "-m", "unetjax.predict", "--workdir", workdir,
         "--input", os.path.join(data["dir"], "test", "original"),
         "--output", png_dir, "--instances", "--overwrite",
         f"--checkpoint={checkpoint}"],
        os.path.join(run_dir, f"predict_{checkpoint}"))
    predicted = _last_json(done)
    if "error" not in predicted:
      break
  else:
    return predicted
  return dict(steps=_last_step(workdir), planned_steps=num_steps,
              probe_step_s=step_s, params=_params(workdir),
              checkpoint=checkpoint, stopped_by_budget=stopped,
              train_process_s=train_s, predict_s=predict_s,
              peak_rss_bytes=max(train_rss, predict_rss),
              pred_dir=_instances_as_tiffs(png_dir,
                                           os.path.join(run_dir, "pred"),
                                           data["ids"]["test"]))


def _last_step(workdir: str) -> int:
  folder = os.path.join(workdir, "checkpoints")
  steps = [int(n) for n in os.listdir(folder) if n.isdigit()] if (
      os.path.isdir(folder)) else []
  return max(steps, default=0)


def _params(workdir: str) -> int | None:
  try:
    with open(os.path.join(workdir, "model_summary.txt")) as f:
      last = f.read().strip().splitlines()[-1]
    return int(last.split()[-1].replace(",", ""))
  except (OSError, ValueError, IndexError):
    return None


def _instances_as_tiffs(png_dir: str, out: str, ids: list[str]) -> str:
  """predict's `<id>_instances.png` as `<id>.tif`, as the peers write."""
  import tifffile  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(out, exist_ok=True)
  for image_id in ids:
    objects = np.asarray(Image.open(os.path.join(
        png_dir, f"{image_id}_instances.png"))).astype(np.int32)
    tifffile.imwrite(os.path.join(out, f"{image_id}.tif"), objects)
  return out


# --- scores ------------------------------------------------------------------

def score_predictions(data: dict, pred_dir: str) -> dict:
  """The package's object scores of one tool's test objects."""
  import tifffile  # pylint: disable=g-import-not-at-top

  from unetjax.instances import metrics  # pylint: disable=g-import-not-at-top
  rows = []
  for image_id in data["ids"]["test"]:
    truth = tifffile.imread(os.path.join(data["dir"], "test", "masks",
                                         f"{image_id}.tif"))
    found = tifffile.imread(os.path.join(pred_dir, f"{image_id}.tif"))
    if found.shape != truth.shape:
      return {"error": f"{pred_dir}/{image_id}.tif: shape {found.shape}, "
                       f"expected the image's {truth.shape}"}
    rows.append(metrics.image_scores(truth, found))
  scores = metrics.split_scores(rows)
  tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp50", "fp50", "fn50"))
  scores["ap50_pooled"] = tp / max(tp + fp + fn, 1)
  return {"scores": scores}


def stardist_matching(python: str, data: dict, pred_dir: str) -> dict:
  done = subprocess.run(
      [python, _WORKER, "score", os.path.join(data["dir"], "test", "masks"),
       pred_dir], capture_output=True, text=True, check=False)
  return _last_json(done)


def table(report: dict) -> str:
  """The side-by-side table (markdown), with the machine and split."""
  head = ("| tool | budget min | steps | params | test AP@0.5 | challenge "
          "| F1@0.5 | AP@0.5 pooled | StarDist matching: challenge per "
          "image / AP@0.5 pooled | predict s | peak RSS GiB |")
  lines = [head, "|" + " --- |" * 11]
  for row in report["rows"]:
    if "error" in row or "scores" not in row:
      lines.append(f"| {row['tool']} | {row['minutes']:g} | failed: "
                   f"{row.get('error', row.get('scores'))} |")
      continue
    s = row["scores"]
    check = row.get("stardist_matching", {})
    cross = (f"{check['by_image']['challenge_score']:.3f} / "
             f"{check['pooled']['accuracy'][0]:.3f}"
             if "by_image" in check else "-")
    params = f"{row['params']:,}" if row.get("params") else "?"
    lines.append(
        f"| {row['tool']} | {row['minutes']:g} | {row['steps']} | {params} "
        f"| {s['ap50']:.3f} | {s['challenge_score']:.3f} | {s['f1_50']:.3f} "
        f"| {s['ap50_pooled']:.3f} | {cross} | {row['predict_s']:.1f} "
        f"| {row['peak_rss_bytes'] / 2 ** 30:.2f} |")
  m = report["machine"]
  lines.append(f"\n{m['cpu']}, {m['cores']} cores; split {report['split']}; "
               f"peers {report['peer_versions']}")
  return "\n".join(lines)
