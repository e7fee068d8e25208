r"""Exports a trained DIS model as a SavedModel for TensorFlow Serving.

  python export/export_saved_model.py --model_dir=/runs/voc12 \
      --export_dir=/models/dis [--t_test=30] [--latent.step_size=1.0] \
      [--input_size=353] [--version=N] [--precision=mixed_bfloat16]

Writes version N (default: the next free integer) of the TF Serving model
base path --export_dir, atomically, with warmup records:

  export_dir/<version>/saved_model.pb
  export_dir/<version>/variables/
  export_dir/<version>/assets.extra/tf_serving_warmup_requests

The serving graph runs the paper's test-time inference: the backbone, t_test
latent steps (--t_test, short for --latent.t_test; default the run's
config, the paper's 30), the tag-refined labelmap. --precision (short for
--model.precision; default the run's, float32) sets the backbone's dtype
policy in the graph: "mixed_bfloat16" serves a float32-trained model with
a bf16 backbone on CPUs with bf16 units (the latent loop stays float32);
the `metadata` signature records it. Any field of the run's
configuration can be overridden by its flag (see --helpfull). The signatures
and their inputs and outputs are documented in `dis_tf/serving/module.py`
and docs/SERVING.md; the library is `dis_tf.serving`.
"""

from absl import flags

from dis_tf import errors
from dis_tf import flags as dis_flags

FLAGS = flags.FLAGS

dis_flags.define_config_flags(aliases={"t_test": "latent.t_test",
                                       "precision": "model.precision"})
flags.adopt_module_key_flags(dis_flags)
flags.DEFINE_string("export_dir", None,
                    "TF Serving model base path; the version is written to "
                    "an integer sub-directory.")
flags.DEFINE_integer("version", None,
                     "Version sub-directory (default: next free number).")
flags.DEFINE_integer("input_size", None,
                     "Network input size S; images are resized to S x S "
                     "(default: config data.crop_size).")
flags.DEFINE_string("model_name", "dis",
                    "Model name used in the warmup requests.")


def main(argv):
  if dis_flags.run_config(argv) is None:
    return
  # After the flags: see dis_tf/flags.py (tools import TensorFlow only once
  # their flags are known to be good).
  from dis_tf.serving import export_lib
  path = export_lib.export_from_model_dir(
      FLAGS.model_dir, FLAGS.export_dir,
      overrides=dis_flags.config_overrides(),
      input_size=FLAGS.input_size, version=FLAGS.version,
      model_name=FLAGS.model_name)
  print(f"Exported SavedModel to {path}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["model_dir", "export_dir"])
  errors.run(main)
