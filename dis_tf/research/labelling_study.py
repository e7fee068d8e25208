"""Which images to label next: the quality ranking against random (issue 28).

For one trained run (the demo's training, one seed) the study takes its
stage-1 model (`checkpoints/phase_c.weights.h5`), fits the served quality
score on the selection split at t = 0 (`dis_tf.quality.fit`, as
`tools/evaluate.py --select_t_test` fits it), and scores every image of the
weak pool (the web_tags folder). Two sets of `k` images get pixel labels,
the generator's true masks (`web_tags/truth/`, which no training reads):

* `ranked`: the `k` least trusted images (`tools/rank_unlabelled.py`'s
  order: uncertainty sampling);
* `random`: `k` images drawn at random (the control), with the seed.

Each set is added to the labelled train list of a copy of the VOC folder,
and stage 1 (phases a, b, c) is trained again from scratch with the run's
configuration and seed, then scored at t = 0 on the reported split. With
`start="phase_b"` only phase c is trained again, from the run's own
phase-b weights (a fine-tune, as a user who labels a few more images would
continue training): both arms then share every weight they start from, so
the comparison is not drowned by the run-to-run noise of training stage 1
from scratch (docs/results/LABELLING.md, from scratch: 35.0 against 50.3
mIoU between the arms of seed 2). The
weak pool is left as it is in both arms (the labelled images keep their
noisy tags in it too), so the arms differ only in which images carry
masks. Also recorded, as the mechanism: the stage-1 model's own IoU on
each set (the ranking should pick the images it segments worst) and the
classes the sets cover. The library never imports this module.
"""

import copy
import json
import os
import shutil

import numpy as np

from dis_tf import atomic
from dis_tf import evaluation
from dis_tf import image_ops
from dis_tf import quality
from dis_tf import selection
from dis_tf.data import voc
from dis_tf.data import web_tags
from dis_tf.research import tables

ARMS = ("ranked", "random")
# Where the arms' stage 1 starts: "scratch" (phases a, b, c) or "phase_b"
# (phase c from the run's phase-b weights).
STARTS = ("scratch", "phase_b")


def weak_pool(weak_dir):
  """[{"image", "mask", "name"}] (absolute paths) of the web_tags truth."""
  path = os.path.join(weak_dir, web_tags.TRUTH_DIR, "truth.jsonl")
  truth_dir = os.path.join(weak_dir, web_tags.TRUTH_DIR)
  pool = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      entry = json.loads(line)
      pool.append({
          "image": os.path.join(weak_dir, entry["image"]),
          "mask": os.path.join(truth_dir, entry["mask"]),
          "name": os.path.splitext(os.path.basename(entry["image"]))[0]})
  return pool


def _pool_examples(pool):
  for entry in pool:
    image, _ = voc.read_rgb_image(entry["image"])
    mask = voc.read_label_png(entry["mask"])
    yield {"image": image_ops.normalize_image(image[None]),
           "mask": np.asarray(mask, np.int32)[None]}


def choose(scores, k, seed):
  """{"ranked": the k lowest scores (ties: pool order), "random": k drawn
  with `seed`} as sorted index lists."""
  scores = np.asarray(scores, np.float64)
  if not 0 < k <= len(scores):
    raise ValueError(f"k={k}: must be in 1..{len(scores)}")
  ranked = np.argsort(scores, kind="stable")[:k]
  drawn = np.random.default_rng(seed).choice(len(scores), k, replace=False)
  return {"ranked": sorted(int(i) for i in ranked),
          "random": sorted(int(i) for i in drawn)}


def labelled_copy(voc_dir, pool, chosen, out_dir):
  """A copy of the VOC folder whose train list also holds `chosen` images
  of `pool` with their true masks. Returns the copy's root (a `voc_dir`).

  Files are copied, not linked: the VOC reader refuses paths that resolve
  outside its folder (`dis_tf.data.safe_paths`).
  """
  source = voc.find_voc_root(voc_dir)
  root = os.path.join(out_dir, "VOCdevkit", "VOC2012")
  if os.path.exists(out_dir):
    shutil.rmtree(out_dir)  # A half-written copy of a killed run.
  shutil.copytree(source, root)
  lines = []
  for index in chosen:
    entry = pool[index]
    name = entry["name"]
    shutil.copyfile(entry["image"],
                    os.path.join(root, "JPEGImages", f"{name}.jpg"))
    voc.write_label_png(os.path.join(root, "SegmentationClass", f"{name}.png"),
                        voc.read_label_png(entry["mask"]))
    lines.append(name)
  for split in ("train", "trainval"):
    path = os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
    with open(path, encoding="utf-8") as f:
      existing = f.read().split()
    overlap = set(existing) & set(lines)
    if overlap:
      raise ValueError(f"{path} already lists {sorted(overlap)[:3]}")
    atomic.write_text(path, "\n".join(existing + lines) + "\n")
  return out_dir


def _present_classes(pool, indices, num_classes):
  counts = np.zeros(num_classes, np.int64)
  for i in indices:
    mask = np.asarray(voc.read_label_png(pool[i]["mask"]))
    for c in np.unique(mask):
      if c < num_classes:
        counts[c] += 1
  return counts.tolist()


def _score(model, config, split):
  from dis_tf.data import pipeline
  result = evaluation.evaluate_model(
      model, pipeline.eval_dataset(config, split), [0],
      num_classes=config.model.num_classes, log_every=0)
  return float(result["settings"][0]["mean_iou"])


def _warm_start(model_dir, arm_model_dir):
  """Puts the run's phase-a and phase-b weights in the arm's model_dir, so
  that training runs phase c only, from the run's phase-b weights."""
  from dis_tf import model_dir as model_dir_lib
  for phase in ("a", "b"):
    target = model_dir_lib.phase_weights_path(arm_model_dir, phase)
    if not os.path.exists(target):
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.copyfile(model_dir_lib.phase_weights_path(model_dir, phase),
                      target)


def run_seed(model_dir, k, seed, workdir, data_overrides=None,
             start="scratch"):
  """The study of one trained run; resumes from `workdir/result.json`.

  Args:
    model_dir: a finished training run (its phase-c checkpoint).
    k: images to label per arm.
    seed: the random arm's seed (and the run's).
    workdir: where the copies and the retrained runs go.
    data_overrides: data config fields (a moved benchmark).
    start: where the arms' stage 1 starts (`STARTS`).

  Returns:
    JSON-able dict: "miou" ({"stage1", "ranked", "random"} on the reported
    split at t = 0), "chosen" (pool indices per arm), "chosen_iou" (the
    stage-1 model's mIoU on each arm's images), "classes" (images per
    class in each arm), "quality_auroc" (the fit's AUROC on the selection
    split), "pool" (its size), "splits".
  """
  import dataclasses
  from dis_tf import model_dir as model_dir_lib
  from dis_tf import training
  from dis_tf.data import pipeline
  if start not in STARTS:
    raise ValueError(f"start={start!r}: expected one of {STARTS}.")
  done = os.path.join(workdir, "result.json")
  if os.path.exists(done):
    with open(done, encoding="utf-8") as f:
      return json.load(f)
  from dis_tf.modeling import dis_model
  config = model_dir_lib.load_config(model_dir, data_overrides)
  build_config = copy.deepcopy(config)
  build_config.model.weights = None  # The weights come from phase c.
  stage1 = dis_model.build_dis_model(build_config)
  stage1.load_weights(model_dir_lib.phase_weights_path(model_dir, "c"))
  c = config.model.num_classes
  select, report = config.data.select_split, config.data.eval_split
  fit = quality.fit(stage1, pipeline.eval_dataset(config, select), 0, c,
                    select)
  pool = weak_pool(config.data.weak_dir)
  parts, matrices = quality.split_parts(stage1, _pool_examples(pool), 0, c)
  scores = np.asarray(quality.score_from_parts(parts, fit))
  chosen = choose(scores, k, seed)
  result = {
      "miou": {"stage1": _score(stage1, config, report)},
      "chosen": chosen,
      "chosen_iou": {arm: float(selection.mean_iou_of(
          matrices[chosen[arm]].sum(0))) for arm in ARMS},
      "pool_iou": float(selection.mean_iou_of(matrices.sum(0))),
      "classes": {arm: _present_classes(pool, chosen[arm], c)
                  for arm in ARMS},
      "quality_auroc": None if fit is None else fit.auroc,
      "pool": len(pool), "k": int(k), "splits": [select, report],
      "start": start,
  }
  for arm in ARMS:
    voc_dir = labelled_copy(config.data.voc_dir, pool, chosen[arm],
                            os.path.join(workdir, arm, "voc"))
    arm_config = dataclasses.replace(
        config, model_dir=os.path.join(workdir, arm, "run"),
        data=dataclasses.replace(
            config.data, voc_dir=voc_dir,
            data_dir=os.path.join(workdir, arm, "tfds")))
    pipeline.prepare_datasets(arm_config)
    if start == "phase_b":
      _warm_start(model_dir, arm_config.model_dir)
    model = training.train(arm_config, "full", verbose=0)
    result["miou"][arm] = _score(model, arm_config, report)
  atomic.write_json(done, result)
  return result


def run_study(model_dirs, seeds, k, workdir, data_overrides=None,
              start="scratch"):
  """{"seeds", "k", "runs": [run_seed of each model_dir]}."""
  return {"seeds": [int(s) for s in seeds], "k": int(k),
          "runs": [run_seed(d, k, int(s), os.path.join(workdir, f"seed_{s}"),
                            data_overrides, start)
                   for d, s in zip(model_dirs, seeds)]}


# ------------------------------------------------------------------- page
def format_page(result, command):
  """The Markdown page; every conclusion is chosen by the numbers."""
  runs, seeds, k = result["runs"], result["seeds"], result["k"]
  per = lambda *keys: np.asarray([_get(r, keys) for r in runs], np.float64)
  rows = [[s, r["pool"], f"{100 * r['miou']['stage1']:.1f}",
           f"{100 * r['miou']['ranked']:.1f}",
           f"{100 * r['miou']['random']:.1f}",
           f"{100 * r['chosen_iou']['ranked']:.1f}",
           f"{100 * r['chosen_iou']['random']:.1f}",
           f"{100 * r['pool_iou']:.1f}"]
          for s, r in zip(seeds, runs)]
  header = ["seed", "pool", "stage 1", f"+{k} ranked", f"+{k} random",
            "stage-1 mIoU on ranked set", "on random set", "on whole pool"]
  covered = {arm: np.asarray([np.count_nonzero(r["classes"][arm][1:])
                              for r in runs], np.float64) for arm in ARMS}
  gain = tables.paired_stats(per("miou", "ranked"), per("miou", "random"))
  harder = tables.paired_stats(per("chosen_iou", "ranked"),
                               per("chosen_iou", "random"))
  v = tables.verdict(gain, 0.0)
  lines = [
      "# Which images to label next: the quality ranking against random",
      "",
      f"Per seed: the stage-1 model of the run ranks the {runs[0]['pool']} "
      "weak images by the served quality score (fitted on "
      f"{runs[0]['splits'][0]}, t = 0); {k} images get their true masks "
      "(the generator's, which no training reads), either the least trusted "
      "(`ranked`, `tools/rank_unlabelled.py`'s order) or drawn at random "
      "(`random`); " + _retraining(runs[0].get("start", "scratch"))
      + " with them added to the labelled set, and scored at t = 0 on "
      f"{runs[0]['splits'][1]}. `dis_tf/research/labelling_study.py` "
      "describes the protocol.",
      "",
      f"Produced by `{command}`.",
      "",
      "| " + " | ".join(header) + " |",
      "|" + "---|" * len(header),
  ] + ["| " + " | ".join(map(str, row)) + " |" for row in rows] + [
      "",
      "Paired per seed (mIoU points; " + tables.STD_NOTE + "):",
      "",
      f"- Ranked minus random, after retraining: "
      f"{tables.paired_text(gain)}.",
      f"- The stage-1 model's mIoU on the ranked set minus on the random "
      f"set: {tables.paired_text(harder)}.",
      f"- Foreground classes with at least one labelled image in the set "
      f"(mean over seeds): ranked {covered['ranked'].mean():.1f}, random "
      f"{covered['random'].mean():.1f}.",
      "",
      "## Target",
      "",
      tables.TARGET_RULE,
      "",
      f"- Labelling by the ranking beats labelling at random: **{v}**.",
      "",
      "## Reading",
      "",
      "- " + _reading(gain, harder, v, covered),
  ]
  return "\n".join(lines) + "\n"


def _retraining(start):
  if start == "phase_b":
    return ("phase c of stage 1 is trained again from the run's own "
            "phase-b weights (a fine-tune: both arms start from the same "
            "weights)")
  return "stage 1 is trained again from scratch"


def _get(run, keys):
  for key in keys:
    run = run[key]
  return run


def _reading(gain, harder, verdict, covered):
  picks = ("The ranking picks the images the stage-1 model segments worse "
           f"({harder['mean']:+.1f} mIoU on its set against the random "
           "set)" if harder["high"] < 0 else
           "The ranking's set is not resolved as harder for the stage-1 "
           f"model than the random set ({harder['mean']:+.1f} mIoU)")
  fewer = covered["ranked"].mean() < covered["random"].mean()
  coverage = (f"it covers fewer classes than a random set "
              f"({covered['ranked'].mean():.1f} against "
              f"{covered['random'].mean():.1f})" if fewer else
              f"it covers as many classes as a random set "
              f"({covered['ranked'].mean():.1f} against "
              f"{covered['random'].mean():.1f})")
  if verdict == "met":
    return (picks + "; their masks teach it more than random ones: "
            f"{gain['mean']:+.1f} mIoU after retraining; " + coverage + ".")
  if verdict == "missed":
    return (picks + "; yet their masks teach it less than random ones "
            f"({gain['mean']:+.1f} mIoU after retraining), and " + coverage
            + ".")
  return (picks + f"; after retraining the difference ({gain['mean']:+.1f} "
          "mIoU) is not resolved from zero; " + coverage + ".")


def write(result, output, command):
  """Writes the page and, next to it, its JSON (same name, .json)."""
  return tables.write_page(result, output, command, format_page)


def load(path):
  """(result, command) of a JSON written by `write`."""
  return tables.load_page(path, ("seeds", "k", "runs"),
                          "tools/labelling_study.py")
