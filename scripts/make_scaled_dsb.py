"""Makes a DSB 2018 set N times larger at no disk cost, for scale checks.

  python scripts/make_scaled_dsb.py --dsb-dir ../shared/data/dsb2018 \\
      --out /tmp/dsb_x10 --times 10

Every image folder appears N times (ids `<id>`, `<id>_x1`, ...), each a
symbolic link to the original folder; the package's stored-example cache is
keyed by the files' real paths, so the copies share it. `unetjax-benchmark
--scale` makes these itself and measures peak RSS and steps/s on them.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from unetjax.benchmarks import scale  # pylint: disable=g-import-not-at-top,wrong-import-position


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dsb-dir", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--times", type=int, default=10)
  args = parser.parse_args()
  count = scale.make_scaled(args.dsb_dir, args.out, args.times)
  print(f"{args.out}: {count} image folders ({args.times} x)")


if __name__ == "__main__":
  main()
