r"""Draws figure-4/5-style grids of DIS predictions for chosen images.

Columns: image, downsampled image target I, reconstruction z3 (largest t),
labelmap at t = 0 and at each --t_test, ground truth; VOC colours with a
legend of the class names.

Example (4 synthetic val images, tiny backbone: about 10 seconds):

  python tools/visualize.py --model_dir=runs/synthetic --split=val \
      --num_images=4 --t_test=10,30 --output=figures/val.png

  python tools/visualize.py --model_dir=runs/synthetic \
      --file_names=val_000000,val_000007 --output=figures/two.png

Any field of the run's configuration can be overridden by its flag (see
--helpfull); --split is a short name of --data.eval_split.
"""

import os

from absl import flags

from dis_tf import classes
from dis_tf import errors
from dis_tf import flags as dis_flags

FLAGS = flags.FLAGS

dis_flags.define_config_flags(aliases={"split": "data.eval_split"})
dis_flags.define_t_test(None, "Step counts drawn besides t=0, e.g. 10,30 "
                        "(default config latent.t_test).")
flags.adopt_module_key_flags(dis_flags)
flags.DEFINE_integer("num_images", 4,
                     "Number of images (the first N of the split); ignored "
                     "with --file_names.", lower_bound=1)
flags.DEFINE_list("file_names", None,
                  "Image ids to draw (file name with or without extension), "
                  "in this order.")
flags.DEFINE_string("output", None,
                    "PNG path (default MODEL_DIR/figures/SPLIT.png).")
flags.DEFINE_string("title", None, "Optional figure title.")


def _key(name):
  return os.path.splitext(os.path.basename(name))[0]


def select_examples(dataset, file_names=None, num_images=4):
  """The first `num_images` examples, or those named by `file_names`.

  Args:
    dataset: iterable of example dicts with "file_name".
    file_names: ids (basename with or without extension), or None.
    num_images: count without `file_names`.

  Returns:
    List of example dicts (in the order of `file_names` if given).

  Raises:
    ValueError: naming ids that are not in the split.
  """
  if not file_names:
    examples = []
    for example in dataset:
      if len(examples) >= num_images:
        break
      examples.append(example)
    return examples
  from dis_tf import evaluation  # After the flags: see dis_tf/flags.py.
  wanted = {_key(n): n for n in file_names}
  found = {}
  for index, example in enumerate(dataset):
    key = _key(evaluation.example_file_name(example, index))
    if key in wanted and key not in found:
      found[key] = example
      if len(found) == len(wanted):
        break
  missing = [wanted[k] for k in wanted if k not in found]
  if missing:
    raise errors.UserError(f"--file_names: {missing} not found in the split.")
  return [found[_key(n)] for n in file_names]


def main(argv):
  run = dis_flags.load_run(argv)
  if run is None:
    return
  # After the flags and the run's config: see dis_tf/flags.py (tools import
  # TensorFlow only once their flags are known to be good).
  from dis_tf import quality
  from dis_tf import visualization
  from dis_tf.data import pipeline
  config, model, split, t_tests = run
  output = FLAGS.output or os.path.join(
      FLAGS.model_dir, "figures", f"{dis_flags.split_file_name(split)}.png")
  # Deterministic order so that "the first N" is the same on every run.
  config.data.deterministic = True
  dataset = pipeline.eval_dataset(config, split)
  examples = select_examples(dataset, FLAGS.file_names, FLAGS.num_images)
  if not examples:
    raise errors.UserError(f"--split={split}: no images.")
  path = visualization.visualize(
      model, examples, t_tests, output,
      class_names=classes.from_config(config).names,
      palette=classes.from_config(config).palette(),
      title=FLAGS.title,
      quality_fit=quality.QualityFit.from_json(config.quality))
  print(f"wrote {path} ({len(examples)} images, t = 0, "
        f"{', '.join(map(str, t_tests))})")


if __name__ == "__main__":
  errors.run(main)
