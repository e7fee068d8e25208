"""Figure-4/5-style grids: image, image target, z3, labelmaps over t, truth.

One row per image; columns (paper Figs. 4 and 5): the input image, the
downsampled image target I (the supervision of subnet-2), the reconstruction
z3 after the largest t, the labelmap at t = 0 and at each chosen t (with its
quality score, `dis_tf.quality`, under it), and the ground truth when there
is one. Labelmaps use the VOC colour palette, with a
legend of the classes that appear. Rendering uses matplotlib's Agg canvas
directly (no pyplot, no display needed).

  rows = [figure_row(model, example, t_tests=(10, 30)) for example in data]
  save_figure_grid(rows, "figure.png")

`grid_image` tiles the same rows into one plain uint8 array (no legend or
titles), the image that TensorBoard shows (`dis_tf.callbacks.ImageSummaries`).
"""

import os

import numpy as np
from PIL import Image

from dis_tf import classes
from dis_tf import evaluation
from dis_tf import flags as dis_flags
from dis_tf import image_ops
from dis_tf import quality as quality_lib


def colorize(labelmap, palette=None):
  """Class ids [H, W] -> uint8 RGB [H, W, 3] with the VOC palette."""
  palette = classes.voc_palette() if palette is None else palette
  return palette[np.asarray(labelmap).astype(np.int64) % len(palette)]


def to_uint8_image(normalized):
  """Normalised float image [H, W, 3] -> displayable uint8 RGB."""
  rgb = image_ops.denormalize_image(normalized).numpy()
  return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def figure_row(model, example, t_tests, compiled=True, with_quality=False,
               quality_fit=None):
  """Computes the panels of one figure row.

  Args:
    model: a `DISModel`.
    example: dict with "image" [1, H, W, 3] (normalised), optional "mask"
      [1, H, W] and "file_name" [1].
    t_tests: step counts shown besides t = 0 (always shown first).
    compiled: run the latent loop in a `tf.function`.
    with_quality: also compute the served quality score of each labelmap
      (`dis_tf.quality.score_image`).
    quality_fit: the model's `dis_tf.quality.QualityFit` (None: the
      fallback score).

  Returns:
    Dict with "file_name", "image" uint8 [H, W, 3], "image_target" and
    "reconstruction" uint8 [h, w, 3] (z3 after the largest t),
    "labelmaps" {t: int [H, W]} (t = 0 first), "ground_truth" int [H, W] or
    None, "t_max", and "quality" ({t: score} with `with_quality`, else
    None).
  """
  t_tests = dis_flags.parse_t_tests([0] + list(t_tests), "t_tests")
  out = evaluation.predict(model, example["image"], t_tests,
                           with_reconstruction=True, compiled=compiled)
  t_max = t_tests[-1]
  image = np.asarray(evaluation.to_numpy(example["image"]))
  image = image.reshape(image.shape[-3:])
  truth = None
  if "mask" in example:
    truth = evaluation.to_numpy(example["mask"])
    truth = truth.reshape(truth.shape[-2:])
  return {
      "file_name": evaluation.example_file_name(example, 0),
      "image": to_uint8_image(image),
      "image_target": to_uint8_image(out[t_max]["image_target"]),
      "reconstruction": to_uint8_image(out[t_max]["reconstruction"]),
      "labelmaps": {t: np.argmax(out[t]["probabilities"], -1) for t in t_tests},
      "ground_truth": truth,
      "t_max": t_max,
      "quality": ({t: quality_lib.score_image(model, example["image"], t,
                                              quality_fit)
                   for t in t_tests} if with_quality else None),
  }


# Cells of `grid_image`: the largest image side, at most this many pixels
# (a VOC image of 500 px would make a 3000 px wide grid per epoch).
MAX_PANEL_SIZE = 192
# Pixels between cells, and their grey level.
GRID_GAP = 2
GRID_BACKGROUND = 64


def figure_columns(rows):
  """Column titles of `figure_row`s, in the order the grids draw them."""
  has_truth = any(r["ground_truth"] is not None for r in rows)
  return (["image", "image target I", f"z3 (t={rows[0]['t_max']})"]
          + [f"labelmap t={t}" for t in rows[0]["labelmaps"]]
          + (["ground truth"] if has_truth else []))


def _fit(panel, size, resample):
  """`panel` [h, w, 3] uint8 scaled to fit a size x size cell, centred."""
  h, w = panel.shape[:2]
  scale = size / max(h, w)
  new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
  resized = np.asarray(Image.fromarray(panel).resize((new_w, new_h),
                                                     resample))
  cell = np.full((size, size, 3), GRID_BACKGROUND, np.uint8)
  top, left = (size - new_h) // 2, (size - new_w) // 2
  cell[top:top + new_h, left:left + new_w] = resized
  return cell


def grid_image(rows, panel_size=None, palette=None):
  """Tiles `figure_row`s into one uint8 image: a row per example.

  Columns as in `figure_columns` (image, image target, z3, the labelmaps,
  ground truth if any row has one; a row without it gets an empty cell).
  Every panel is scaled to fit a square cell, keeping its aspect: nearest
  neighbour for the labelmaps and the feature-size panels (their pixels
  stay visible, their colours stay palette colours), bilinear for the
  image.

  Args:
    rows: `figure_row` dicts with the same step counts.
    panel_size: cell side in pixels (default: the largest image side, at
      most `MAX_PANEL_SIZE`).
    palette: [256, 3] uint8 class colours (`ClassSet.palette()`; None:
      VOC's).

  Returns:
    uint8 [n * (panel_size + GRID_GAP) + GRID_GAP,
    columns * (panel_size + GRID_GAP) + GRID_GAP, 3].
  """
  if not rows:
    raise ValueError("No rows to draw (no image was selected).")
  has_truth = any(r["ground_truth"] is not None for r in rows)
  if panel_size is None:
    panel_size = min(MAX_PANEL_SIZE,
                     max(max(r["image"].shape[:2]) for r in rows))
  palette = classes.voc_palette() if palette is None else palette
  tiled = []
  for row in rows:
    cells = [_fit(row["image"], panel_size, Image.BILINEAR)]
    panels = [row["image_target"], row["reconstruction"]]
    panels += [colorize(row["labelmaps"][t], palette) for t in row["labelmaps"]]
    if has_truth:
      truth = row["ground_truth"]
      panels.append(np.full((1, 1, 3), GRID_BACKGROUND, np.uint8)
                    if truth is None else colorize(truth, palette))
    cells += [_fit(p.astype(np.uint8), panel_size, Image.NEAREST)
              for p in panels]
    tiled.append(cells)
  n, ncols, step = len(tiled), len(tiled[0]), panel_size + GRID_GAP
  grid = np.full((n * step + GRID_GAP, ncols * step + GRID_GAP, 3),
                 GRID_BACKGROUND, np.uint8)
  for i, cells in enumerate(tiled):
    for j, cell in enumerate(cells):
      top, left = GRID_GAP + i * step, GRID_GAP + j * step
      grid[top:top + panel_size, left:left + panel_size] = cell
  return grid


def save_figure_grid(rows, output, class_names=classes.VOC_CLASSES,
                     title=None, panel_size=2.2, dpi=100, palette=None):
  """Renders figure rows into one PNG grid with a class legend.

  Args:
    rows: list of `figure_row` dicts (same step counts in every row).
    output: PNG path (parent folders are created).
    class_names: names for the legend, index = class id.
    title: optional figure title.
    panel_size: inches per panel.
    dpi: resolution.
    palette: [256, 3] uint8 class colours (`ClassSet.palette()`; None:
      VOC's).

  Returns:
    The path written.
  """
  # Imported here so that importing dis_tf never initialises matplotlib.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from matplotlib.patches import Patch

  if not rows:
    raise ValueError("No rows to draw (no image was selected).")
  t_values = list(rows[0]["labelmaps"])
  has_truth = any(r["ground_truth"] is not None for r in rows)
  headers = figure_columns(rows)
  ncols, nrows = len(headers), len(rows)
  palette = classes.voc_palette() if palette is None else palette
  fig = Figure(figsize=(panel_size * ncols, panel_size * nrows + 0.9),
               dpi=dpi)
  FigureCanvasAgg(fig)
  axes = fig.subplots(nrows, ncols, squeeze=False)
  present = set()
  for i, row in enumerate(rows):
    panels = [row["image"], row["image_target"], row["reconstruction"]]
    for t in t_values:
      panels.append(colorize(row["labelmaps"][t], palette))
      present.update(np.unique(row["labelmaps"][t]).tolist())
    if has_truth:
      truth = row["ground_truth"]
      if truth is None:
        panels.append(np.zeros_like(row["image"]))
      else:
        panels.append(colorize(truth, palette))
        present.update(np.unique(truth).tolist())
    scores = row.get("quality") or {}
    for j, panel in enumerate(panels):
      ax = axes[i, j]
      # Feature-size panels are tiny; nearest keeps their pixels visible.
      ax.imshow(panel, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      t = t_values[j - 3] if 3 <= j < 3 + len(t_values) else None
      if t in scores:
        ax.set_xlabel(f"quality {scores[t]:.2f}", fontsize=8)
      if i == 0:
        ax.set_title(headers[j], fontsize=9)
      if j == 0:
        ax.set_ylabel(os.path.basename(row["file_name"]), fontsize=8)
  handles = []
  for class_id in sorted(present):
    if class_id == classes.IGNORE_LABEL:
      label = "ignore"
    elif class_id < len(class_names):
      label = class_names[class_id]
    else:
      label = str(class_id)
    handles.append(Patch(facecolor=palette[class_id] / 255.0,
                         edgecolor="black", label=label))
  if handles:
    fig.legend(handles=handles, loc="lower center",
               ncol=min(len(handles), 8), fontsize=8, frameon=False)
  if title:
    fig.suptitle(title)
  fig.tight_layout(rect=(0, 0.9 / (panel_size * nrows + 0.9) + 0.02, 1,
                         0.95 if title else 1))
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  fig.savefig(output, format="png")
  return output


def visualize(model, examples, t_tests, output, compiled=True,
              with_quality=True, quality_fit=None, **kwargs):
  """`figure_row` for every example, then `save_figure_grid`.

  Args:
    model: a `DISModel`.
    examples: iterable of example dicts.
    t_tests: step counts besides t = 0.
    output: PNG path.
    compiled: run the latent loop in a `tf.function`.
    with_quality: write each labelmap's quality score under it.
    quality_fit: the model's `dis_tf.quality.QualityFit` (None: the
      fallback score).
    **kwargs: forwarded to `save_figure_grid`.

  Returns:
    The path written.
  """
  rows = [figure_row(model, ex, t_tests, compiled, with_quality, quality_fit)
          for ex in examples]
  return save_figure_grid(rows, output, **kwargs)
