r"""Checks a plain folder of your own data and writes what train.py reads.

  python tools/prepare_data.py --source=my_data --output=prepared

The source layout (classes.txt, labelled/images, labelled/masks, weak/ with
captions.tsv or tags.jsonl) and the output are described in
dis_tf/data/folder.py and docs/DATA.md "Your own data". It prints the
counts (images, masks, pixels per class, captions parsed, tags per class,
files skipped); a bad file is one error line naming it (and its line), or
is skipped and counted with --skip_bad_files. Then:

  python tools/train.py --preset=tiny --voc_dir=prepared \
      --weak_dir=prepared/weak --data_dir=prepared/tfds --model_dir=runs/mine
"""

from absl import flags

from dis_tf import errors
from dis_tf.data import folder

FLAGS = flags.FLAGS
flags.DEFINE_string("source", None, "The plain data folder.", required=True)
flags.DEFINE_string("output", None, "Folder to write (must not exist, or "
                    "--overwrite).", required=True)
flags.DEFINE_float("val_fraction", 0.2,
                   "Fraction of the labelled images held out as val (a "
                   "fixed-seed draw), unless labelled/train.txt and "
                   "labelled/val.txt are given.")
flags.DEFINE_boolean("skip_bad_files", False,
                     "Skip and count a bad image, mask or index line "
                     "instead of stopping at the first.")
flags.DEFINE_boolean("overwrite", False, "Replace an existing --output.")


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f"Unexpected arguments: {argv[1:]}")
  report = folder.prepare_folder(FLAGS.source, FLAGS.output,
                                 FLAGS.val_fraction, FLAGS.skip_bad_files,
                                 FLAGS.overwrite)
  print(folder.format_report(report, FLAGS.output))


if __name__ == "__main__":
  errors.run(main)
