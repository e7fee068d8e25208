"""Writes the synthetic DIS benchmark (a VOC 2012 tree + a web-tag folder).

  python tools/make_synthetic.py --out /tmp/dis_synth [--seed 0 ...]

With --classes=classes.txt it writes a dataset of those classes (their
count, names and colours) in the own-data layout that tools/prepare_data.py
reads instead (dis_tf/data/synthetic_folder.py): --num_train labelled
images, --num_weak weak ones, --image_size pixels a side, --weak_index
captions or tags:

  python tools/make_synthetic.py --out my_data --classes=classes.txt \
      --num_train=100 --num_weak=400 --image_size=96

The tree is read unchanged by the `voc2012_segmentation` and `web_tags`
builders: point `--voc_dir` at DIR and `--weak_dir` at DIR/web_tags. The
design of the data is documented in dis_tf/data/synthetic.py and
docs/DATA.md.
"""

from absl import flags

from dis_tf import classes
from dis_tf import errors
from dis_tf.data import synthetic
from dis_tf.data import synthetic_folder

_D = synthetic.DEFAULTS
FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output folder.", required=True)
flags.DEFINE_integer("seed", _D["seed"], "Random seed.")
# One flag per generator parameter, its default the generator's.
_HELP = {
    "num_train": "Labelled train images.",
    "num_val": "Labelled val images.",
    "num_weak": "Web-tag (weak) images.",
    "num_tags_only": "VOC images with XML tags but no mask.",
    "num_aug": "Extra SegmentationClassAug images (0: no train_aug).",
    "image_size": "Largest image side; sides are drawn in [0.75, 1] x it.",
    "p_miss": "Probability of dropping each true tag of a weak image.",
    "p_spurious": "Probability of adding each absent class to a weak image.",
    "caption_fraction": "Fraction of weak images annotated with a caption.",
    "boundary_width": "Width of the 255 boundary band in labelled masks.",
}
for _name, _text in _HELP.items():
  _define = (flags.DEFINE_float if isinstance(_D[_name], float)
             else flags.DEFINE_integer)
  _define(_name, _D[_name], _text)
flags.DEFINE_string("classes", None,
                    "A class file: write a dataset of its classes in the "
                    "own-data layout of tools/prepare_data.py instead.")
flags.DEFINE_enum("weak_index", "captions", ["captions", "tags"],
                  "With --classes: weak/captions.tsv or weak/tags.jsonl.")
flags.DEFINE_bool("force", False,
                  "Regenerate even if a complete tree with the same "
                  "parameters exists.")


def main(argv):
  del argv
  if FLAGS.classes:
    class_set = classes.load_class_set(FLAGS.classes)
    synthetic_folder.write_plain_folder(
        FLAGS.out, class_set, num_labelled=FLAGS.num_train,
        num_weak=FLAGS.num_weak, image_size=FLAGS.image_size,
        seed=FLAGS.seed, index=FLAGS.weak_index)
    print(f"{FLAGS.num_train} labelled and {FLAGS.num_weak} weak images of "
          f"{class_set.describe()} in {FLAGS.out} (use "
          f"tools/prepare_data.py --source={FLAGS.out})")
    return
  params = {name: FLAGS[name].value for name in synthetic.DEFAULTS
            if name in FLAGS}
  if FLAGS.force:
    summary = synthetic.generate_benchmark(FLAGS.out, **params)
  else:
    summary = synthetic.ensure_synthetic_benchmark(FLAGS.out, **params)
  counts = summary["counts"]
  print(f"VOC tree:  {summary['voc_root']}  "
        f"(use --voc_dir {summary['voc_dir']})")
  print(f"  train={counts['train']} val={counts['val']} "
        f"tags_only={counts['tags_only']} aug={counts['aug']}")
  print(f"Web tags:  {summary['weak_dir']}  (use --weak_dir "
        f"{summary['weak_dir']})")
  print(f"  weak={counts['weak']} (captions: {counts['weak_captions']}); "
        f"evaluation-only truth in {summary['weak_dir']}/truth/")
  if summary.get("reused"):
    print(f"Already complete in {FLAGS.out} (same parameters); not "
          "regenerated (use --force to regenerate).")
  else:
    print(f"Generated in {summary['seconds']} s.")


if __name__ == "__main__":
  errors.run(main)
