r"""The one-command DIS demo on the generated synthetic benchmark.

  python tools/demo.py            # about 2.3-7 minutes on 2 CPU cores
  python tools/demo.py --quick    # the same steps, small; about a minute

Steps (each prints progress; a killed demo resumes where it stopped):
  1. generate the synthetic benchmark into --data_root unless it is there
     (VOCdevkit/VOC2012 + web_tags, ~15 s);
  2. prepare the two tfds datasets into --data_root/tfds;
  3. train stage 1 (phases a, b, c) and stage 2 with the `synthetic` preset
     into --workdir/model (tools/train.py does the same);
  4. choose the served setting, t_test among 0, 10, 30, the tag
     refinement (off, the paper's, or a calibrated bias) and the latent
     update of the steps (u1, both, per_pixel), on the held-out
     selection split (val[:100]) by the margin rule of dis_tf/selection.py
     (the plain t = 0 prediction serves unless a candidate's 90% paired
     bootstrap interval over it is above 0), print the scores, the interval
     and the choice, and store it in model/config.json; then evaluate every
     t_test on the reported split (val[100:]), at the served refinement and
     without refinement, and print the Table-3-style result
     (tools/evaluate.py --select_t_test does the same);
  5. draw figure grids of a few val images (tools/visualize.py);
  6. export a SavedModel for TensorFlow Serving into --workdir/export (it
     serves the chosen setting), score the reported split's JPEG files
     through its `serving_default` signature, loaded the way a server loads
     it, against the mask PNGs, and print that mIoU beside the evaluation's
     (export/export_saved_model.py, dis_tf.serving); write one served
     labelmap.

The training is deterministic (`data.deterministic`: seeded, ordered
pipelines and op determinism): the same command on the same machine prints
the same numbers. Two --quick runs side by side printed identical output
(2026-12-05), and the full training of seeds 0-4 (bench/demo_spread.py),
repeated a day later on another machine of this kind, gave the same mIoU
to 0.1 at every t_test in every seed (2026-12-06);
bench/determinism.py measures the cost on the full setting.

Precision (--precision, default auto): the demo trains, evaluates and
exports in mixed_bfloat16 on a CPU with bf16 units (AVX512-BF16 or AMX-BF16)
and in float32 elsewhere (`dis_tf.config.host_precision`), so one machine
always gives the same numbers, and two machines of different kinds may
not. The default follows issue 29's rule: over the demo's seeds 0-4 on
this benchmark, training under bf16 is within 1.0 mIoU of float32 at every
t_test (bench/precision_training.py, BENCHMARKS.md, 2026-12-06: +0.2,
-0.4 and -0.2 at t = 0, 10 and 30, each 90% interval above -1.0), and
the whole demo takes no longer than under float32: 138 s under bf16 and
142 s under float32, side by side on a 2-core AMD EPYC with bf16 units
(bench/research_loop.py, BENCHMARKS.md, 2026-12-07, at 5640b2f; issue
26's 4 min and issue 29's 3 min are met there by the demo alone; from a
fresh clone with the README's pip install, 170 s and 190 s the same day,
and 232 s on 2026-12-08 on a host about 30% slower that day; the tiny
backbone has too little convolution work for bf16 to pay). The
export is in the precision trained in: re-export with
`export/export_saved_model.py --precision=float32` for a server without
bf16 units (docs/SERVING.md).

Across training seeds the number moves far more (bench/demo_spread.py,
BENCHMARKS.md, 2026-12-06): seeds 0-4 gave 48.4, 57.4, 57.5, 54.0 and 60.4
mIoU at t = 0 on val[100:] under mixed_bfloat16 (mean 55.5, sample sd 4.6),
and 48.5, 58.1, 57.8, 53.0 and 59.3 under float32 (mean 55.3, sample sd
4.5); issue 26's target sd <= 3 is not met. Seed 0, the default, is the
lowest of the five. The classes that move are same-colour pairs of the
generator (person, car and sheep, potted plant and bus: 7 to 74 IoU
between seeds). A change of the demo's printed mIoU of a few points is
therefore not evidence by itself. Three variants of the training, measured
beside these runs (bench/demo_spread.py --train_flag, BENCHMARKS.md,
2026-12-08), do not bring the sd to 3: weight decay 0.05 gave sd 3.4 and
-0.5 mIoU on the selection split (90% CI [-2.6, +1.6]); a 1.5x longer
stage 2 (3000 steps) gave +6.0 (90% CI [+2.9, +9.1], 5 of 5 seeds) but sd
7.0, as seed 0 moved by +0.7 and the others by +5.7 on average. Under
both, seed 0 still fails the same same-colour pairs (person IoU 12 and
11, car 13 and 9, where seed 1 has 60 to 74; more steps do rescue person
in seed 2, 7 to 52): neither a regulariser nor more stage-2 steps moves
the lowest seed. Training scales matched to the evaluation canvas's (1.0
to 1.33 instead of 0.75 to 1.25; the canvas enlarges the images 1 to 1.33
times) gave sd 6.0 and -0.6 on the selection split (90% CI [-4.6, +3.3]):
seed 0 kept its failed pairs (and bus fell, 30 to 14), and the other
seeds lost or gained others (person in seed 4, 58 to 11; in seed 2, 7 to
36). Which same-colour pairs
a run learns moves with any change of its training. The longer stage 2
would also cost the demo about 30 s (its 2000 stage-2 steps take about
58 s).

Outputs under --workdir (default runs/demo): model/ (config.json,
model.keras, checkpoints, TensorBoard logs), model/eval_val/ (table3.md,
table3.csv, summary.md, results.json), model/figures/val.png, export/1/ (the
SavedModel) and served_labelmap.png (the served prediction, colourised).
"""

import contextlib
import io
import os
import sys

# Quiet by default; --verbosity (absl's flag) brings back every log.
QUIET = not any(arg.split("=")[0] in ("--verbosity", "-v", "--v")
                for arg in sys.argv[1:])
if QUIET:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  # TensorFlow 2.21 writes its start-up lines (oneDNN, CUDA stubs, CPU
  # features) to stderr before absl::InitializeLog, whatever
  # TF_CPP_MIN_LOG_LEVEL says (tensorflow/tensorflow#100442), so stderr is
  # closed while TensorFlow is imported and its runtime created, and only
  # then. An import error is still raised (and printed) after it.
  _saved, _null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(_null, 2)
  try:
    import tensorflow as tf
    tf.config.list_logical_devices()
  finally:
    os.dup2(_saved, 2)
    os.close(_null)
    os.close(_saved)

from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from dis_tf import config as config_lib  # noqa: E402
from dis_tf import errors  # noqa: E402
from dis_tf import evaluation  # noqa: E402
from dis_tf import flags as dis_flags  # noqa: E402
from dis_tf import quality  # noqa: E402
from dis_tf import reports  # noqa: E402
from dis_tf import selection  # noqa: E402
from dis_tf import training  # noqa: E402
from dis_tf import visualization  # noqa: E402
from dis_tf.classes import VOC_CLASSES, voc_palette  # noqa: E402
from dis_tf.data import pipeline  # noqa: E402
from dis_tf.data import synthetic  # noqa: E402
from dis_tf.serving import export_lib  # noqa: E402
from dis_tf.serving import scoring  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("data_root", "data/synthetic",
                    "Where the synthetic benchmark is (or is generated).")
flags.DEFINE_string("workdir", "runs/demo", "Where the demo writes.")
dis_flags.define_t_test("0,10,30", "Latent steps to evaluate.")
flags.DEFINE_integer("seed", 0, "Seed of the benchmark and the training.")
flags.DEFINE_enum(
    "precision", config_lib.PRECISION_AUTO,
    list(config_lib.PRECISIONS + (config_lib.PRECISION_AUTO,)),
    "model.precision of the demo's training, evaluation and export: 'auto' "
    "is mixed_bfloat16 on a CPU with bf16 units, else float32 "
    "(dis_tf.config.host_precision).")
flags.DEFINE_bool("quick", False,
                  "Every step on a small benchmark with a few training steps "
                  "(about a minute; for tests). Its model is not trained to "
                  "be good and its numbers mean nothing.")

# --quick: a benchmark of small images and a few steps per phase, with the
# selection split still held out from the reported one.
QUICK_BENCHMARK = dict(num_train=24, num_val=40, num_weak=48,
                       num_tags_only=8, image_size=64)
QUICK_T_TEST = "0,2"


def demo_config(data_root, workdir, seed, quick=False,
                precision=config_lib.PRECISION_AUTO):
  """The `synthetic` preset pointed at the demo's folders (--quick: the
  small setting, see QUICK_BENCHMARK), trained under `precision`."""
  config = config_lib.synthetic()
  config_lib.apply_overrides(config, {"model.precision": precision})
  if quick:
    config.data.crop_size = config.data.eval_crop_size = 64
    config.data.shuffle_buffer = 50
    config.data.select_split, config.data.eval_split = "val[:20]", "val[20:]"
    config.train.phase_a_steps = 20
    config.train.phase_b_steps = config.train.phase_c_steps = 4
    config.train.semi_steps = 4
    config.train.steps_per_epoch = 20
    config.train.tensorboard_num_images = 2
  # The same command on the same machine gives the same numbers (issue 26):
  # seeded, ordered pipelines and op determinism (bench/determinism.py
  # measures what it costs).
  config.data.deterministic = True
  config.data.voc_dir = data_root
  config.data.weak_dir = os.path.join(data_root, "web_tags")
  config.data.data_dir = os.path.join(data_root, "tfds")
  config.model_dir = os.path.join(workdir, "model")
  config.train.seed = seed
  return config


def _step(text):
  print(f"\n=== {text} ===", flush=True)


def main(argv):
  del argv
  if QUIET:
    # The Python logs (tfds's dataset notes, TensorFlow's INFO) too.
    logging.set_verbosity(logging.ERROR)
    tfds.disable_progress_bar()
  t_tests = FLAGS.t_test
  benchmark = {}
  if FLAGS.quick:
    benchmark = QUICK_BENCHMARK
    if not FLAGS["t_test"].present:
      t_tests = dis_flags.parse_t_tests(QUICK_T_TEST)
  config = demo_config(FLAGS.data_root, FLAGS.workdir, FLAGS.seed,
                       FLAGS.quick, FLAGS.precision)

  _step(f"1/6 synthetic benchmark in {FLAGS.data_root}")
  synthetic.ensure_synthetic_benchmark(FLAGS.data_root, seed=FLAGS.seed,
                                       **benchmark)

  _step("2/6 preparing the tfds datasets")
  # tfds prints its "Downloading and preparing" notes to stdout.
  with contextlib.redirect_stdout(io.StringIO() if QUIET else sys.stdout):
    pipeline.prepare_datasets(config)
  print(f"Prepared in {config.data.data_dir}")

  _step(f"3/6 training stage 1 (a, b, c) and stage 2 into {config.model_dir} "
        f"({config.model.precision})")
  model = training.train(config, "all", verbose="phase")

  select_split, eval_split = config.data.select_split, config.data.eval_split
  _step(f"4/6 choosing the served setting on {select_split}, evaluating on "
        f"{eval_split}")
  decision, count = selection.select_setting(
      model, pipeline.eval_dataset(config, select_split), t_tests,
      config.model.num_classes, batch_size=config.data.eval_batch_size)
  selection.record_selection(config, decision, select_split, count)
  selection.apply(model, decision)
  print(selection.describe(decision, select_split, count))
  quality_fit = quality.fit(
      model, pipeline.eval_dataset(config, select_split), decision["t_test"],
      config.model.num_classes, select_split)
  quality.record(config, quality_fit)
  print(f"Quality score served: {quality.describe(quality_fit)}.")
  results = evaluation.evaluate_model(
      model, pipeline.eval_dataset(config, eval_split), t_tests,
      tag_threshold=config.latent.tag_threshold,
      refinements=[decision["tag_refinement"], None],
      batch_size=config.data.eval_batch_size)
  eval_dir = os.path.join(config.model_dir, "eval_val")
  reports.write_reports(results, eval_dir)
  evaluation.write_summaries(
      results, evaluation.summary_dir(config.model_dir, eval_split))
  markdown, _ = reports.format_table3(results)
  print(markdown)
  print(reports.format_summary(results))
  served = next(x for x in results["settings"]
                if x["t_test"] == decision["t_test"]
                and x["refinement"] == decision["refinement"])
  print(f"Reports written to {eval_dir} ({results['num_images']} images of "
        f"{eval_split}); the export serves t_test = {decision['t_test']}, "
        f"refinement {decision['refinement']}: {100 * served['mean_iou']:.1f} "
        "mIoU here.")

  _step("5/6 figures")
  examples = list(pipeline.eval_dataset(config, "val").take(4))
  figure = os.path.join(config.model_dir, "figures", "val.png")
  visualization.visualize(model, examples, t_tests, figure,
                          quality_fit=quality_fit)
  print(f"Figure written to {figure}")

  _step("6/6 SavedModel export and one served prediction")
  export_dir = os.path.join(FLAGS.workdir, "export")
  version_dir = export_lib.export_from_model_dir(
      config.model_dir, export_dir)
  print(f"SavedModel written to {version_dir}")
  serving = tf.saved_model.load(version_dir).signatures["serving_default"]
  names = [evaluation.example_file_name(ex, i) for i, ex in
           enumerate(pipeline.eval_dataset(config, eval_split))]
  exported = scoring.score_voc_files(
      lambda encoded: serving(image_bytes=tf.constant(encoded)),
      _voc_root(config), names, config.model.num_classes)
  print(f"The export's serving_default on the {eval_split} JPEG files, "
        f"scored against their mask PNGs: {100 * exported:.1f} mIoU "
        f"(evaluation: {100 * served['mean_iou']:.1f}).")
  serve_one_image(serving, config, os.path.join(FLAGS.workdir,
                                                "served_labelmap.png"))


def _voc_root(config):
  return os.path.join(config.data.voc_dir, "VOCdevkit", "VOC2012")


def serve_one_image(serving, config, output_png):
  """Runs one val JPEG through the exported `serving_default` signature."""
  voc_root = _voc_root(config)
  val_list = os.path.join(voc_root, "ImageSets", "Segmentation", "val.txt")
  with open(val_list) as f:
    name = f.readline().strip()
  with open(os.path.join(voc_root, "JPEGImages", name + ".jpg"), "rb") as f:
    jpeg = f.read()
  outputs = serving(image_bytes=tf.constant([jpeg]))
  height = int(outputs["height"][0])
  width = int(outputs["width"][0])
  ids = outputs["class_ids"][0, :height, :width].numpy().astype(np.uint8)
  tags = outputs["tag_probabilities"][0].numpy()
  present = [f"{VOC_CLASSES[c]} ({tags[c]:.2f})"
             for c in range(1, len(VOC_CLASSES)) if tags[c] > 0.5]
  labelmap = Image.fromarray(ids, mode="P")
  labelmap.putpalette(voc_palette().reshape(-1).tolist())
  labelmap.save(output_png)
  print(f"Served {name}.jpg ({width}x{height}): tags {present or 'none'}; "
        f"labelmap written to {output_png}")


if __name__ == "__main__":
  errors.run(main)
