r"""Segments your own image files with a trained run or an exported model.

  python tools/predict.py --model_dir=runs/demo/model \
      --images='photos/*.jpg' --output_dir=out [--t_test=10]
  python tools/predict.py --saved_model=runs/demo/export/1 \
      --images=photos/,extra/cat.png --output_dir=out

--images takes files, folders (their .jpg / .jpeg / .png / .gif / .bmp
files) and glob patterns, comma-separated. Per image, --output_dir gets
<stem>_labelmap.png (class ids in the class colours, the input's size),
<stem>_overlay.png (the colours over the image) and one line of
predictions.jsonl (file, tags, per-tag probabilities, t_test); the format
is `dis_tf/prediction_io.py`'s, the one export/client.py writes too.

--model_dir runs in process (the run's config.json; any config field is a
flag, e.g. --latent.step_size); --saved_model loads an export
(export/export_saved_model.py) with tf.saved_model.load and runs its
`serving_steps` signature. Both give the same class ids. --t_test defaults
to the run's (or export's) latent.t_test. A bad input (missing, unreadable,
empty, not an image, zero-size, a folder without images) is named and
skipped (--on_error=skip) or stops the run (--on_error=stop); the last line
counts the images written and skipped. Python: `dis_tf.load_segmenter`.

Time (measured): 10 synthetic JPEGs of about 110 x 120 pixels with a model
of the demo's setting (tiny backbone, input 96), t_test = 30, on 2 CPU
cores shared with other jobs (load average 15): 1 min 16 s wall, 12 s of
CPU time, most of it importing TensorFlow, loading and tracing.
"""

from absl import flags

from dis_tf import errors
from dis_tf import flags as dis_flags
from dis_tf import model_dir as model_dir_lib
from dis_tf import prediction_io

FLAGS = flags.FLAGS

dis_flags.define_config_flags(aliases={
    "t_test": "latent.t_test", "tag_threshold": "latent.tag_threshold"})
flags.adopt_module_key_flags(dis_flags)
flags.DEFINE_string("saved_model", None,
                    "An exported SavedModel version directory (e.g. "
                    "export/1), instead of --model_dir.")
flags.DEFINE_list("images", None,
                  "Image files, folders and glob patterns, comma-separated.")
flags.DEFINE_string("output_dir", None,
                    "Folder for the labelmaps, overlays and "
                    "predictions.jsonl.")
flags.DEFINE_integer("batch_size", 4, "Images per model call.",
                     lower_bound=1)
flags.DEFINE_enum("on_error", "skip", list(prediction_io.ON_ERROR),
                  "A bad input: skip it (named in the log) or stop.")
flags.DEFINE_boolean("progress", True, "Show a progress bar on stderr.")


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f"Unexpected arguments: {argv[1:]}.")
  dis_flags.check_model_source(FLAGS.model_dir, FLAGS.saved_model,
                               FLAGS.images)
  if not FLAGS.output_dir:
    raise errors.UserError("--output_dir is required.")
  overrides = dis_flags.config_overrides()
  # Per call, not configuration: they apply to both sources.
  t_test = overrides.pop("latent.t_test", None)
  tag_threshold = overrides.pop("latent.tag_threshold", None)
  overrides.pop("model_dir", None)
  if FLAGS.model_dir and dis_flags.print_config_and_exit(
      model_dir_lib.load_config(FLAGS.model_dir, overrides)):
    return
  # After the flags: see dis_tf/flags.py (tools import TensorFlow only once
  # their flags are known to be good).
  from dis_tf import segmenter as segmenter_lib
  segmenter = segmenter_lib.load_segmenter(
      FLAGS.model_dir or FLAGS.saved_model, overrides=overrides,
      tag_threshold=tag_threshold)
  summary = segmenter_lib.predict_files(
      segmenter, FLAGS.images, FLAGS.output_dir, t_test=t_test,
      batch_size=FLAGS.batch_size, on_error=FLAGS.on_error,
      progress=FLAGS.progress, echo=print)
  skipped = summary["skipped"]
  for problem in skipped:
    print(f"skipped: {errors.message(problem)}")
  print(f"{summary['written']} images written, {len(skipped)} skipped; "
        f"t_test={segmenter.check_t_test(t_test)}; "
        f"predictions: {summary['predictions']}")


if __name__ == "__main__":
  errors.run(main)
