"""Loads the full dsb2018 set (all three splits), printing time and memory.

    python scripts/time_dsb2018_load.py ../shared/data/dsb2018 --channels 1
    python scripts/time_dsb2018_load.py ../shared/data/dsb2018 --no_cache

Run it twice to see the load with a cold and a warm instance-map cache.
"""
import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from unetjax.data import dsb2018  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("dsb_dir")
  parser.add_argument("--channels", type=int, default=1)
  parser.add_argument("--no_cache", action="store_true")
  args = parser.parse_args(argv)
  start = time.time()
  data = dsb2018.build(dir=args.dsb_dir, channels=args.channels,
                       overlaps="later", cache=not args.no_cache)
  for name in ("train", "val", "test"):
    begin = time.time()
    split = data.split(name)
    if args.no_cache:  # held in memory, padded
      print(f"{name}: {len(split)} examples of {split.images.shape[1:]} "
            f"{split.images.dtype}, images "
            f"{split.images.nbytes / 2**20:.0f} MiB + labels "
            f"{split.labels.nbytes / 2**20:.0f} MiB, "
            f"{time.time() - begin:.1f} s")
    else:  # stored on disk, one file per image: nothing held
      print(f"{name}: {len(split)} stored examples, sizes "
            f"{split.sizes.min(axis=0).tolist()} to "
            f"{split.sizes.max(axis=0).tolist()}, {time.time() - begin:.1f} s")
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"channels={args.channels} cache={not args.no_cache}: "
        f"{time.time() - start:.1f} s in all, peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
  main()
