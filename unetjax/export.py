"""Export a trained workdir for other tools: `python -m unetjax.export`.

  unetjax-export --workdir workdirs/default --out exports/nuclei \
      [--format bioimageio|onnx|stablehlo] [--checkpoint best] [--overwrite]
  unetjax-export --model nuclei --out exports/nuclei   # the shipped model

bioimageio (default): a BioImage Model Zoo 0.5 package (ONNX weights,
axes, valid sizes, the training's normalisation, test tensors, cover,
docs with the held-out scores), checked by `bioimageio.core.test_model`,
as a folder and a zip for deepImageJ/Fiji, ilastik, QuPath and
bioimage.io; needs the `export` extra. onnx: model.onnx (opset 17, NCHW,
height and width free, probabilities). stablehlo: `jax.export` of the
forward pass for JAX users. `unetjax-predict --model OUT` runs an onnx or
bioimageio export. A failed export writes nothing.
"""
import sys

from absl import flags

from unetjax.runtime import cli, console

FLAGS = flags.FLAGS


def main(argv):
  cli.no_arguments(argv)
  cli.quiet_library_logs(read_only=True)
  console.quiet_terminal()  # no TPU-backend INFO line on a CPU machine
  try:
    from unetjax.formats import exporter  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    cli.fail(f"unetjax-export needs {e.name}, of the export extra: pip "
             "install 'unetjax[export]'")
  with cli.user_errors():
    if (FLAGS.workdir is None) == (FLAGS.model is None):
      cli.fail("give one of --workdir (a training run) and --model (a "
               "shipped model: nuclei)")
    written = exporter.export(
        FLAGS.workdir, FLAGS.out, fmt=FLAGS.format,
        checkpoint=FLAGS.checkpoint, overwrite=FLAGS.overwrite,
        name=FLAGS.name, author=FLAGS.author, test_image=FLAGS.test_image,
        shipped=FLAGS.model)
  print(f"Wrote {FLAGS.format} export to {FLAGS.out}: "
        f"{', '.join(p.rsplit('/', 1)[-1] for p in written)}")


def run(argv: list[str] | None = None):
  """Console-script entry point (`unetjax-export`)."""
  flags.DEFINE_string("workdir", None, "Workdir of a segmentation run.")
  flags.DEFINE_string("model", None, "Instead of --workdir: a model shipped "
                      "in the package (nuclei).")
  flags.DEFINE_string("out", None, "Folder to write the export to.",
                      required=True)
  flags.DEFINE_enum("format", "bioimageio", ["bioimageio", "onnx",
                                             "stablehlo"],
                    "What to write.")
  flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step.")
  flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")
  flags.DEFINE_string("name", None, "Model name (default: the workdir's).")
  flags.DEFINE_string("author", "unetjax", "Author named in the package.")
  flags.DEFINE_string("test_image", None, "Image for the package's test "
                      "tensors (default: an embedded nuclei image).")
  cli.run(main, sys.modules[__name__], argv)


if __name__ == "__main__":
  run()
