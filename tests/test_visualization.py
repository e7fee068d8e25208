"""dis_tf.visualization: figure rows and the PNG grid."""

import numpy as np
from PIL import Image
import pytest

from dis_tf import visualization


@pytest.fixture(scope="module")
def model(tiny_model):
  return tiny_model()


def test_visualization_writes_png(model, eval_examples, tmp_path):
  examples = eval_examples()[:2]
  row = visualization.figure_row(model, examples[0], [2, 4])
  assert list(row["labelmaps"]) == [0, 2, 4]
  assert row["image"].dtype == np.uint8 and row["image"].shape == (64, 64, 3)
  # z3 of the 32 x 32 canvas (the tiny model's eval_crop_size) the 64 x 64
  # image is fitted into: 4 x 4 feature cells.
  assert row["reconstruction"].shape == row["image_target"].shape == (4, 4, 3)
  path = visualization.visualize(model, examples, [2], str(tmp_path / "f.png"),
                                 title="t")
  image = Image.open(path)
  assert image.format == "PNG" and image.size[0] > 300
  with pytest.raises(ValueError, match="No rows"):
    visualization.save_figure_grid([], str(tmp_path / "g.png"))




def _row(height, width, truth=True):
  rng = np.random.RandomState(height)
  feature = (height // 8, width // 8, 3)
  return {
      "file_name": f"{height}x{width}.jpg",
      "image": rng.randint(0, 256, (height, width, 3)).astype(np.uint8),
      "image_target": rng.randint(0, 256, feature).astype(np.uint8),
      "reconstruction": rng.randint(0, 256, feature).astype(np.uint8),
      "labelmaps": {0: np.full((height, width), 1),
                    30: np.arange(width)[None].repeat(height, 0) % 3},
      "ground_truth": (np.full((height, width), 255) if truth else None),
      "t_max": 30,
  }


def test_grid_image_tiles_rows_of_square_cells():
  rows = [_row(40, 64), _row(64, 48, truth=False)]
  assert visualization.figure_columns(rows) == [
      "image", "image target I", "z3 (t=30)", "labelmap t=0",
      "labelmap t=30", "ground truth"]
  grid = visualization.grid_image(rows)
  gap, cell = visualization.GRID_GAP, 64  # The largest image side.
  assert grid.dtype == np.uint8
  assert grid.shape == (2 * (cell + gap) + gap, 6 * (cell + gap) + gap, 3)

  def at(row, column):
    top, left = gap + row * (cell + gap), gap + column * (cell + gap)
    return grid[top:top + cell, left:left + cell]

  palette = visualization.colorize(np.arange(256))
  background = visualization.GRID_BACKGROUND
  # A 40 x 64 image fills the cell's width, centred between two margins.
  assert (at(0, 0)[:12] == background).all()
  assert (at(0, 0)[12:52] == rows[0]["image"]).all()
  # Labelmaps keep their palette colours (nearest neighbour).
  assert (at(0, 3)[12:52] == palette[1]).all()
  colours = {tuple(c) for c in at(0, 4)[12:52].reshape(-1, 3)}
  assert colours == {tuple(palette[k]) for k in range(3)}
  assert (at(0, 5)[12:52] == palette[255]).all()  # The ignore label.
  assert (at(1, 5) == background).all()  # No ground truth: empty cell.
  # Capped cells: a 500 px image is drawn at MAX_PANEL_SIZE.
  big = visualization.grid_image([_row(500, 375)])
  assert big.shape[0] == visualization.MAX_PANEL_SIZE + 2 * gap
  with pytest.raises(ValueError, match="No rows"):
    visualization.grid_image([])
