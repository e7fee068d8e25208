"""The export's precision (`--precision`, `--model.precision`; issue 29).

A float32-trained run is exported twice, in float32 and with the backbone
in mixed_bfloat16: the metadata records each, the bf16 graph holds core
ops only and loads in the TF1 loader (the fresh-process loader script and
the op check of tests/test_export.py), and its labelmaps agree with the
float32 export's on generated images.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

from dis_tf.data import synthetic
from dis_tf.serving import export_lib
from dis_tf.serving import module as serving_module
from test_export import (_FORBIDDEN_OPS, _graph_ops, _load_in_fresh_process,
                         _test_images, _trained_tiny_run)

SIZE = 64
T_TEST = 3


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_run):
  """{"float32": path, "mixed_bfloat16": path, "root", "inputs"}: one
  trained tiny run (2 steps of phase c) exported in both precisions."""
  root = tmp_path_factory.mktemp("export_precision")
  run_dir = str(root / "run")
  rng = np.random.RandomState(0)
  _trained_tiny_run(tiny_run, run_dir, rng)
  paths = {"root": root}
  for precision in ("float32", "mixed_bfloat16"):
    paths[precision] = export_lib.export_from_model_dir(
        run_dir, str(root / "models" / precision),
        overrides={"latent.t_test": T_TEST, "model.precision": precision})
  tensor = rng.randint(0, 256, size=(2, 48, 56, 3)).astype(np.uint8)
  paths["inputs"] = str(root / "inputs.npz")
  np.savez(paths["inputs"], images=np.array(_test_images(rng), dtype=object),
           tensor=tensor)
  return paths


def test_metadata_records_the_precision(exports):
  for precision in ("float32", "mixed_bfloat16"):
    meta = tf.saved_model.load(exports[precision]).signatures["metadata"]()
    assert meta["precision"].numpy().decode() == precision


def _bfloat16_nodes(path):
  """Node ops of the graph (library included) with a bfloat16 attribute."""
  from tensorflow.core.protobuf import saved_model_pb2
  proto = saved_model_pb2.SavedModel()
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    proto.ParseFromString(f.read())
  found = set()
  for meta_graph in proto.meta_graphs:
    nodes = list(meta_graph.graph_def.node)
    for function in meta_graph.graph_def.library.function:
      nodes.extend(function.node_def)
    for node in nodes:
      if any(value.type == tf.bfloat16.as_datatype_enum
             for value in node.attr.values()):
        found.add(node.op)
  return found


def test_bfloat16_graph_has_core_ops_only(exports):
  path = exports["mixed_bfloat16"]
  # The backbone's convolutions really run in bfloat16 in this graph, and
  # not in the float32 export's.
  assert "Conv2D" in _bfloat16_nodes(path)
  assert not _bfloat16_nodes(exports["float32"])
  ops, attrs, _ = _graph_ops(path)
  unknown = sorted(op for op in ops if op_def_registry.get(op) is None)
  assert not unknown, f"ops not registered in core TensorFlow: {unknown}"
  bad = sorted(op for op in ops
               if op in _FORBIDDEN_OPS or op.startswith(("Xla", "_Xla")))
  assert not bad, f"non-servable ops: {bad}"
  assert not any(a.startswith("_XlaCompile") for a in attrs)


def test_bfloat16_export_loads_in_the_tf1_loader(exports, tmp_path):
  """A fresh process without dis_tf runs every signature through the TF2
  loader and the TF1 `Session` loader; both give the same labelmaps."""
  results = _load_in_fresh_process(exports["mixed_bfloat16"],
                                   exports["inputs"], tmp_path)
  for name in ("serving_default", "serving_steps", "predict_images",
               "predict_images_float"):
    np.testing.assert_array_equal(results[f"v1/{name}/class_ids"],
                                  results[f"v2/{name}/class_ids"])
    np.testing.assert_allclose(results[f"v1/{name}/probabilities"],
                               results[f"v2/{name}/probabilities"],
                               atol=1e-5)
  assert results["v1/metadata/precision"] == b"mixed_bfloat16"


def test_bfloat16_labelmap_agrees_with_float32(exports):
  """On 16 generated images (the synthetic benchmark's generator, 64 to
  120 px), the bf16 export's labelmap equals the float32 export's on at
  least 99% of the pixels. Measured on this tiny model (2 training steps
  from random weights, t_test 3): 99.55% of 140091 pixels (printed with
  -s)."""
  rng = np.random.default_rng(7)
  images = [synthetic.generate_image(rng, int(h), int(w))[0]
            for h, w in rng.integers(64, 121, size=(16, 2))]
  encoded = tf.constant([tf.io.encode_png(im).numpy() for im in images])
  labelmaps = {}
  for precision in ("float32", "mixed_bfloat16"):
    loaded = tf.saved_model.load(exports[precision])
    labelmaps[precision] = loaded.signatures["serving_default"](
        image_bytes=encoded)["class_ids"].numpy()
  valid = labelmaps["float32"] != serving_module.IGNORE_LABEL
  same = (labelmaps["float32"] == labelmaps["mixed_bfloat16"])[valid]
  fraction = same.mean()
  print(f"bf16 == float32 labelmap on {fraction:.4%} of "
        f"{same.size} pixels")
  assert fraction >= 0.99, fraction
