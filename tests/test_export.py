"""SavedModel export: every loader TF Serving-like servers use, ops, assets.

One tiny trained model is exported once (module fixture); the SavedModel is
then loaded in fresh subprocesses that import only TensorFlow, through
`tf.saved_model.load`, the TF1 `loader.load` + `Session.run` path (the one
TF Serving's C++ loader takes) and `saved_model_cli run`, and all of them
must agree with the in-process `dis_tf` prediction.
"""

import base64
from concurrent import futures
import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from dis_tf import config as config_lib
from dis_tf import image_ops
from dis_tf import model_dir as model_dir_lib
from dis_tf import quality
from dis_tf.modeling import gram as gram_lib
from dis_tf.modeling.dis_model import DISModel
from dis_tf.serving import export_lib
from dis_tf.serving import inputs as inputs_lib
from dis_tf.serving import module as serving_module
from dis_tf.serving import client as client_lib

SIZE = 64
T_TEST = 3
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quiet_env():
  env = dict(os.environ)
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  env.pop("PYTHONPATH", None)  # The subprocesses must not see dis_tf.
  return env


def _train_batch(rng, batch_size=2):
  image = rng.randn(batch_size, SIZE, SIZE, 3).astype(np.float32)
  mask = rng.randint(0, 21, size=(batch_size, SIZE, SIZE)).astype(np.int32)
  tags = (rng.rand(batch_size, 21) > 0.7).astype(np.float32)
  tags[:, 0] = 1.0
  small = image_ops.image_target(image, (SIZE // 8, SIZE // 8)).numpy()
  return {"image": image, "image_small": small, "mask": mask, "tags": tags}


def _test_images(rng):
  """Encoded images of different sizes, formats and channel counts."""
  def rgb(h, w):
    return rng.randint(0, 256, size=(h, w, 3)).astype(np.uint8)
  return [
      tf.io.encode_png(rgb(50, 70)).numpy(),                       # RGB PNG
      tf.io.encode_jpeg(rgb(37, 90)).numpy(),                      # JPEG
      tf.io.encode_png(rgb(64, 40)[..., :1]).numpy(),              # gray
      tf.io.encode_png(np.concatenate(                             # RGBA
          [rgb(45, 45), np.full((45, 45, 1), 128, np.uint8)], -1)).numpy(),
  ]


def _trained_tiny_run(tiny_run, run_dir, rng):
  """A tiny run (width 16) trained 2 steps of phase c, saved in run_dir;
  (config, model)."""
  config, model = tiny_run(run_dir, width=16, crop_size=SIZE)
  model.set_phase("c")
  model.compile(keras.optimizers.Adam(1e-3))
  for _ in range(2):
    model.train_on_batch(_train_batch(rng))
  model_dir_lib.save_model(model, run_dir)
  return config, model


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run):
  root = tmp_path_factory.mktemp("export")
  run_dir = str(root / "run")
  rng = np.random.RandomState(0)
  config, model = _trained_tiny_run(tiny_run, run_dir, rng)

  base = str(root / "models" / "dis")
  path = export_lib.export_from_model_dir(
      run_dir, base, overrides={"latent.t_test": T_TEST})
  images = _test_images(rng)
  tensor = rng.randint(0, 256, size=(2, 48, 56, 3)).astype(np.uint8)
  module = serving_module.build_serving_module(
      model, T_TEST, SIZE, latent_step_size=config.latent.step_size)
  expected = {
      "serving_default": serving_module.predict_in_process(
          model, images, T_TEST, SIZE, module=module),
      "predict_images": serving_module.predict_in_process(
          model, tensor, T_TEST, SIZE, module=module),
      "predict_images_float": serving_module.predict_in_process(
          model, tensor.astype(np.float32), T_TEST, SIZE, module=module),
  }
  inputs = str(root / "inputs.npz")
  np.savez(inputs, images=np.array(images, dtype=object), tensor=tensor)
  return {"root": root, "base": base, "path": path, "run_dir": run_dir,
          "model": model, "images": images, "tensor": tensor,
          "inputs": inputs, "expected": expected,
          "loaded": tf.saved_model.load(path)}


def _assert_matches(outputs, expected):
  np.testing.assert_array_equal(outputs["class_ids"], expected["class_ids"])
  np.testing.assert_array_equal(outputs["height"], expected["height"])
  np.testing.assert_array_equal(outputs["width"], expected["width"])
  np.testing.assert_allclose(outputs["probabilities"],
                             expected["probabilities"], atol=1e-5)
  np.testing.assert_allclose(outputs["tag_probabilities"],
                             expected["tag_probabilities"], atol=1e-5)
  np.testing.assert_allclose(outputs["quality"], expected["quality"],
                             atol=1e-5)


def test_layout_signatures_and_outputs(exported):
  path = exported["path"]
  assert os.path.basename(path) == "1"
  # Atomic export: nothing but the version directory is left behind.
  assert os.listdir(exported["base"]) == ["1"]
  assert os.path.exists(os.path.join(path, "assets.extra",
                                     export_lib.WARMUP_FILENAME))
  assert set(exported["loaded"].signatures) == set(serving_module.SIGNATURES)

  out = exported["expected"]["serving_default"]
  assert set(out) == set(serving_module.PREDICTION_OUTPUTS)
  heights, widths = [50, 37, 64, 45], [70, 90, 40, 45]
  np.testing.assert_array_equal(out["height"], heights)
  np.testing.assert_array_equal(out["width"], widths)
  assert out["class_ids"].shape == (4, 64, 90)
  for ids, h, w in zip(out["class_ids"], heights, widths):
    assert ids[:h, :w].max() < 21
    assert (ids[h:] == 255).all() and (ids[:, w:] == 255).all()
  assert out["probabilities"].shape == (4, SIZE // 8, SIZE // 8, 21)
  np.testing.assert_allclose(out["probabilities"].sum(-1), 1.0, atol=1e-5)
  assert out["tag_probabilities"].shape == (4, 21)
  assert out["class_names"].shape == (4, 21)
  assert out["class_names"][0, 15] == b"person"
  # Not fitted (no selection in this run): the mean max-softmax probability
  # over the cells that cover each image.
  assert out["quality"].shape == (4,)
  assert ((out["quality"] > 1 / 21) & (out["quality"] <= 1)).all()

  meta = exported["loaded"].signatures["metadata"]()
  assert meta["t_test"].numpy() == T_TEST
  assert meta["input_size"].numpy().tolist() == [SIZE, SIZE]
  assert meta["resize_rule"].numpy().decode() == image_ops.RESIZE_RULE
  assert meta["tag_refinement"].numpy() == b"off"
  assert meta["precision"].numpy() == b"float32"
  assert (meta["latent_update"].numpy().decode()
          == exported["model"].latent_update)
  assert meta["class_names"].numpy()[0] == b"background"
  assert meta["quality_score"].numpy().decode() == quality.describe(None)


def test_same_path_as_model_infer(exported):
  """predict_in_process is the paper's inference: model.infer + upsample."""
  model, tensor = exported["model"], exported["tensor"]
  # The fit rule by hand: 48 x 56 -> long side SIZE, aspect kept, padded.
  fitted = (round(48 * SIZE / 56), SIZE)
  canvas = tf.pad(image_ops.normalize_image(
      tf.image.resize(tf.cast(tensor, tf.float32), fitted)),
                  [[0, 0], [0, SIZE - fitted[0]], [0, 0], [0, 0]])
  ref = model.infer(canvas, steps=T_TEST)
  out = exported["expected"]["predict_images"]
  np.testing.assert_allclose(out["probabilities"], ref["probabilities"],
                             atol=1e-5)
  back = tf.image.resize(ref["probabilities"], [SIZE, SIZE])
  ids = tf.argmax(tf.image.resize(back[:, :fitted[0], :fitted[1]],
                                  tensor.shape[1:3]), -1)
  assert (out["class_ids"] == ids.numpy()).mean() > 0.999


_SUBPROCESS = textwrap.dedent("""
  import sys
  import numpy as np
  import tensorflow as tf
  path, inputs, out = sys.argv[1:4]
  data = np.load(inputs, allow_pickle=True)
  images = [bytes(b) for b in data["images"]]
  tensor = data["tensor"]
  feeds = {
      "serving_default": {"image_bytes": images},
      "serving_steps": {"image_bytes": images, "steps": [3] * len(images)},
      "predict_images": {"images": tensor},
      "predict_images_float": {"images": tensor.astype(np.float32)},
      "metadata": {},
  }
  results = {}
  loaded = tf.saved_model.load(path)
  for name, feed in feeds.items():
    fn = loaded.signatures[name]
    args = {k: tf.constant(v, tf.int32 if k == "steps" else None)
            for k, v in feed.items()}
    for key, value in fn(**args).items():
      results["v2/" + name + "/" + key] = value.numpy()
  with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta_graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
    for name, feed in feeds.items():
      sig = meta_graph.signature_def[name]
      fetches = {k: v.name for k, v in sig.outputs.items()}
      feed_dict = {sig.inputs[k].name: v for k, v in feed.items()}
      for key, value in sess.run(fetches, feed_dict).items():
        results["v1/" + name + "/" + key] = value
  assert "dis_tf" not in sys.modules and "export" not in sys.modules
  np.savez(out, **results)
""")


def _load_in_fresh_process(path, inputs, tmp_path):
  """Runs `_SUBPROCESS` (TF2 and TF1 loaders, no dis_tf) on the export at
  `path` with the saved `inputs`; its results (an npz mapping)."""
  out = str(tmp_path / "results.npz")
  script = tmp_path / "load.py"
  script.write_text(_SUBPROCESS)
  subprocess.run([sys.executable, str(script), path, inputs, out],
                 check=True, env=_quiet_env(), cwd=str(tmp_path),
                 capture_output=True, timeout=300)
  return np.load(out, allow_pickle=True)


def test_fresh_process_loaders_agree(exported, tmp_path):
  results = _load_in_fresh_process(exported["path"], exported["inputs"],
                                   tmp_path)
  expected = exported["expected"]
  for loader in ("v2", "v1"):
    for name in ("serving_default", "serving_steps", "predict_images",
                 "predict_images_float"):
      ref = expected["predict_images" if name.startswith("predict")
                     else "serving_default"]
      outputs = {k: results[f"{loader}/{name}/{k}"]
                 for k in serving_module.PREDICTION_OUTPUTS}
      _assert_matches(outputs, ref)
      assert outputs["class_names"][0, 1] == b"aeroplane"
    assert results[f"{loader}/metadata/t_test"] == T_TEST


def test_saved_model_cli_run(exported, tmp_path):
  images = str(tmp_path / "images.npy")
  np.save(images, np.array(exported["images"], dtype=object),
          allow_pickle=True)
  outdir = tmp_path / "out"
  # The `saved_model_cli` console script runs this module's main(); calling
  # it through the interpreter also works in venvs that see TensorFlow via
  # --system-site-packages, where the script is not in the venv's bin/.
  cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
  subprocess.run(
      cli + ["run", "--dir", exported["path"], "--tag_set", "serve",
             "--signature_def", "serving_default",
             "--inputs", f"image_bytes={images}", "--outdir", str(outdir)],
      check=True, env=_quiet_env(), cwd=str(tmp_path), capture_output=True,
      timeout=300)
  outputs = {k: np.load(str(outdir / f"{k}.npy"), allow_pickle=True)
             for k in serving_module.PREDICTION_OUTPUTS}
  _assert_matches(outputs, exported["expected"]["serving_default"])


def test_warmup_records_run(exported):
  path = os.path.join(exported["path"], "assets.extra",
                      export_lib.WARMUP_FILENAME)
  names = set()
  for record in tf.data.TFRecordDataset(path):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    assert request.model_spec.name == "dis"
    fn = exported["loaded"].signatures[request.model_spec.signature_name]
    inputs = {k: tf.constant(tf.make_ndarray(v))
              for k, v in request.inputs.items()}
    outputs = fn(**inputs)
    assert set(outputs) == set(serving_module.PREDICTION_OUTPUTS)
    names.add(request.model_spec.signature_name)
  assert names == set(serving_module.SIGNATURES) - {"metadata"}


def test_non_image_bytes_are_invalid_argument(exported):
  fn = exported["loaded"].signatures["serving_default"]
  good = exported["images"][0]
  for bad in (b"this is not an image", b""):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"Input image_bytes element\] \[1\]"):
      fn(image_bytes=tf.constant([good, bad]))
  # The server keeps working afterwards.
  assert fn(image_bytes=tf.constant([good]))["class_ids"].shape[0] == 1


def test_steps_signature(exported):
  loaded = exported["loaded"]
  images = tf.constant(exported["images"][:2])
  fixed = loaded.signatures["serving_default"](image_bytes=images)
  def run(steps):
    return loaded.signatures["serving_steps"](
        image_bytes=images, steps=tf.constant(steps, tf.int32))
  same = run([T_TEST, T_TEST])
  np.testing.assert_allclose(same["probabilities"], fixed["probabilities"],
                             atol=1e-6)
  decoded = inputs_lib.decode_images(images, SIZE)[0]
  zero = run([0, 0])
  ref = exported["model"].infer(decoded, steps=0)
  np.testing.assert_allclose(zero["probabilities"], ref["probabilities"],
                             atol=1e-5)
  # Per-example counts: each image gets its own number of latent steps.
  mixed = run([0, T_TEST])
  np.testing.assert_allclose(mixed["probabilities"][0],
                             zero["probabilities"][0], atol=1e-5)
  np.testing.assert_allclose(mixed["probabilities"][1],
                             fixed["probabilities"][1], atol=1e-5)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="Input steps must be"):
    run([-1, 0])
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="Input steps must have one value per"):
    run([1])


# Ops that exist in core TF but are not servable by a stock model server.
_FORBIDDEN_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def _graph_ops(saved_model_dir):
  """(op types, attribute names) of the graph and its function library."""
  proto = saved_model_pb2.SavedModel()
  with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
    proto.ParseFromString(f.read())
  ops, attrs = set(), set()
  functions = set()
  for meta_graph in proto.meta_graphs:
    library = meta_graph.graph_def.library
    functions |= {f.signature.name for f in library.function}
    nodes = list(meta_graph.graph_def.node)
    for function in library.function:
      nodes.extend(function.node_def)
      attrs |= set(function.attr)
    for node in nodes:
      ops.add(node.op)
      attrs |= set(node.attr)
  return ops - functions, attrs, functions


def test_only_core_servable_ops(exported):
  # The synthetic preset XLA-compiles the stage-2 latent step; the export
  # must not carry that over.
  assert exported["model"].latent_jit_train_step
  ops, attrs, functions = _graph_ops(exported["path"])
  # The while loop, its gradient tape and map_fn bodies are in the library.
  assert "While" in ops or "StatelessWhile" in ops
  assert any("while_body" in f for f in functions)
  assert {"DecodeImage", "Conv2D", "ResizeBilinear"} <= ops
  unknown = sorted(op for op in ops if op_def_registry.get(op) is None)
  assert not unknown, f"ops not registered in core TensorFlow: {unknown}"
  bad = sorted(op for op in ops
               if op in _FORBIDDEN_OPS or op.startswith(("Xla", "_Xla")))
  assert not bad, f"non-servable ops: {bad}"
  assert "_XlaMustCompile" not in attrs
  assert not any(a.startswith("_XlaCompile") for a in attrs)


def test_each_variable_saved_once(exported):
  """The Keras 3 duplicate-variable pitfall: one checkpoint entry each."""
  saved = [name for name, _ in tf.train.list_variables(
      os.path.join(exported["path"], "variables", "variables"))
           if name.endswith("VARIABLE_VALUE")]
  # The model's weights, plus the Gram kernels built once at export.
  assert len(saved) == (len(exported["model"].weights)
                        + len(gram_lib.GramOperator.FIELDS))


def test_gram_kernels_built_at_export_not_per_request(exported):
  """Requests apply the stored Gram kernels; they never rebuild them."""
  # The paper's step moves (u3, v3) by the stored A A^T alone (the
  # per-pixel step also applies the v1 part from the subnet weights, so
  # zeroing the stored kernels would not stop it).
  model = DISModel.from_config(dict(exported["model"].get_config(),
                                    latent_update="both"))
  model.set_weights(exported["model"].get_weights())
  module = serving_module.build_serving_module(model, T_TEST, SIZE)
  reference = gram_lib.GramOperator.from_heads(model)
  assert len(module.gram_fields) == len(gram_lib.GramOperator.FIELDS)
  for stored, built in zip(module.gram_fields, reference.fields()):
    np.testing.assert_allclose(stored.numpy(), built.numpy(), rtol=1e-6)
  images = tf.constant(exported["images"][:2])

  def tags_after(steps):
    return module.serving_steps(images, tf.constant([steps] * 2))[
        "tag_probabilities"].numpy()

  before, after = tags_after(0), tags_after(T_TEST)
  assert np.abs(after - before).max() > 1e-4   # the latent steps move v3
  # With the stored operator zeroed, A A^T g = 0: the same request no
  # longer moves, which it would if the kernels were rebuilt per request.
  for field in module.gram_fields:
    field.assign(tf.zeros_like(field))
  np.testing.assert_allclose(tags_after(T_TEST), before, atol=1e-7)


def test_export_is_atomic_and_versions(exported, tmp_path, monkeypatch):
  base = str(tmp_path / "dis")
  os.makedirs(os.path.join(base, "3"))
  os.makedirs(os.path.join(base, "notes"))
  assert export_lib.next_version(base) == 4

  def broken_save(*args, **kwargs):
    raise OSError("disk full")
  monkeypatch.setattr(tf.saved_model, "save", broken_save)
  with pytest.raises(OSError, match="disk full"):
    export_lib.export_saved_model(exported["model"], base, t_test=1,
                                  input_size=SIZE)
  assert sorted(os.listdir(base)) == ["3", "notes"]
  with pytest.raises(ValueError, match="--version=3"):
    export_lib.export_saved_model(exported["model"], base, version=3)


# Request bounds given on the export command line (small, to test them).
CLI_BOUNDS = {"max_batch_size": 2, "max_image_pixels": 5000,
              "max_batch_pixels": 8000, "max_steps": 40,
              "max_batch_steps": 50}


@pytest.fixture(scope="module")
def cli_export(exported, tmp_path_factory):
  """export/export_saved_model.py run once: default t_test and size, and
  the --serving.* bounds of CLI_BOUNDS."""
  base = str(tmp_path_factory.mktemp("cli") / "dis")
  env = _quiet_env()
  env["PYTHONPATH"] = REPO  # Stands in for `pip install -e .`.
  subprocess.run(
      [sys.executable, "export/export_saved_model.py",
       f"--model_dir={exported['run_dir']}", f"--export_dir={base}",
       "--version=7"] + [f"--serving.{k}={v}" for k, v in CLI_BOUNDS.items()],
      check=True, env=env, cwd=REPO, capture_output=True, timeout=300)
  return {"base": base,
          "loaded": tf.saved_model.load(os.path.join(base, "7"))}


def test_command_line_uses_config_t_test(exported, cli_export):
  """The CLI with defaults: the paper's t_test (30) and the config's size."""
  base = cli_export["base"]
  assert os.listdir(base) == ["7"]
  meta = cli_export["loaded"].signatures["metadata"]()
  assert meta["t_test"].numpy() == 30
  assert meta["input_size"].numpy().tolist() == [SIZE, SIZE]
  config = config_lib.ExperimentConfig.load(exported["run_dir"])
  assert meta["latent_step_size"].numpy() == pytest.approx(
      config.latent.step_size)


# ------------------------------------------------------------------ client
def _run_signature(loaded, name, inputs):
  outputs = loaded.signatures[name](**inputs)
  return {k: v.numpy() for k, v in outputs.items()}


class _FakeRestHandler(http.server.BaseHTTPRequestHandler):
  """TF Serving's REST predict API, row and columnar formats."""

  loaded = None

  def do_POST(self):
    assert self.path == "/v1/models/dis:predict", self.path
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    def b64(values):
      return tf.constant([base64.b64decode(v["b64"]) for v in values])
    rows = body["instances"]
    inputs = {"image_bytes": b64([r["image_bytes"] for r in rows])}
    if "steps" in rows[0]:
      inputs["steps"] = tf.constant([r["steps"] for r in rows], tf.int32)
    try:
      out = _run_signature(self.loaded, body["signature_name"], inputs)
      out = {k: (v.astype(str) if v.dtype == object else v).tolist()
             for k, v in out.items()}
      reply = {"predictions": [{k: v[i] for k, v in out.items()}
                               for i in range(len(rows))]}
      code = 200
    except tf.errors.InvalidArgumentError as e:
      reply, code = {"error": e.message}, 400
    data = json.dumps(reply).encode()
    self.send_response(code)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def log_message(self, *args):
    pass


def test_client_rest(exported, tmp_path, capsys):
  _FakeRestHandler.loaded = exported["loaded"]
  server = http.server.HTTPServer(("127.0.0.1", 0), _FakeRestHandler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  url = f"http://127.0.0.1:{server.server_port}"
  try:
    images = exported["images"]
    out = client_lib.rest_predict(url, "dis", images)
    _assert_matches(out, exported["expected"]["serving_default"])
    out = client_lib.rest_predict(url, "dis", images[:1], steps=T_TEST)
    np.testing.assert_array_equal(
        out["class_ids"][0],
        exported["expected"]["serving_default"]["class_ids"][0, :50, :70])
    with pytest.raises(RuntimeError, match="image_bytes"):
      client_lib.rest_predict(url, "dis", [b"junk"])
    paths = []
    for i, data in enumerate(images[:2]):
      paths.append(str(tmp_path / f"im{i}.img"))
      with open(paths[-1], "wb") as f:
        f.write(data)
    written = client_lib.run(paths, url, output_dir=str(tmp_path / "out"))
  finally:
    server.shutdown()
  printed = capsys.readouterr().out
  assert "im0.img: tags:" in printed and "im1.img: tags:" in printed
  labelmap = tf.io.decode_png(open(written[1], "rb").read()).numpy()
  assert labelmap.shape == (37, 90, 3)
  ids = exported["expected"]["serving_default"]["class_ids"][1, :37, :90]
  np.testing.assert_array_equal(labelmap, client_lib.colorize(ids))


def test_client_grpc(exported, tmp_path):

  class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):

    def Predict(self, request, context):
      assert request.model_spec.name == "dis"
      inputs = {k: tf.constant(tf.make_ndarray(v))
                for k, v in request.inputs.items()}
      out = _run_signature(exported["loaded"],
                           request.model_spec.signature_name, inputs)
      response = predict_pb2.PredictResponse()
      for key, value in out.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
      return response

  server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      Servicer(), server)
  port = server.add_insecure_port("127.0.0.1:0")
  server.start()
  try:
    target = f"127.0.0.1:{port}"
    out = client_lib.grpc_predict(target, "dis", exported["images"])
    _assert_matches(out, exported["expected"]["serving_default"])
    out = client_lib.grpc_predict(target, "dis", exported["images"],
                                  steps=T_TEST)
    _assert_matches(out, exported["expected"]["serving_default"])
    summary = client_lib.summarize(out)
    assert len(summary) == 4
    assert all(name != "background" for name, _ in summary[0]["tags"])
  finally:
    server.stop(None)


# ----------------------------------------------------------- request bounds
def test_bounds_are_export_flags_recorded_in_metadata(exported, cli_export):
  meta = cli_export["loaded"].signatures["metadata"]()
  assert {k: int(meta[k].numpy()) for k in CLI_BOUNDS} == CLI_BOUNDS
  # The defaults, stated in dis_tf.config.ServingConfig.
  meta = exported["loaded"].signatures["metadata"]()
  defaults = config_lib.ServingConfig()
  assert {k: int(meta[k].numpy()) for k in serving_module.BOUNDS} == {
      k: getattr(defaults, k) for k in serving_module.BOUNDS}
  assert (defaults.max_batch_size, defaults.max_image_pixels,
          defaults.max_batch_pixels, defaults.max_steps,
          defaults.max_batch_steps) == (32, 40_000_000, 80_000_000, 1000, 8000)


def _png_of(h, w):
  return tf.io.encode_png(np.full((h, w, 3), 9, np.uint8)).numpy()


@pytest.mark.parametrize("signature,inputs,match", [
    ("serving_default", lambda: {"image_bytes": [_png_of(1, 1)] * 3},
     r"image_bytes has\] \[3\] \[images; the limit\] "
     r"\[--serving.max_batch_size\] \[of this export is\] \[2\]"),
    ("serving_default", lambda: {"image_bytes": [_png_of(80, 80)]},
     r"\[80\] \[x\] \[80\] \[pixels.*limit is\] \[5000\] "
     r"\[pixels \(--serving.max_image_pixels\)"),
    ("serving_default", lambda: {"image_bytes": [_png_of(50, 90),
                                                 _png_of(1, 1)]},
     r"image_bytes asks for\] \[2\] \[x\] \[50\] \[x\] \[90\] \[=\] "
     r"\[9000\].*\[--serving.max_batch_pixels\] \[of this export is\] "
     r"\[8000\]"),
    ("serving_steps", lambda: {"image_bytes": [_png_of(4, 4)] * 2,
                               "steps": tf.constant([30, 1], tf.int32)},
     r"batch size x max\(steps\) =\] \[2\] \[x\] \[30\] \[=\] \[60\].*"
     r"\[--serving.max_batch_steps\] \[of this export is\] \[50\]"),
    ("serving_steps", lambda: {"image_bytes": [_png_of(4, 4)],
                               "steps": tf.constant([41], tf.int32)},
     r"steps must be in \[0,\] \[40\] \[\] \(--serving.max_steps\)"),
    ("predict_images", lambda: {"images": tf.zeros([3, 2, 2, 3], tf.uint8)},
     r"images has\] \[3\] \[images; the limit\] "
     r"\[--serving.max_batch_size\]"),
    ("predict_images", lambda: {"images": tf.zeros([1, 80, 80, 3], tf.uint8)},
     r"images is\] \[80\] \[x\] \[80\] .*\[--serving.max_image_pixels\] "
     r"\[of this export is\] \[5000\]"),
    ("predict_images_float",
     lambda: {"images": tf.zeros([2, 50, 90, 3], tf.float32)},
     r"images asks for\] \[2\] \[x\] \[50\] \[x\] \[90\].*"
     r"\[--serving.max_batch_pixels\]"),
])
def test_requests_over_a_bound_are_invalid_argument(cli_export, signature,
                                                    inputs, match):
  fn = cli_export["loaded"].signatures[signature]
  args = {k: tf.constant(v) if isinstance(v, list) else v
          for k, v in inputs().items()}
  with pytest.raises(tf.errors.InvalidArgumentError, match=match):
    fn(**args)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, -0.5, 255.5])
def test_float_images_must_be_finite_and_in_0_255(exported, value):
  fn = exported["loaded"].signatures["predict_images_float"]
  images = exported["tensor"].astype(np.float32)
  images[1, 7, 9, 2] = value
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"Input images must hold finite values in "
                     r"\[0, 255\]"):
    fn(images=tf.constant(images))


def test_float_images_at_the_range_ends_are_served(exported):
  images = exported["tensor"].astype(np.float32)
  images[0] = 0.0
  images[1] = 255.0
  out = exported["loaded"].signatures["predict_images_float"](
      images=tf.constant(images))
  assert out["class_ids"].shape == (2, 48, 56)


def test_default_batch_size_bound_on_image_tensors(exported):
  fn = exported["loaded"].signatures["predict_images"]
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"images has\] \[33\] \[images; the limit\] "
                     r"\[--serving.max_batch_size\] \[of this export is\] "
                     r"\[32\]"):
    fn(images=tf.zeros([33, 1, 1, 3], tf.uint8))


@pytest.mark.parametrize("bound,value", [
    ("max_steps", 2), ("max_batch_steps", 2), ("max_image_pixels", 100),
    ("max_batch_pixels", 100)])
def test_bounds_that_refuse_the_warmup_fail_the_export(exported, tmp_path,
                                                       bound, value):
  bounds = config_lib.ServingConfig(**{bound: value})
  with pytest.raises(ValueError, match=rf"--serving.{bound}={value} refuses "
                     "this export's own warmup"):
    export_lib.export_saved_model(exported["model"], str(tmp_path / "d"),
                                  t_test=T_TEST, input_size=SIZE,
                                  bounds=bounds)
  assert os.listdir(tmp_path / "d") == []
  with pytest.raises(ValueError, match="--serving.max_batch_size must be"):
    export_lib.export_saved_model(
        exported["model"], str(tmp_path / "d"), t_test=T_TEST,
        input_size=SIZE, bounds=config_lib.ServingConfig(max_batch_size=0))
