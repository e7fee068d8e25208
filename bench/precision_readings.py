"""Readings of bench/precision.py's section that are computed, not timed.

* The mIoU of float32-trained models (e.g. the ablation's DIS model of
  each seed) evaluated under float32 and mixed_bfloat16 with
  `tools/evaluate.py`, paired over the models per setting, and issue 29's
  target (within 0.3 at every t_test) under the two-sided interval rule.
* The labelmaps of a trained model's two exports (float32 and
  mixed_bfloat16, `export_lib.export_from_model_dir`) compared pixel by
  pixel on generated images (issue 29: >= 99% equal).
* Why t = 30 / t = 0 of the served graph is what it is: the latent loop's
  FLOPs (TensorFlow's registered counts) and FLOP rate against the
  backbone's, and the FLOP rate the target would need.
"""

import json
import os
import shutil
import subprocess
import sys

import common  # Puts the checkout on sys.path.
import latent_ops

import numpy as np
import tensorflow as tf

from dis_tf import image_ops
from dis_tf import model_dir as model_dir_lib
from dis_tf.data import synthetic
from dis_tf.research import tables
from dis_tf.serving import export_lib
from dis_tf.serving import module as serving_module

PRECISIONS = ("float32", "mixed_bfloat16")


def evaluate(model_dirs, eval_dir, split, t_test, extra_flags):
  """mIoU per t_test of each float32-trained model under both precisions.

  Each model dir is copied to `eval_dir`/model_<i>/<precision>/model
  (`tools/evaluate.py` writes TensorBoard summaries into its model dir) and
  evaluated there by `tools/evaluate.py --model.precision=<precision>`, one
  child process after the other.

  Args:
    model_dirs: the model dirs.
    eval_dir: where the copies and the evaluations go.
    split: the evaluated split.
    t_test: `--t_test` of tools/evaluate.py (e.g. "0,10,30").
    extra_flags: more flags of tools/evaluate.py.

  Returns:
    ([{precision: {setting name (t_test, refinement): mIoU in points}}, one
    per model dir], [the commands run]).
  """
  per_model, commands = [], []
  for index, source in enumerate(model_dirs):
    mious = {}
    for precision in PRECISIONS:
      root = os.path.join(os.path.abspath(eval_dir), f"model_{index}",
                          precision)
      model_dir = os.path.join(root, "model")
      shutil.rmtree(root, ignore_errors=True)
      shutil.copytree(source, model_dir,
                      ignore=shutil.ignore_patterns("eval_*", "logs"))
      output_dir = os.path.join(root, "eval")
      command = ["tools/evaluate.py", f"--model_dir={model_dir}",
                 f"--split={split}", f"--t_test={t_test}",
                 f"--model.precision={precision}",
                 f"--output_dir={output_dir}"] + list(extra_flags)
      commands.append(" ".join(["python"] + command))
      print("running", commands[-1], flush=True)
      with open(os.path.join(root, "evaluate.log"), "w") as log:
        done = subprocess.run(
            [sys.executable] + command, cwd=common.ROOT, stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
      if done.returncode:
        raise RuntimeError(f"{commands[-1]} failed (rc {done.returncode}); "
                           f"see {log.name}")
      with open(os.path.join(output_dir, "results.json")) as f:
        results = json.load(f)
      mious[precision] = {row["name"]: 100 * row["mean_iou"]
                          for row in results["settings"]}
    per_model.append(mious)
  return per_model, commands


def model_summary(model_dir):
  """'seed 0, t_train 5, trained in float32 by e5845e6' from a model dir.

  The seed, t_train and precision come from its config.json, the commit
  from its last phase's fingerprint (`model_dir.phase_code_versions`).
  """
  with open(os.path.join(model_dir, "config.json")) as f:
    config = json.load(f)
  versions = model_dir_lib.phase_code_versions(model_dir, ("semi", "c"))
  code = versions["semi"] or versions["c"] or {}
  commit = (code["commit"][:7] if code.get("commit")
            else "an unrecorded commit")
  if code.get("dirty"):
    commit += " with uncommitted changes"
  return (f"seed {config['train']['seed']}, t_train "
          f"{config['latent']['t_train']}, trained in "
          f"{config['model']['precision']} by {commit}")


def within_verdict(p, margin):
  """"met" / "missed" / "not resolved" of |paired mean| <= `margin`.

  The two-sided form of `tables.TARGET_RULE`: met when the mean's 90% t
  interval lies inside (-margin, +margin), missed when it lies wholly
  outside, not resolved otherwise (also for one model: its interval is
  NaN, which fails both comparisons).
  """
  if p["low"] > -margin and p["high"] < margin:
    return "met"
  if p["low"] > margin or p["high"] < -margin:
    return "missed"
  return "not resolved"


def miou_lines(model_dirs, split, per_model, summaries, commands,
               margin=0.3):
  """The per-model mIoU table, the paired differences and the target line.

  Args:
    model_dirs: the evaluated model dirs, as given.
    split: the evaluated split.
    per_model: `evaluate`'s per-model mIoUs (points).
    summaries: `model_summary` of each model dir.
    commands: the evaluation commands run.
    margin: the target's bound on |bf16 - float32| (points).
  """
  rows = []
  for source, summary, mious in zip(model_dirs, summaries, per_model):
    for name in mious["float32"]:
      f32, b16 = mious["float32"][name], mious["mixed_bfloat16"][name]
      rows.append([f"`{source}` ({summary})", name, f"{f32:.2f}",
                   f"{b16:.2f}", f"{b16 - f32:+.2f}"])
  worst = max(abs(float(r[4])) for r in rows)
  paired_rows, verdicts = [], []
  for name in per_model[0]["float32"]:
    # tables.paired_stats takes fractions and reports points.
    p = tables.paired_stats(
        [m["mixed_bfloat16"][name] / 100 for m in per_model],
        [m["float32"][name] / 100 for m in per_model])
    verdicts.append(within_verdict(p, margin))
    spread = ("one model, no interval" if p["n"] < 2 else
              f"sd {p['sd']:.2f}, 90% CI [{p['low']:+.2f}, "
              f"{p['high']:+.2f}]")
    paired_rows.append([name, f"{p['mean']:+.2f} ({spread}; ahead "
                        f"{p['ahead']}, behind {p['behind']} of {p['n']})",
                        verdicts[-1]])
  return [
      f"**mIoU under bf16 inference** of {len(per_model)} float32-trained "
      f"model(s), split `{split}`, each evaluated under both precisions "
      "(the same weights):", "",
      common.table(["model", "setting", "float32 mIoU", "mixed_bfloat16 mIoU",
                    "bf16 - float32"], rows), "",
      f"Paired over the {len(per_model)} model(s), bf16 - float32 (points; "
      "sample sd, 90% t interval of the mean):", "",
      common.table(["setting", "bf16 - float32", f"within {margin}"],
                   paired_rows), "",
      f"A setting is within {margin} when the 90% t interval of the paired "
      f"mean lies inside (-{margin}, +{margin}); missed when it lies wholly "
      "outside; not resolved otherwise or with one model.", "",
      "Commands (run by this script, one after the other, before the "
      "timings; each on a copy of the model dir):", "",
      *[f"    {c}" for c in commands], "",
      f"- mIoU under bf16 inference within {margin} of float32 at every "
      f"t_test, paired over {len(per_model)} model(s): "
      f"**{tables.combined(verdicts)}**",
      f"- largest |bf16 - float32| of any one model and setting: "
      f"{worst:.2f} points"]


def export_agreement(model_dir, tmp, num_images=16, sizes=(96, 160), seed=7):
  """How often the bf16 export's labelmap equals the float32 export's.

  The model dir is exported twice by `export_lib.export_from_model_dir`
  (its own t_test, canvas and settings; `model.precision` float32 and
  mixed_bfloat16, the same float32 weights); both SavedModels'
  `serving_default` label the same generated images (the synthetic
  benchmark's generator, random sizes in `sizes`, PNG), and the
  `class_ids` are compared on every pixel of every image.

  Args:
    model_dir: a trained model dir.
    tmp: a directory for the two exports.
    num_images: generated images.
    sizes: smallest and largest image side.
    seed: the images' seed.

  Returns:
    (fraction of equal pixels, pixels compared, the exports' t_test).
  """
  rng = np.random.default_rng(seed)
  images = [synthetic.generate_image(rng, int(h), int(w))[0]
            for h, w in rng.integers(sizes[0], sizes[1] + 1,
                                     size=(num_images, 2))]
  encoded = tf.constant([tf.io.encode_png(im).numpy() for im in images])
  class_ids = {}
  for precision in PRECISIONS:
    path = export_lib.export_from_model_dir(
        model_dir, os.path.join(tmp, precision),
        overrides={"model.precision": precision}, version=1)
    loaded = tf.saved_model.load(path)
    # The export's recorded precision is tested in
    # tests/test_export_precision.py (test_metadata_records_the_precision).
    t_test = int(loaded.signatures["metadata"]()["t_test"].numpy())
    class_ids[precision] = loaded.signatures["serving_default"](
        image_bytes=encoded)["class_ids"].numpy()
  # Pixels outside an image (the batch is padded to its largest image).
  valid = class_ids["float32"] != serving_module.IGNORE_LABEL
  same = (class_ids["float32"] == class_ids["mixed_bfloat16"])[valid]
  return float(same.mean()), int(same.size), t_test


def agreement_lines(model_dirs, summaries, results, limit=0.99):
  """The export-agreement table and its target line.

  Args:
    model_dirs: the model dirs, as given.
    summaries: `model_summary` of each.
    results: `export_agreement` of each.
    limit: the target's fraction of equal pixels.
  """
  rows = [[f"`{d}` ({s})", t, n, f"{100 * f:.2f}%"]
          for d, s, (f, n, t) in zip(model_dirs, summaries, results)]
  return [
      "**Labelmaps of a trained model's two exports**: each model dir "
      "exported in float32 and in mixed_bfloat16 "
      "(`export_lib.export_from_model_dir`, its own t_test and canvas), "
      "`serving_default` on the same generated images (the synthetic "
      "benchmark's generator, PNG), `class_ids` compared on every image "
      "pixel:", "",
      common.table(["model", "t_test", "pixels", "equal"], rows), "",
      common.target("bf16 export's labelmap equal to the float32 export's, "
                    "fewest over the models (fraction of pixels)",
                    min(f for f, _, _ in results), limit,
                    higher_is_better=True)]


def latent_flops(model, image):
  """(backbone FLOPs, FLOPs of one latent step) of the served graph.

  TensorFlow's registered counts (`common.graph_flops`,
  `latent_ops.step_flops`), traced in float32: the counts do not depend on
  the precision.
  """
  folded = model.for_inference()
  folded.set_precision("float32")
  features = tf.function(lambda x: folded.features(x)[0])
  backbone = common.graph_flops(features.get_concrete_function(image).graph)
  u1, v1 = folded.features(image)
  target = image_ops.image_target(image, tf.shape(u1)[1:3])
  step = latent_ops.step_flops(
      lambda s: folded.latent(u1, v1, target, steps=s)["probabilities"],
      tf.TensorSpec([], tf.int32))
  return backbone, step


def latent_floor_text(t0, t_steps, backbone, backbone_flops, step_flops,
                      steps=30, limit=1.05, band=0.1):
  """Why t=steps / t=0 (served graph) is what it is, from FLOPs and times.

  The latent loop is float32 under both precisions, so bf16 shortens only
  t = 0. The text compares the FLOP rate the bf16 target needs of the loop
  with the loop's and the float32 backbone's, and gives the ratio the loop
  would reach at the backbone's rate; its conclusion is a branch on
  whether the target needs more than the backbone's rate, about it (within
  `band`), or less. The band is the reading's noise: two runs on the EPYC
  on 2026-12-07 needed 1.01x and 0.97x the backbone's rate.

  Args:
    t0: {precision: seconds} of t = 0 end to end (served graph).
    t_steps: {precision: seconds} of t = `steps` end to end.
    backbone: {precision: seconds} of the backbone forward.
    backbone_flops: FLOPs of the backbone forward.
    step_flops: FLOPs of one latent step.
    steps: the t of the ratio.
    limit: the ratio's target.
    band: relative width of the "about the backbone's rate" branch.
  """
  per_step = {p: (t_steps[p] - t0[p]) / steps for p in PRECISIONS}
  if min(per_step.values()) <= 0:
    return ("- (the latent loop's time is within the noise of t=0 in this "
            "run: no FLOP-rate reading)")
  loop_rate = {p: step_flops / per_step[p] for p in PRECISIONS}
  backbone_rate = {p: backbone_flops / backbone[p] for p in PRECISIONS}
  budget = (limit - 1) * t0["mixed_bfloat16"]
  need = steps * step_flops / budget
  # The ratio if the loop ran at the float32 backbone's FLOP rate.
  floor = {p: 1 + steps * step_flops / backbone_rate["float32"] / t0[p]
           for p in PRECISIONS}
  text = (
      f"- Why t={steps} / t=0 is what it is (this run's times, "
      f"TensorFlow's FLOP counts): one latent step is "
      f"{step_flops / 1e6:.0f} MFLOP, float32 under both precisions; it "
      f"took {1e3 * per_step['float32']:.2f} ms under float32 and "
      f"{1e3 * per_step['mixed_bfloat16']:.2f} ms under bf16 ("
      + " / ".join(f"{loop_rate[p] / 1e9:.0f}" for p in PRECISIONS)
      + " GFLOP/s), while the served backbone ("
      f"{backbone_flops / 1e9:.1f} GFLOP) ran at "
      f"{backbone_rate['float32'] / 1e9:.0f} GFLOP/s in float32 and "
      f"{backbone_rate['mixed_bfloat16'] / 1e9:.0f} in bf16. Under bf16, "
      f"t={steps} / t=0 <= {limit} needs the {steps} steps within "
      f"{1e3 * budget:.1f} ms, {need / 1e9:.0f} GFLOP/s: "
      f"{need / loop_rate['mixed_bfloat16']:.1f}x the loop's rate and "
      f"{need / backbone_rate['float32']:.2f}x the float32 backbone's. "
      f"Even at the float32 backbone's rate the ratio would be "
      f"{floor['float32']:.3f} under float32 and "
      f"{floor['mixed_bfloat16']:.3f} under bf16")
  share = loop_rate["mixed_bfloat16"] / backbone_rate["float32"]
  relative = need / backbone_rate["float32"]
  if relative > 1 + band:
    return text + (
        f". So under bf16 the {steps} float32 steps would have to run at "
        f"a higher FLOP rate than the backbone's large float32 "
        f"convolutions, while the loop's small ops run at {share:.0%} of "
        "that rate: the target needs fewer FLOPs per step or a "
        "lower-precision loop, and the issue keeps the loop float32.")
  if relative >= 1 - band:
    return text + (
        f". So under bf16 the {steps} float32 steps would have to run at "
        f"about the FLOP rate of the backbone's large float32 convolutions "
        f"(within {band:.0%} of it, the run-to-run noise of this reading), "
        f"while the loop's small ops run at {share:.0%} of that rate: "
        "at best the target is reached with no margin, and only if the "
        "loop became as FLOP-efficient as the backbone.")
  return text + (
      f". So the target is reachable in principle: the gap is the rate of "
      f"the loop's small ops ({share:.0%} of the float32 backbone's), not "
      "their FLOPs.")
