"""Writes the synthetic DIS benchmark (a VOC 2012 tree + a web-tag folder).

  python tools/make_synthetic.py --out /tmp/dis_synth [--seed 0 ...]

The tree is read unchanged by the `voc2012_segmentation` and `web_tags`
builders: point `--voc_dir` at DIR and `--weak_dir` at DIR/web_tags. The
design of the data is documented in dis_tf/data/synthetic.py and
docs/DATA.md.
"""

from absl import flags

from dis_tf import errors
from dis_tf.data import synthetic

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
flags.DEFINE_bool("force", False,
                  "Regenerate even if a complete tree with the same "
                  "parameters exists.")


def main(argv):
  del argv
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
