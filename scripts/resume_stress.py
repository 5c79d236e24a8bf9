"""Kills a training run many times at random moments, under CPU load, and
checks the chain still ends bit-identical to one uninterrupted run.

  python scripts/resume_stress.py --chains 10 --kills 4 --load 2

`tests/test_resume.py` kills at named points (a checkpoint commit, between
steps, in an evaluation); this kills at random times instead (SIGKILL
after a uniform random delay, so also during start-up, compilation, the
compile-ahead thread, a collection, Orbax's background writes), `--load`
busy processes competing for the cores meanwhile. Every run, the
reference included, is the real command line in a fresh process, so all
of them get the same XLA flags and compilation cache. Each chain ends with
a run to num_steps; its parameters, optimizer and RNG state, metrics.json
and train/val history must equal the reference's exactly. Prints one line
per chain and a summary; exits 1 if any chain differed.
(docs/reliability.md gives the figures of the last runs.)
"""
import argparse
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests import test_resume  # pylint: disable=wrong-import-position

NUM_STEPS = 24


def command(workdir: str) -> list[str]:
  config = test_resume._config(num_steps=NUM_STEPS)  # pylint: disable=protected-access
  return [sys.executable, "-m", "unetjax.main", "--config",
          os.path.join(REPO, "configs", "cells.py"), "--workdir", workdir,
          *test_resume._cli_overrides(config)]  # pylint: disable=protected-access


def run(workdir: str, kill_after: float | None, log) -> int:
  process = subprocess.Popen(command(workdir), cwd=REPO, stdout=log,
                             stderr=subprocess.STDOUT,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  if kill_after is None:
    return process.wait()
  try:
    return process.wait(timeout=kill_after)
  except subprocess.TimeoutExpired:
    process.kill()
    return process.wait()


def differences(workdir: str, reference: str) -> list[str]:
  found = []
  if test_resume.results(workdir) != test_resume.results(reference):
    found.append("metrics.json or history differ")
  for i, (a, b) in enumerate(zip(
      test_resume.final_state(workdir, NUM_STEPS),
      test_resume.final_state(reference, NUM_STEPS), strict=True)):
    if not np.array_equal(a, b):
      found.append(f"state leaf {i}: max |diff| "
                   f"{np.max(np.abs(a.astype(np.float64) - b)):.3g}")
  return found


def _burn(stop_at: float) -> None:
  x = 0
  while time.time() < stop_at:
    x = (x * 1103515245 + 12345) % 2 ** 31


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--chains", type=int, default=5)
  parser.add_argument("--kills", type=int, default=4,
                      help="random SIGKILLs per chain before the last run")
  parser.add_argument("--load", type=int, default=2,
                      help="busy processes running meanwhile")
  parser.add_argument("--max-delay", type=float, default=40.0,
                      help="a kill comes 1..this many seconds after start")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--keep", default="", help="keep workdirs here")
  args = parser.parse_args()
  rng = random.Random(args.seed)
  root = args.keep or tempfile.mkdtemp(prefix="resume_stress_")
  os.makedirs(root, exist_ok=True)
  burners = [multiprocessing.Process(target=_burn, args=(time.time() + 1e6,),
                                     daemon=True) for _ in range(args.load)]
  for burner in burners:
    burner.start()
  failed = 0
  try:
    reference = os.path.join(root, "reference")
    with open(reference + ".log", "w") as log:
      assert run(reference, None, log) == 0, f"see {reference}.log"
    for chain in range(args.chains):
      workdir = os.path.join(root, f"chain{chain}")
      delays = [round(rng.uniform(1, args.max_delay), 1)
                for _ in range(args.kills)]
      with open(workdir + ".log", "w") as log:
        for delay in delays:
          run(workdir, delay, log)
        code = run(workdir, None, log)
      found = ["exit code %d" % code] if code else differences(workdir,
                                                               reference)
      failed += bool(found)
      print(f"chain {chain}: kills after {delays} s: "
            + ("; ".join(found[:3]) if found else "bit-identical"),
            flush=True)
      if not args.keep and not found:
        shutil.rmtree(workdir)
  finally:
    for burner in burners:
      burner.terminate()
  print(f"{args.chains - failed} of {args.chains} chains bit-identical "
        f"(load {args.load}, {args.kills} kills each; {root})")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
