"""Segment new images of any size: `python -m unetjax.predict`.

  python -m unetjax.predict --workdir workdirs/cells --input 'scans/*.png' \
      --output predictions --probabilities --overlay --tta

Restores a checkpoint of a segmentation workdir and runs it by overlap-tile
inference (`unetjax.inference.tiling`): tiles of at most --tile_size pixels, batched,
the image border mirrored, so an image may be far larger than the training
crop and of any size. For `<name>.<ext>` it writes `<name>_mask.png`
(class ids: 0 background, 1 foreground, ...), on request
`<name>_prob.png` (foreground probability, or the winning class's, x255)
and `<name>_overlay.png`; for a run of the instance task, `--instances`
writes `<name>_instances.png` (16-bit object ids, 0 background; the
task's own post-processing of the prediction) and makes the overlay show
each object in its own colour, outlined. TIFF input gives TIFF output, a
multi-page stack page by page. Every input is read and checked before
anything is written.

--model DIR_OR_ZIP instead of --workdir runs what `unetjax-export` wrote
(an onnx or bioimageio export, or the bioimage.io zip) with onnxruntime;
--model nuclei runs the nuclei model shipped in the package
(`unetjax/inference/weights/nuclei/MODEL_CARD.md`), no training needed.
"""
import sys

from absl import flags

from unetjax.inference import pretrained, segment
from unetjax.runtime import cli, console
from unetjax.training import parallel

FLAGS = flags.FLAGS


def main(argv):
  cli.no_arguments(argv)
  cli.quiet_library_logs(read_only=True)
  console.quiet_terminal()  # no TPU-backend INFO line on a CPU machine
  with cli.user_errors():
    if (FLAGS.workdir is None) == (FLAGS.model is None):
      cli.fail("give one of --workdir (a training run) and --model (an "
               "unetjax-export folder or bioimage.io zip, or a shipped "
               f"model: {', '.join(pretrained.NAMES)})")
    if FLAGS.model is not None and FLAGS["checkpoint"].present:
      cli.fail("--checkpoint picks a checkpoint of --workdir; --model "
               "holds one model: drop --checkpoint")
    if FLAGS.model is not None and pretrained.shipped(FLAGS.model):
      parallel.initialize_distributed()  # XLA flags, compilation cache
      written = segment.predict_files(
          f"the shipped model {FLAGS.model!r}", FLAGS.input, FLAGS.output,
          tile_size=FLAGS.tile_size, batch_size=FLAGS.batch_size,
          tta=FLAGS.tta, probabilities=FLAGS.probabilities,
          overlay=FLAGS.overlay, overwrite=FLAGS.overwrite,
          instances=FLAGS.instances,
          loader=lambda: pretrained.load(FLAGS.model))
      print(f"Wrote {len(written)} files to {FLAGS.output}")
      return
    if FLAGS.model is not None:
      try:
        from unetjax.formats import exported  # pylint: disable=g-import-not-at-top
      except ImportError as e:
        cli.fail(f"--model needs {e.name}, of the export extra: pip install "
                 "'unetjax[export]'")
      if FLAGS.tta:
        cli.fail("--tta runs with --workdir only")
      written = exported.predict_files(
          FLAGS.model, FLAGS.input, FLAGS.output, tile_size=FLAGS.tile_size,
          batch_size=FLAGS.batch_size, probabilities=FLAGS.probabilities,
          overlay=FLAGS.overlay, overwrite=FLAGS.overwrite,
          instances=FLAGS.instances)
      print(f"Wrote {len(written)} files to {FLAGS.output}")
      return
    parallel.initialize_distributed()  # XLA flags, compilation cache
    written = segment.predict_files(
        FLAGS.workdir, FLAGS.input, FLAGS.output, checkpoint=FLAGS.checkpoint,
        tile_size=FLAGS.tile_size, batch_size=FLAGS.batch_size, tta=FLAGS.tta,
        probabilities=FLAGS.probabilities, overlay=FLAGS.overlay,
        overwrite=FLAGS.overwrite, instances=FLAGS.instances)
  print(f"Wrote {len(written)} files to {FLAGS.output}")


def run(argv: list[str] | None = None):
  """Console-script entry point (`unetjax-predict`); flags defined here so
  the tools, which share flag names, can be imported together."""
  flags.DEFINE_string("workdir", None, "Workdir of a segmentation run.")
  flags.DEFINE_string("model", None, "Instead of --workdir: a shipped "
                      f"model ({', '.join(pretrained.NAMES)}), or a folder or "
                      "bioimage.io zip written by unetjax-export (ONNX, run "
                      "by onnxruntime).")
  flags.DEFINE_string("input", None, "Image file, directory or glob.",
                      required=True)
  flags.DEFINE_string("output", None, "Directory for the masks.",
                      required=True)
  flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step.")
  flags.DEFINE_integer("tile_size", 256, "Largest tile side, in pixels.")
  flags.DEFINE_integer("batch_size", 8, "Tiles per forward pass.")
  flags.DEFINE_bool("tta", False, "Average over the 8 flips and rotations.")
  flags.DEFINE_bool("probabilities", False, "Also write probability maps.")
  flags.DEFINE_bool("overlay", False, "Also write the mask over the image.")
  flags.DEFINE_bool("instances", False, "Also write the objects found "
                    "(instance runs): <name>_instances.png, 16-bit ids, 0 = "
                    "background; with --overlay each object in its colour.")
  flags.DEFINE_bool("overwrite", False, "Replace outputs that exist already "
                    "(an input is never replaced).")
  cli.run(main, sys.modules[__name__], argv)


if __name__ == "__main__":
  run()
