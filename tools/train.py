r"""Trains DIS: stage 1 (phases a, b, c) and/or stage 2, with keras fit.

Example (the synthetic benchmark, about 5 minutes on 2 CPU cores):

  python tools/make_synthetic.py --out data/synthetic
  python tools/train.py --preset=synthetic \
      --voc_dir=data/synthetic --weak_dir=data/synthetic/web_tags \
      --data_dir=data/tfds --model_dir=runs/synthetic --stage=all

The paper's setting (needs VOC 2012, a web-tag folder and a GPU for days):

  python tools/train.py --preset=voc12 --voc_dir=/data/VOCdevkit \
      --weak_dir=/data/idw --data_dir=/data/tfds --model_dir=runs/voc12

Every preset value can be overridden by a flag; the resolved configuration
is written to --model_dir/config.json. A killed run resumes where it stopped
when started again with the same flags.
"""

from absl import app
from absl import flags

from dis_tf import training

FLAGS = flags.FLAGS

flags.DEFINE_enum("preset", "synthetic", ["synthetic", "voc12"],
                  "Base configuration; flags below override it.")
flags.DEFINE_string("model_dir", None, "Training directory (required).")
flags.DEFINE_enum("stage", "all", ["full", "semi", "all"],
                  "full: stage-1 phases a, b, c; semi: stage 2 from the "
                  "phase-c weights in model_dir; all: both.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data dir.")
flags.DEFINE_string("voc_dir", None,
                    "Folder holding VOCdevkit/VOC2012 (builder manual dir).")
flags.DEFINE_string("weak_dir", None,
                    "web_tags folder (images + annotations.jsonl).")
flags.DEFINE_boolean("use_voc_weak_tags", None,
                     "Add tag-only VOC images to the weak stream.")
flags.DEFINE_float("weak_fraction", None,
                   "Fraction of each stage-2 batch that is tag-only images.")
flags.DEFINE_integer("t_train", None, "Latent steps for stage-2 pseudo labels.")
flags.DEFINE_float("latent_step", None, "Latent gradient step size.")
flags.DEFINE_float("latent_clip_norm", None, "Latent gradient-norm clip.")
flags.DEFINE_boolean("soft_pseudo_labels", None,
                     "Soft pseudo labels / tags instead of argmax / threshold.")
flags.DEFINE_enum("backbone", None, ["tiny", "resnet50", "resnet101"],
                  "Backbone network.")
flags.DEFINE_string("weights", None,
                    "Backbone weights: 'none', 'imagenet' or a file path.")
flags.DEFINE_boolean("train_batchnorm", None, "Fine-tune backbone batch norm.")
flags.DEFINE_integer("batch_size", None, "Global batch size.")
flags.DEFINE_integer("crop_size", None, "Training crop size in pixels.")
flags.DEFINE_integer("phase_a_steps", None, "Steps of stage-1 phase a.")
flags.DEFINE_integer("phase_b_steps", None, "Steps of stage-1 phase b.")
flags.DEFINE_integer("phase_c_steps", None, "Steps of stage-1 phase c.")
flags.DEFINE_integer("semi_steps", None, "Steps of stage 2.")
flags.DEFINE_float("phase_a_lr", None, "Learning rate of phase a.")
flags.DEFINE_float("phase_b_lr", None, "Learning rate of phase b.")
flags.DEFINE_float("phase_c_lr", None, "Learning rate of phase c.")
flags.DEFINE_float("semi_lr", None, "Learning rate of stage 2.")
flags.DEFINE_enum("optimizer", None, ["sgd", "adam"], "Optimizer.")
flags.DEFINE_integer("steps_per_epoch", None,
                     "Steps between checkpoints / summaries.")
flags.DEFINE_float("map_weight", None, "Weight of the labelmap loss.")
flags.DEFINE_float("image_weight", None, "Weight of the image loss.")
flags.DEFINE_float("tag_weight", None, "Weight of the tag loss.")
flags.DEFINE_enum("strategy", None, ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy; multi_worker reads TF_CONFIG.")
flags.DEFINE_integer("seed", None, "Random seed.")
flags.DEFINE_boolean("deterministic", None,
                     "Deterministic input pipeline and ops.")

# Flag name -> config key.
_OVERRIDES = {
    "model_dir": "model_dir",
    "data_dir": "data.data_dir",
    "voc_dir": "data.voc_dir",
    "weak_dir": "data.weak_dir",
    "use_voc_weak_tags": "data.use_voc_weak_tags",
    "weak_fraction": "data.weak_fraction",
    "crop_size": "data.crop_size",
    "deterministic": "data.deterministic",
    "t_train": "latent.t_train",
    "latent_step": "latent.step_size",
    "latent_clip_norm": "latent.clip_norm",
    "soft_pseudo_labels": "latent.soft_pseudo_labels",
    "backbone": "model.backbone",
    "train_batchnorm": "model.train_batchnorm",
    "batch_size": "train.batch_size",
    "phase_a_steps": "train.phase_a_steps",
    "phase_b_steps": "train.phase_b_steps",
    "phase_c_steps": "train.phase_c_steps",
    "semi_steps": "train.semi_steps",
    "phase_a_lr": "train.phase_a_lr",
    "phase_b_lr": "train.phase_b_lr",
    "phase_c_lr": "train.phase_c_lr",
    "semi_lr": "train.semi_lr",
    "optimizer": "train.optimizer",
    "steps_per_epoch": "train.steps_per_epoch",
    "map_weight": "loss.map_weight",
    "image_weight": "loss.image_weight",
    "tag_weight": "loss.tag_weight",
    "strategy": "train.strategy",
    "seed": "train.seed",
}


def config_from_flags():
  """Preset + flag overrides -> ExperimentConfig."""
  overrides = {key: FLAGS[name].value for name, key in _OVERRIDES.items()}
  config = training.resolve_config(FLAGS.preset, overrides)
  if FLAGS.weights is not None:
    # Set directly: None ("none") is a value here, not "flag not given".
    config.model.weights = (None if FLAGS.weights.lower() == "none"
                            else FLAGS.weights)
  return config


def main(argv):
  del argv
  config = config_from_flags()
  training.train(config, FLAGS.stage)
  print(f"Trained model written to {config.model_dir}/model.keras")


if __name__ == "__main__":
  flags.mark_flag_as_required("model_dir")
  app.run(main)
