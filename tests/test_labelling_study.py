"""dis_tf.research.labelling_study: the choice of images to label, the VOC
copy with their masks, one seed end to end on a tiny run, and a page whose
conclusions follow the numbers."""

import os

import numpy as np
import pytest

from dis_tf import model_dir as model_dir_lib
from dis_tf.data import voc
from dis_tf.research import labelling_study as ls


def test_choose_takes_the_least_trusted_and_a_seeded_random_set():
  scores = [0.9, 0.1, 0.5, 0.1, 0.7, 0.3]
  chosen = ls.choose(scores, 3, seed=0)
  assert chosen["ranked"] == [1, 3, 5]  # 0.1, 0.1 (pool order), 0.3.
  assert chosen["random"] == ls.choose(scores, 3, seed=0)["random"]
  assert len(set(chosen["random"])) == 3
  assert ls.choose(scores, 3, seed=1)["random"] != chosen["random"] or (
      ls.choose(scores, 3, seed=2)["random"] != chosen["random"])
  with pytest.raises(ValueError, match="k=7"):
    ls.choose(scores, 7, seed=0)


def test_labelled_copy_adds_the_chosen_masks_to_the_train_list(
    tmp_path, mini_benchmark):
  pool = ls.weak_pool(mini_benchmark["weak_dir"])
  assert len(pool) == mini_benchmark["num_weak"]
  out = ls.labelled_copy(mini_benchmark["voc_dir"], pool, [2, 5],
                         str(tmp_path / "copy"))
  root = voc.find_voc_root(out)
  with open(os.path.join(root, "ImageSets", "Segmentation",
                         "train.txt")) as f:
    train = f.read().split()
  assert len(train) == mini_benchmark["num_train"] + 2
  assert train[-2:] == [pool[2]["name"], pool[5]["name"]]
  mask = voc.read_label_png(os.path.join(root, "SegmentationClass",
                                         f"{pool[5]['name']}.png"))
  np.testing.assert_array_equal(mask, voc.read_label_png(pool[5]["mask"]))
  # The source is untouched, and a second copy replaces the first.
  with open(os.path.join(voc.find_voc_root(mini_benchmark["voc_dir"]),
                         "ImageSets", "Segmentation", "train.txt")) as f:
    assert len(f.read().split()) == mini_benchmark["num_train"]
  ls.labelled_copy(mini_benchmark["voc_dir"], pool, [1],
                   str(tmp_path / "copy"))
  with open(os.path.join(root, "ImageSets", "Segmentation",
                         "train.txt")) as f:
    assert f.read().split()[-1] == pool[1]["name"]


def test_run_seed_end_to_end_and_resume(tmp_path, mini_run, mini_benchmark):
  model_dir = str(tmp_path / "run")
  mini_run(model_dir)
  workdir = str(tmp_path / "work")
  result = ls.run_seed(model_dir, 2, 0, workdir)
  assert result["pool"] == mini_benchmark["num_weak"]
  assert set(result["miou"]) == {"stage1", "ranked", "random"}
  assert all(0.0 <= v <= 1.0 for v in result["miou"].values())
  assert all(len(result["chosen"][arm]) == 2 for arm in ls.ARMS)
  for arm in ls.ARMS:
    assert os.path.exists(os.path.join(workdir, arm, "run", "model.keras"))
  # A finished seed is read back, not retrained.
  os.remove(os.path.join(workdir, "ranked", "run", "model.keras"))
  assert ls.run_seed(model_dir, 2, 0, workdir) == result


def test_run_seed_from_phase_b_trains_phase_c_only(tmp_path, mini_run):
  model_dir = str(tmp_path / "run")
  mini_run(model_dir, phases=("a", "b", "c"))
  workdir = str(tmp_path / "work")
  with pytest.raises(ValueError, match="start='phase_c'"):
    ls.run_seed(model_dir, 2, 0, workdir, start="phase_c")
  result = ls.run_seed(model_dir, 2, 0, workdir, start="phase_b")
  assert result["start"] == "phase_b"
  for arm in ls.ARMS:
    run = os.path.join(workdir, arm, "run")
    # Phases a and b are the run's own files; only phase c was trained.
    for phase in ("a", "b"):
      assert model_dir_lib.file_hash(model_dir_lib.phase_weights_path(
          run, phase)) == model_dir_lib.file_hash(
              model_dir_lib.phase_weights_path(model_dir, phase))
    assert not os.path.exists(os.path.join(run, "logs", "phase_a"))
    assert os.path.exists(os.path.join(run, "logs", "phase_c"))
  page = ls.format_page({"seeds": [0], "k": 2, "runs": [result]}, "cmd")
  assert "phase c of stage 1 is trained again from the run's own" in page


def _result(gains, harder):
  runs = []
  for g, h in zip(gains, harder):
    runs.append({
        "miou": {"stage1": 0.40, "ranked": 0.45 + g, "random": 0.45},
        "chosen_iou": {"ranked": 0.30 + h, "random": 0.30},
        "pool_iou": 0.35, "pool": 100, "k": 10,
        "classes": {"ranked": [10, 3, 0, 2], "random": [10, 2, 2, 2]},
        "chosen": {"ranked": [0], "random": [1]},
        "quality_auroc": 0.8, "splits": ["val[:100]", "val[100:]"]})
  return {"seeds": list(range(len(runs))), "k": 10, "runs": runs}


@pytest.mark.parametrize("gains, verdict, words", [
    ((0.03, 0.02, 0.04), "met", "teach it more than random ones"),
    ((-0.03, -0.02, -0.04), "missed", "yet their masks teach it less"),
    ((0.02, -0.03, 0.01), "not resolved", "is not resolved from zero"),
])
def test_the_page_follows_the_numbers(gains, verdict, words):
  page = ls.format_page(_result(gains, (-0.1, -0.12, -0.08)), "cmd")
  assert f"beats labelling at random: **{verdict}**" in page
  assert words in page
  assert "The ranking picks the images the stage-1 model segments worse" in (
      page)
  assert "it covers fewer classes than a random set (2.0 against 3.0)" in page
  easy = ls.format_page(_result(gains, (0.1, -0.12, 0.08)), "cmd")
  assert "is not resolved as harder" in easy


def test_write_and_load_round_trip(tmp_path):
  result = _result((0.01, 0.02), (-0.1, -0.1))
  page = ls.write(result, str(tmp_path / "L.md"), "cmd")
  loaded, command = ls.load(str(tmp_path / "L.json"))
  assert command == "cmd" and ls.format_page(loaded, command) == page
