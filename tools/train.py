r"""Trains DIS: stage 1 (phases a, b, c) and/or stage 2, with keras fit.

Example (the synthetic benchmark, about 5 minutes on 2 CPU cores):

  python tools/make_synthetic.py --out data/synthetic
  python tools/train.py --preset=synthetic \
      --voc_dir=data/synthetic --weak_dir=data/synthetic/web_tags \
      --data_dir=data/tfds --model_dir=runs/synthetic --stage=all

The paper's setting (needs VOC 2012, a web-tag folder and a GPU for days):

  python tools/train.py --preset=voc12 --voc_dir=/data/VOCdevkit \
      --weak_dir=/data/idw --data_dir=/data/tfds --model_dir=runs/voc12

Every configuration field can be overridden by its flag, e.g.
--latent.t_test=10 --train.weight_decay=0 --model.weights=none (see
--helpfull; the short names --t_train, --crop_size, --batch_size, ... of
earlier versions are aliases). --print_config prints the resolved
configuration and exits; it is written to --model_dir/config.json. A killed
run resumes where it stopped when started again with the same flags. A
rerun whose training fields differ from those the phases in --model_dir
ran with is an error naming them: pass --overwrite to discard that training
state and start again, or use a new --model_dir. Evaluation-only fields
(--latent.t_test, --data.eval_split, ...) may differ. One run at a time
per --model_dir (model_dir/train.lock).

Stage 2 again, beside a finished run, e.g. on the tags its labelmap cleans
(docs/results/ITERATED_CLEANING.md: +1.0 mIoU over 5 seeds of the synthetic
benchmark, 90% interval [+0.2, +1.8]; +0.6, not resolved, over the 3 of the
re-check benchmark):

  python tools/clean_tags.py --model_dir=runs/mine --rule=labelmap \
      --weak_output_dir=runs/mine_cleaned_tags
  python tools/train.py --stage=semi --init_from=runs/mine \
      --weak_dir=runs/mine_cleaned_tags --model_dir=runs/mine_cleaned

--init_from starts from that run's configuration (config.json) instead of
a preset, the flags given override it, and stage 2 starts from its
phase-c weights, copied into --model_dir. Stage 2's own flags may change
(latent.t_train, train.semi_steps, --weak_dir, ...); a flag its stage 1
was trained with (--seed, the batch size, phases a-c) is refused by name.
"""

from absl import flags

from dis_tf import config as config_lib
from dis_tf import errors
from dis_tf import flags as dis_flags

FLAGS = flags.FLAGS

# Short flags of earlier versions of this tool, kept as aliases: the name of
# each field (e.g. --t_train for --latent.t_train).
_SHORT_FLAGS = (
    "model.backbone", "model.weights", "model.train_batchnorm",
    "loss.map_weight", "loss.image_weight", "loss.tag_weight",
    "latent.t_train", "latent.soft_pseudo_labels",
    "data.use_voc_weak_tags", "data.weak_fraction", "data.crop_size",
    "data.deterministic",
    "train.batch_size", "train.phase_a_steps", "train.phase_b_steps",
    "train.phase_c_steps", "train.semi_steps", "train.phase_a_lr",
    "train.phase_b_lr", "train.phase_c_lr", "train.semi_lr",
    "train.optimizer", "train.steps_per_epoch", "train.strategy",
    "train.seed",
)

flags.DEFINE_enum("preset", "synthetic", list(config_lib.PRESETS),
                  "Base configuration; the config flags override it.")
flags.DEFINE_enum("stage", "all", list(config_lib.STAGES),
                  "full: stage-1 phases a, b, c; semi: stage 2 from the "
                  "phase-c weights in model_dir; all: both.")
flags.DEFINE_string("init_from", None,
                    "With --stage=semi: a finished run's --model_dir; this "
                    "run starts from its config.json (instead of --preset) "
                    "and its phase-c weights.")
flags.DEFINE_boolean("overwrite", False,
                     "Discard the training state in --model_dir "
                     "(checkpoints, backups, logs, model.keras) and train "
                     "from scratch, e.g. after changing a training flag.")
dis_flags.define_config_flags(
    aliases={key.rpartition(".")[2]: key for key in _SHORT_FLAGS})
flags.adopt_module_key_flags(dis_flags)


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f"Unexpected arguments: {argv[1:]}")
  overrides = dis_flags.config_overrides()
  if FLAGS.init_from is None:
    config = config_lib.resolve_config(FLAGS.preset, overrides)
  else:
    if FLAGS["preset"].present:
      raise errors.UserError("give --init_from (the run's configuration) or "
                             "--preset, not both.")
    if FLAGS.stage != "semi":
      raise errors.UserError(f"--init_from with --stage={FLAGS.stage}: it "
                             "gives the phase-c weights stage 2 starts from, "
                             "so it needs --stage=semi.")
    config = config_lib.apply_overrides(
        config_lib.ExperimentConfig.load(FLAGS.init_from), overrides)
    config = config_lib.resolve_classes(config, overrides)
  if dis_flags.print_config_and_exit(config):
    return
  # After the flags and the config: see dis_tf/flags.py (tools import
  # TensorFlow only once their flags are known to be good).
  from dis_tf import training
  training.train(config, FLAGS.stage, overwrite=FLAGS.overwrite,
                 init_from=FLAGS.init_from)
  print(f"Trained model written to {config.model_dir}/model.keras")


if __name__ == "__main__":
  flags.mark_flag_as_required("model_dir")
  errors.run(main)
