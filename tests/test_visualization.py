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
  assert row["reconstruction"].shape == row["image_target"].shape == (8, 8, 3)
  path = visualization.visualize(model, examples, [2], str(tmp_path / "f.png"),
                                 title="t")
  image = Image.open(path)
  assert image.format == "PNG" and image.size[0] > 300
  with pytest.raises(ValueError, match="No rows"):
    visualization.save_figure_grid([], str(tmp_path / "g.png"))


