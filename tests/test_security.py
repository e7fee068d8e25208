"""Security: no code execution from user files, no path escapes, and a
SavedModel that reads nothing outside its own directory while serving.

* Source scan (AST) of dis_tf/, tools/, export/: no pickle / marshal /
  shelve / dill, no eval / exec / builtin compile, no np.load with
  allow_pickle and no `from numpy import load`, no yaml.load, every keras
  load_model call passes safe_mode=True and no call passes another
  safe_mode, unsafe deserialisation is never enabled, and no shell (os.system,
  os.popen, shell= on any call). Planted snippets check that the scan
  flags each.
* A `.keras` file carrying a Lambda layer (serialised Python bytecode) is
  refused by `model_dir.load` and its code never runs.
* Paths in annotations.jsonl and image-set lists: `../`, absolute paths and
  symlinks out of the tree are refused with an error naming file and line.
* The exported SavedModel: its serving functions hold no file-reading op and
  it has no assets; loaded (TF Serving's v1 loader) from a copy that is
  then deleted, it still serves, and under strace the process opens no file
  while serving.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from tensorflow.core.protobuf import saved_model_pb2

from dis_tf import config as config_lib
from dis_tf import model_dir as model_dir_lib
from dis_tf.data import safe_paths
from dis_tf.data import synthetic
from dis_tf.data import voc
from dis_tf.data import web_tags
from dis_tf.serving import export_lib
from dis_tf.serving import module as serving_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIRS = ("dis_tf", "tools", "export")


# ------------------------------------------------------------ source scan
def _sources():
  for top in SOURCE_DIRS:
    for dirpath, _, files in os.walk(os.path.join(REPO, top)):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(dirpath, name)
          with open(path, encoding="utf-8") as f:
            yield os.path.relpath(path, REPO), ast.parse(f.read(), path)


def _call_name(node):
  func = node.func
  if isinstance(func, ast.Name):
    return func.id
  if isinstance(func, ast.Attribute):
    parts = [func.attr]
    value = func.value
    while isinstance(value, ast.Attribute):
      parts.append(value.attr)
      value = value.value
    if isinstance(value, ast.Name):
      parts.append(value.id)
    return ".".join(reversed(parts))
  return ""


def _keyword(node, name):
  for kw in node.keywords:
    if kw.arg == name:
      return kw.value
  return None


_BANNED_MODULES = {"pickle", "cPickle", "_pickle", "dill", "marshal",
                   "shelve", "cloudpickle", "joblib"}


def _is_constant(node, value):
  return isinstance(node, ast.Constant) and node.value is value


def _scan(tree, path):
  """The problems the source scan finds in one parsed file."""
  problems = []
  for node in ast.walk(tree):
    where = f"{path}:{getattr(node, 'lineno', '?')}"
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import)
               else [node.module or ""])
      for name in names:
        if name.split(".")[0] in _BANNED_MODULES:
          problems.append(f"{where}: imports {name}")
      # `from numpy import load` hides np.load from the allow_pickle check.
      if (isinstance(node, ast.ImportFrom)
          and (node.module or "").split(".")[0] == "numpy"
          and any(a.name in ("load", "*") for a in node.names)):
        problems.append(f"{where}: from {node.module} import load")
    if not isinstance(node, ast.Call):
      continue
    name = _call_name(node)
    if name in ("eval", "exec", "compile", "__import__", "execfile"):
      problems.append(f"{where}: calls {name}()")
    if name.endswith("enable_unsafe_deserialization"):
      problems.append(f"{where}: enables unsafe deserialisation")
    if name.split(".")[-1] == "load" and name.startswith(("np.", "numpy.")):
      allow = _keyword(node, "allow_pickle")
      if allow is not None and not _is_constant(allow, False):
        problems.append(f"{where}: np.load(allow_pickle=...)")
    if name in ("yaml.load", "yaml.unsafe_load", "torch.load"):
      problems.append(f"{where}: {name}")
    if name.split(".")[-1] == "load_model":
      safe = _keyword(node, "safe_mode")
      if not _is_constant(safe, True):
        problems.append(f"{where}: {name} without safe_mode=True")
    # Any call: safe_mode must be True when given (deserialize_keras_object,
    # load_model under another name, ...).
    safe = _keyword(node, "safe_mode")
    if safe is not None and not _is_constant(safe, True):
      problems.append(f"{where}: {name}(safe_mode=...) not True")
    # A shell runs strings as commands: os.system / os.popen, and any call
    # (subprocess.run, an imported Popen, ...) with a shell= that is not
    # False.
    if name in ("os.system", "os.popen", "system", "popen"):
      problems.append(f"{where}: {name}() runs a shell")
    shell = _keyword(node, "shell")
    if shell is not None and not _is_constant(shell, False):
      problems.append(f"{where}: {name}(shell=...)")
  return problems


def test_no_pickle_eval_or_unsafe_loading_in_the_code():
  problems = []
  count = 0
  for path, tree in _sources():
    count += 1
    problems += _scan(tree, path)
  assert count > 20
  assert not problems, "\n".join(problems)


@pytest.mark.parametrize("snippet,match", [
    ("from numpy import load\nx = load('a.npy', allow_pickle=True)",
     "from numpy import load"),
    ("from numpy.lib.npyio import load", "from numpy.lib.npyio import load"),
    ("import os\nos.system('ls ' + name)", r"os.system\(\) runs a shell"),
    ("import os\nos.popen('ls')", r"os.popen\(\) runs a shell"),
    ("import subprocess\nsubprocess.run('ls', shell=True)",
     r"subprocess.run\(shell=...\)"),
    ("from subprocess import Popen\nPopen(cmd, shell=True)",
     r"Popen\(shell=...\)"),
    ("import subprocess as sp\nsp.check_output(cmd, shell=flag)",
     r"sp.check_output\(shell=...\)"),
    ("import keras\nkeras.saving.load_model('m.keras', safe_mode=False)",
     "without safe_mode=True"),
    ("import keras\nkeras.saving.deserialize_keras_object(c, "
     "safe_mode=False)", r"deserialize_keras_object\(safe_mode=...\)"),
    ("import numpy as np\nnp.load('a.npy', allow_pickle=True)",
     "allow_pickle"),
])
def test_the_scan_flags_planted_code(snippet, match):
  problems = _scan(ast.parse(snippet), "planted.py")
  assert any(re.search(match, p) for p in problems), problems


def test_the_scan_passes_safe_code():
  safe = ("import subprocess\nimport numpy as np\nimport keras\n"
          "subprocess.run(['ls'], shell=False, check=True)\n"
          "np.load('a.npz', allow_pickle=False)\n"
          "keras.saving.load_model('m.keras', safe_mode=True)\n")
  assert _scan(ast.parse(safe), "safe.py") == []


# --------------------------------------------------------- .keras loading
def test_keras_file_with_lambda_is_refused_and_never_runs(tmp_path):
  marker = tmp_path / "pwned"
  run_dir = tmp_path / "run"
  config = config_lib.synthetic()
  config.save(str(run_dir))

  # Serialised as Python bytecode; it would run if the file were trusted.
  payload = lambda x, p=str(marker): (open(p, "w").close(), x)[1]
  inputs = keras.Input((4,))
  model = keras.Model(inputs, keras.layers.Lambda(payload)(inputs))
  marker.unlink()  # Building the model above ran it once here.
  model.save(str(run_dir / model_dir_lib.MODEL_FILENAME))
  with pytest.raises(ValueError, match="safe_mode"):
    model_dir_lib.load(str(run_dir))
  assert not marker.exists()


def test_real_model_loads_in_safe_mode(tmp_path, tiny_run):
  _, model = tiny_run(tmp_path)
  _, loaded = model_dir_lib.load(str(tmp_path))  # safe_mode=True inside
  for a, b in zip(model.weights, loaded.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


# ------------------------------------------------------------------ paths
@pytest.fixture()
def voc_tree(tmp_path):
  out = str(tmp_path / "src")
  info = synthetic.generate_benchmark(out, num_train=3, num_val=2,
                                      num_tags_only=0, num_weak=3,
                                      image_size=32)
  outside = tmp_path / "outside.jpg"
  shutil.copy(os.path.join(out, "VOCdevkit/VOC2012/JPEGImages",
                           os.listdir(os.path.join(
                               out, "VOCdevkit/VOC2012/JPEGImages"))[0]),
              outside)
  return {"out": out, "root": os.path.join(out, "VOCdevkit", "VOC2012"),
          "weak_dir": info["weak_dir"], "outside": str(outside),
          "tfds": str(tmp_path / "tfds")}


@pytest.mark.parametrize("entry,match", [
    ("../../../outside", r"train.txt:1: image-set entry '../../../outside'"),
    ("/etc/passwd", r"train.txt:1: image-set entry '/etc/passwd'"),
    ("sub/../x", r"train.txt:1: image-set entry"),
    ("/JPEGImages/../../../outside.jpg /SegmentationClassAug/x.png",
     r"train.txt:1: path .* contains '\.\.'"),
])
def test_image_set_list_cannot_escape(voc_tree, entry, match):
  lst = os.path.join(voc_tree["root"], "ImageSets", "Segmentation",
                     "train.txt")
  names = open(lst).read().split()
  with open(lst, "w") as f:
    f.write("\n".join([entry] + names) + "\n")
  with pytest.raises(safe_paths.UnsafePathError, match=match):
    voc.voc_builder(voc_tree["out"], voc_tree["tfds"]).download_and_prepare()


def test_symlink_out_of_the_voc_tree_is_refused(voc_tree):
  name = open(os.path.join(voc_tree["root"], "ImageSets", "Segmentation",
                           "train.txt")).read().split()[0]
  image = os.path.join(voc_tree["root"], "JPEGImages", name + ".jpg")
  os.remove(image)
  os.symlink(voc_tree["outside"], image)
  # Refused even with skip_bad_files: an unsafe path is not a bad image.
  with pytest.raises(safe_paths.UnsafePathError,
                     match=r"outside the dataset root .*symlink"):
    voc.voc_builder(voc_tree["out"], voc_tree["tfds"],
                    skip_bad_files=True).download_and_prepare()


def test_symlinked_folder_out_of_the_tree_is_refused(voc_tree, tmp_path):
  folder = os.path.join(voc_tree["root"], "SegmentationClass")
  moved = str(tmp_path / "elsewhere")
  shutil.move(folder, moved)
  os.symlink(moved, folder)
  with pytest.raises(safe_paths.UnsafePathError, match="outside the dataset"):
    voc.voc_builder(voc_tree["out"], voc_tree["tfds"]).download_and_prepare()


@pytest.mark.parametrize("image,match", [
    ("../outside.jpg", r"annotations.jsonl:1: path '../outside.jpg' "
     r"contains '\.\.'"),
    ("images/../../outside.jpg", "contains '..'"),
    ("/etc/hostname", r"annotations.jsonl:1: absolute path"),
    ("C:/Windows/win.ini", "absolute path"),
    ("link.jpg", r"annotations.jsonl:1: .*outside the dataset root"),
])
def test_annotation_paths_cannot_escape(voc_tree, image, match):
  weak_dir = voc_tree["weak_dir"]
  os.symlink(voc_tree["outside"], os.path.join(weak_dir, "link.jpg"))
  path = os.path.join(weak_dir, "annotations.jsonl")
  lines = open(path).read().splitlines()
  with open(path, "w") as f:
    f.write("\n".join([json.dumps({"image": image, "tags": ["dog"]})]
                      + lines) + "\n")
  with pytest.raises(safe_paths.UnsafePathError, match=match):
    web_tags.web_tags_builder(weak_dir, voc_tree["tfds"],
                              skip_bad_files=True).download_and_prepare()


# ----------------------------------------------------- exported SavedModel
_FILE_OPS = {
    "ReadFile", "WriteFile", "MatchingFiles", "MatchingFilesDataset",
    "WholeFileReader", "WholeFileReaderV2", "TFRecordReader",
    "TFRecordReaderV2", "TextLineReader", "TextLineReaderV2",
    "FixedLengthRecordReader", "FixedLengthRecordReaderV2",
    "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset",
    "FixedLengthRecordDataset", "ImmutableConst", "LoadAndRemapMatrix",
    "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
    "RestoreV2", "Restore", "RestoreSlice", "SaveV2", "Save", "SaveSlices",
    "MergeV2Checkpoints", "PyFunc", "PyFuncStateless", "EagerPyFunc",
    "LoadDataset", "SaveDataset", "DatasetFromGraph", "ShardedFilename",
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run):
  root = tmp_path_factory.mktemp("security_export")
  run_dir = str(root / "run")
  tiny_run(run_dir)
  path = export_lib.export_from_model_dir(run_dir, str(root / "models"),
                                          overrides={"latent.t_test": 1})
  return {"root": root, "path": path}


def _reachable_ops(meta_graph, function_names):
  library = {f.signature.name: f for f in meta_graph.graph_def.library.function}
  ops, todo, seen = set(), list(function_names), set()
  while todo:
    name = todo.pop()
    if name in seen or name not in library:
      continue
    seen.add(name)
    for node in library[name].node_def:
      ops.add(node.op)
      if node.op in library:
        todo.append(node.op)
      for value in node.attr.values():
        if value.HasField("func"):
          todo.append(value.func.name)
        for f in value.list.func:
          todo.append(f.name)
  return ops


def test_serving_graph_has_no_file_ops_and_no_assets(exported):
  proto = saved_model_pb2.SavedModel()
  with open(os.path.join(exported["path"], "saved_model.pb"), "rb") as f:
    proto.ParseFromString(f.read())
  (meta_graph,) = proto.meta_graphs
  assert not meta_graph.asset_file_def
  assert not os.path.exists(os.path.join(exported["path"], "assets")) or (
      not os.listdir(os.path.join(exported["path"], "assets")))
  nodes = {n.name: n for n in meta_graph.graph_def.node}
  assert set(serving_module.SIGNATURES) <= set(meta_graph.signature_def)
  for name in serving_module.SIGNATURES:
    signature = meta_graph.signature_def[name]
    # Outputs come from StatefulPartitionedCall nodes calling the function.
    functions = []
    for output in signature.outputs.values():
      node = nodes[output.name.split(":")[0]]
      functions += [v.func.name for v in node.attr.values()
                    if v.HasField("func")]
    assert functions or name == "metadata", name
    ops = _reachable_ops(meta_graph, functions)
    assert "Conv2D" in ops or name == "metadata"
    bad = sorted(ops & _FILE_OPS)
    assert not bad, f"{name} reads or writes files: {bad}"


_STRACED = textwrap.dedent(r'''
  import os, shutil, sys
  import numpy as np
  import tensorflow as tf
  src, copy = sys.argv[1:3]
  shutil.copytree(src, copy)
  png = tf.io.encode_png(np.full((20, 30, 3), 90, np.uint8)).numpy()
  with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta_graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"], copy)
    sig = meta_graph.signature_def["serving_default"]
    fetches = {k: v.name for k, v in sig.outputs.items()}
    feed = {sig.inputs["image_bytes"].name: np.array([png], dtype=object)}
    shutil.rmtree(copy)  # Nothing of the model is left on disk.
    sess.run(fetches, feed)  # warm up (first run builds kernels)
    try:
      os.stat("/__serving_begins__")
    except OSError:
      pass
    for _ in range(3):
      out = sess.run(fetches, feed)
    try:
      os.stat("/__serving_ends__")
    except OSError:
      pass
  assert out["class_ids"].shape == (1, 20, 30), out["class_ids"].shape
  print("SERVED")
''')


def test_serving_opens_no_file(exported, tmp_path):
  script = tmp_path / "serve.py"
  script.write_text(_STRACED)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("PYTHONPATH", None)
  trace = str(tmp_path / "trace")
  cmd = [sys.executable, str(script), exported["path"],
         str(tmp_path / "copy")]
  strace = shutil.which("strace")
  if strace:
    probe = subprocess.run([strace, "-o", os.devnull, "true"],
                           capture_output=True)
    if probe.returncode != 0:
      strace = None
  if strace:
    cmd = [strace, "-f", "-qq", "-e", "trace=%file", "-o", trace] + cmd
  proc = subprocess.run(cmd, env=env, capture_output=True, timeout=300,
                        cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr.decode()[-3000:]
  assert b"SERVED" in proc.stdout
  if not strace:
    pytest.skip("strace unavailable: only the deleted-copy check ran")
  lines = open(trace).read().splitlines()
  begin = next(i for i, line in enumerate(lines)
               if "__serving_begins__" in line)
  end = next(i for i, line in enumerate(lines) if "__serving_ends__" in line)
  opened = []
  for line in lines[begin + 1:end]:
    match = re.search(r'(open|openat|openat2|stat|newfstatat|access|'
                      r'readlink|statx)\((?:AT_FDCWD, )?"([^"]+)"', line)
    if match:
      opened.append(match.group(2))
  # Kernel pseudo-files (CPU counts, thread names) are not data files.
  files = [p for p in opened
           if not p.startswith(("/proc/", "/sys/", "/dev/"))]
  assert not files, files
