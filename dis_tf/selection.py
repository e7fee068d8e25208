"""Choosing t_test on a held-out split, and recording the choice.

Test-time latent steps can help or hurt a given model (RESULTS.md), so the
step count a model serves is chosen on a split held out from the one
reported (`DataConfig.select_split`, e.g. "val[:100]" of the synthetic
benchmark, reported on "val[100:]"), and stored in the model_dir's
`config.json` (`latent.t_test`), where the export and the demo read their
default. The scores behind the choice go to `t_test_selection.json`.
"""

import os

from dis_tf import atomic
from dis_tf import errors
from dis_tf import evaluation

SELECTION_FILENAME = "t_test_selection.json"


def choose_t_test(scores):
  """The step count with the highest score; ties go to the fewer steps.

  Args:
    scores: {t_test: mIoU}.

  Returns:
    The chosen t_test (int).
  """
  if not scores:
    raise ValueError("choose_t_test: no scores.")
  best = max(scores.values())
  return min(int(t) for t, v in scores.items() if v == best)


def select_t_test(model, dataset, t_tests, num_classes=21):
  """Scores `t_tests` on `dataset` and chooses one.

  Args:
    model: a `DISModel`.
    dataset: the held-out split (batch-1 evaluation dicts with masks).
    t_tests: candidate step counts.
    num_classes: classes.

  Returns:
    (chosen t_test, {t_test: mIoU}, number of images).
  """
  results = evaluation.evaluate_model(model, dataset, t_tests,
                                      num_classes=num_classes, log_every=0)
  if not results["num_images"]:
    raise errors.UserError("select_t_test: the selection split has no images.")
  scores = {s["t_test"]: s["mean_iou"] for s in results["settings"]}
  return choose_t_test(scores), scores, results["num_images"]


def record_selection(config, t_test, scores, split, num_images):
  """Stores the chosen t_test in `config.model_dir`'s config.json.

  Args:
    config: the run's `ExperimentConfig` (its `model_dir` is written).
    t_test: the chosen step count.
    scores: {t_test: mIoU} on the selection split.
    split: the selection split's name.
    num_images: images scored.

  Returns:
    The path of the selection record.
  """
  config.latent.t_test = int(t_test)
  config.save(config.model_dir)
  path = os.path.join(config.model_dir, SELECTION_FILENAME)
  atomic.write_json(path, {
      "t_test": int(t_test), "split": split, "num_images": int(num_images),
      "mean_iou": {str(t): float(v) for t, v in sorted(scores.items())},
      "rule": "highest mIoU on the split; ties go to fewer steps",
  }, indent=2)
  return path


def describe(t_test, scores, split, num_images):
  """One line saying which t_test was chosen and why."""
  listed = ", ".join(f"t={t}: {100 * v:.1f}" for t, v in sorted(scores.items()))
  return (f"t_test = {t_test}, chosen on {split} ({num_images} images held "
          f"out from the reported split) as the highest mIoU ({listed}; "
          "ties go to fewer steps).")
