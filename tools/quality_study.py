r"""Which labelmaps to trust: the per-image quality signals, measured.

For each trained run (a model_dir of tools/train.py or tools/demo.py, with
its phase-a checkpoint, the plain segmentation baseline), scores on its
selection split and its reported split the quality signals of
dis_tf/research/quality_study.py (the reconstruction error and its drop
over the latent steps, entropy, max-softmax, tag agreement), fits their
logistic combination on the selection split and reports, paired per seed,
each signal's AUROC for below-median-IoU images and the mIoU of the
most-trusted images (issue 28). For the five seed runs of
bench/demo_spread.py, about 10 minutes on 2 CPU cores:

  python tools/quality_study.py \
    --model_dirs=runs/demo_spread/seed_0,runs/demo_spread/seed_1 \
    --seeds=0,1 --output=docs/results/QUALITY.md

The page's numbers go to the same path with .json; --from_json re-renders
the page from them.
"""



from absl import flags

from dis_tf import errors
from dis_tf import flags as dis_flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("t_steps", 10, "Latent steps of the reconstruction "
                     "drop.", lower_bound=1)
dis_flags.define_study_run_flags("tools/quality_study.py")


def main(argv):
  del argv
  command, seeds = dis_flags.study_run_args()
  # After the flags: see dis_tf/flags.py (tools import TensorFlow only once
  # their flags are known to be good).
  from dis_tf.research import quality_page
  from dis_tf.research import quality_study
  print(dis_flags.study_page(
      command, quality_page,
      lambda data: quality_study.run_study(FLAGS.model_dirs, seeds,
                                           FLAGS.t_steps, data)))


if __name__ == "__main__":
  errors.run(main)
