"""Training speed, memory and input throughput of a config, next to PyTorch.

  unetjax-benchmark                      # the reference U-Net, JAX and torch
  unetjax-benchmark --config default --frameworks jax --steps 20
  unetjax-benchmark --layers             # its convolutions level by level
  unetjax-benchmark --predict            # overlap-tile inference vs MONAI
  unetjax-benchmark --startup            # start-up and exit of a training
  unetjax-benchmark --instances --minutes 30 --set data.dir=DSB \
      --peer-python PEERS/bin/python     # nuclei vs StarDist and Cellpose
  unetjax-benchmark --scale --set data.dir=../shared/data/dsb2018
                                         # peak RSS, steps/s: 1x, 10x data

Every measurement runs in a fresh process (the figures include nothing
another framework left behind), JAX and PyTorch alternating, `--repeats`
times; the table shows the median over repeats. The JAX side runs the
package's own `build_experiment` / `jit_steps` on the config's real input
pipeline, so it measures what `unetjax-train` runs (`--input fixed` steps
on one batch of training examples held on the device instead, for machines
without TensorFlow). The PyTorch side is the same U-Net written in torch
(`pip install -e .[bench]`), skipped when torch is not installed. FLOPs are
counted from the convolutions and matmuls of the traced model (XLA's cost
analysis of the compiled step is reported beside them; on a GPU it misses
the cuDNN convolutions) and compared with a matmul peak, in the compute
dtype, measured in each run.
"""
import argparse
import json
import sys

from unetjax.benchmarks import common, torch_unet, training
from unetjax.benchmarks import layers as layer_benchmark
from unetjax.benchmarks.common import REFERENCE
from unetjax.benchmarks.training import FIXED, PIPELINE


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=REFERENCE,
                      help=f"'{REFERENCE}', a name under configs/ or a path")
  parser.add_argument("--steps", type=int, default=10,
                      help="timed steps per run, after the first")
  parser.add_argument("--repeats", type=int, default=3,
                      help="fresh-process runs per framework")
  parser.add_argument("--batch-size", type=int, default=0,
                      help="override the config's batch size (0 keeps it)")
  parser.add_argument("--dtype", default="",
                      help="override the config's compute dtype (bfloat16)")
  parser.add_argument("--set", action="append", default=[],
                      metavar="KEY=VALUE",
                      help="override a config value, e.g. data.dir=/data")
  parser.add_argument("--input", choices=(PIPELINE, FIXED), default=PIPELINE,
                      help="JAX input: the tf.data pipeline with "
                           "augmentation, or one batch kept on the device")
  parser.add_argument("--frameworks", default="jax,torch")
  parser.add_argument("--json", default="",
                      help="also write all results to this file")
  parser.add_argument("--layers", action="store_true",
                      help="time the U-Net's 3x3 convolutions level by "
                           "level instead of the train step")
  parser.add_argument("--predict", action="store_true",
                      help="overlap-tile inference next to MONAI "
                           "(unetjax/benchmarks/predict.py; --config "
                           "defaults to isbi2012 there)")
  parser.add_argument("--startup", action="store_true",
                      help="process start to first train step (cold and "
                           "warm compilation cache) and last line to exit "
                           "of unetjax-train (unetjax/benchmarks/startup.py; "
                           "--config defaults to default there, --steps "
                           "are the run's steps)")
  parser.add_argument("--scale", action="store_true",
                      help="peak RSS and steps/s of --steps training steps "
                           "on the DSB set of data.dir made N times larger "
                           "(unetjax/benchmarks/scale.py; --config defaults "
                           "to dsb2018 there)")
  parser.add_argument("--scale-factors", default="1,10",
                      help="--scale: the factors N, comma-separated")
  parser.add_argument("--scale-root", default="/tmp/unetjax-scale",
                      help="--scale: where the N-times sets are linked")
  parser.add_argument("--scale-eval", type=int, default=60,
                      help="--scale: validation images evaluated per run")
  from unetjax.benchmarks import predict as predict_benchmark  # pylint: disable=g-import-not-at-top
  predict_benchmark.add_arguments(parser)
  from unetjax.benchmarks import instances as instances_benchmark  # pylint: disable=g-import-not-at-top
  instances_benchmark.add_arguments(parser)
  parser.add_argument("--worker", choices=("jax", "torch", "jax-layers",
                                           "torch-layers", "scale"),
                      help=argparse.SUPPRESS)
  parser.add_argument("--spec", default="", help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.layers and (args.dtype or args.input != PIPELINE):
    sys.exit("--layers times float32 convolutions on random inputs: "
             "--dtype and --input do not apply to it")
  if args.worker == "jax":
    print(json.dumps(training.run_jax(args.config, args.steps, args.batch_size,
                             args.dtype, args.set, args.input)))
    return
  if args.worker == "torch":
    print(json.dumps(torch_unet.run_torch(json.loads(args.spec), args.steps)))
    return
  if args.worker in ("jax-layers", "torch-layers"):
    run = (layer_benchmark.run_jax if args.worker == "jax-layers"
           else layer_benchmark.run_torch)
    print(json.dumps(run(json.loads(args.spec), args.steps)))
    return
  if args.worker == "scale":
    from unetjax.benchmarks import scale as scale_benchmark  # pylint: disable=g-import-not-at-top
    print(json.dumps(scale_benchmark.run_worker(json.loads(args.spec))))
    return
  if args.scale:
    from unetjax.benchmarks import scale as scale_benchmark  # pylint: disable=g-import-not-at-top
    scale_benchmark.main(args)
    return
  if args.instances:
    from unetjax.benchmarks import instances as instances_benchmark  # pylint: disable=g-import-not-at-top
    result = instances_benchmark.main(args)
    if args.json:
      with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    return
  if args.startup:
    from unetjax.benchmarks import startup as startup_benchmark  # pylint: disable=g-import-not-at-top
    result = startup_benchmark.main(args)
  elif args.predict:
    from unetjax.benchmarks import predict as predict_benchmark  # pylint: disable=g-import-not-at-top
    if args.frameworks == "jax,torch":
      args.frameworks = "jax,monai"
    result = predict_benchmark.main(args)
  else:
    result = _train_or_layers(args)
  failed = common.failures((result or {}).get("runs", {}))
  if failed:
    sys.exit(f"error: {len(failed)} benchmark run(s) failed, so the table "
             f"is incomplete; the first: {failed[0]}")


def _train_or_layers(args) -> dict:
  """The default mode (the train step) or `--layers`: its result."""
  with_torch = "torch" in args.frameworks.split(",")
  if with_torch and not common.torch_available():
    print("torch is not installed (pip install -e .[bench]): JAX only.",
          file=sys.stderr)
    with_torch = False
  if args.layers:
    result = layer_benchmark.benchmark_layers(args.config, steps=args.steps,
                              repeats=args.repeats,
                              batch_size=args.batch_size,
                              assignments=args.set, with_torch=with_torch)
    print(layer_benchmark.table(result["summary"]))
  else:
    result = training.benchmark(args.config, steps=args.steps, repeats=args.repeats,
                       batch_size=args.batch_size, dtype=args.dtype,
                       assignments=args.set, with_torch=with_torch,
                       input_mode=args.input)
    print(training.table(result))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return result

if __name__ == "__main__":
  main()
