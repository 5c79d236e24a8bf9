"""`make bench`: the reference U-Net's training speed next to PyTorch.

The same as the `unetjax-benchmark` console script; see unetjax/benchmark.py
for the options (`--help`).
"""
from unetjax import benchmark

if __name__ == "__main__":
  benchmark.main()
