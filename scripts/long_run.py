"""Load check: a long run on the embedded data, with host memory and speed.

Trains the default cells experiment (shrunk, so thousands of steps fit in
minutes on a CPU) with frequent evaluation and checkpointing, samples the
process's resident memory every few seconds, and prints how memory and step
time evolve. A leak (host memory growing with steps) or a slowdown (step
time growing with checkpoints, history or plots) shows as a trend between
the first and the last part of the run. At --minutes the run is stopped
with SIGINT, which also exercises the graceful stop.

  python scripts/long_run.py --workdir /tmp/long_run --minutes 12
"""
import argparse
import json
import os
import signal
import sys
import threading
import time

import numpy as np


def rss_mb() -> float:
  """Resident memory of this process, from /proc (Linux)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  raise RuntimeError("no VmRSS in /proc/self/status")


def sample_memory(samples: list, every_s: float, deadline: float,
                  done: threading.Event) -> None:
  """Appends (seconds, RSS MB) until done; SIGINT at the deadline."""
  start = time.time()
  while not done.wait(every_s):
    samples.append((time.time() - start, rss_mb()))
    if time.time() > deadline:
      os.kill(os.getpid(), signal.SIGINT)
      return


def config(num_steps: int):
  from configs import cells  # pylint: disable=g-import-not-at-top
  cfg = cells.get_config()
  cfg.model.depth, cfg.model.features = 2, 8
  cfg.data.image_size, cfg.data.num_train, cfg.data.num_val = 32, 256, 32
  cfg.batch_size, cfg.eval_batch_size = 8, 32
  cfg.num_steps = num_steps
  cfg.log_every_steps = 100
  cfg.eval_every_steps = 500
  cfg.num_sample_images = 2
  return cfg


def thirds(values: np.ndarray) -> tuple[float, float, float]:
  """Medians of the first, middle and last third."""
  return tuple(float(np.median(part)) for part in np.array_split(values, 3))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--steps", type=int, default=20000)
  parser.add_argument("--minutes", type=float, default=12.0)
  parser.add_argument("--sample_every_s", type=float, default=5.0)
  args = parser.parse_args()
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))  # for configs/

  from unetjax.runtime import history  # pylint: disable=g-import-not-at-top
  from unetjax.runtime.errors import TrainingStopped  # pylint: disable=g-import-not-at-top
  from unetjax.training import train  # pylint: disable=g-import-not-at-top
  samples, done = [], threading.Event()
  sampler = threading.Thread(target=sample_memory, args=(
      samples, args.sample_every_s, time.time() + 60 * args.minutes, done))
  sampler.start()
  try:
    train.train_and_evaluate(config(args.steps), args.workdir)
    stopped = "finished"
  except TrainingStopped as e:
    stopped = str(e)
  finally:
    done.set()
    sampler.join()

  records = history.read(args.workdir)
  speed = np.array([r["steps_per_sec"] for r in records
                    if "steps_per_sec" in r])
  last_step = max(r["step"] for r in records)
  memory = np.array([mb for _, mb in samples])
  warm = memory[len(memory) // 10:]  # after compile and first checkpoints
  summary = {
      "run": stopped,
      "steps": last_step,
      "checkpoints_written": last_step // config(1).eval_every_steps,
      "rss_mb_min_max_after_warmup": [round(float(warm.min()), 1),
                                      round(float(warm.max()), 1)],
      "rss_mb_median_by_third": [round(x, 1) for x in thirds(warm)],
      "steps_per_sec_median_by_third": [round(x, 1) for x in thirds(speed)],
      "ms_per_step_p10_p50_p90": [round(1000 / x, 2) for x in
                                  np.percentile(speed, [90, 50, 10])],
      "memory_samples": len(memory),
  }
  with open(os.path.join(args.workdir, "long_run.json"), "w") as f:
    json.dump({"summary": summary, "rss_mb": samples,
               "steps_per_sec": speed.tolist()}, f)
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  main()
