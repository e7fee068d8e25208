"""Ops per latent step, counted from the traced graph (deterministic).

  python bench/latent_ops.py [--time [--baseline=REV] [--repeats=15]
                              [--steps=30] [--jit]]

Traces `dis_tf.modeling.latent.latent_inference` (method="gram"), of this tree
and of the git revision --baseline (before the op-count work), for
  - the tiny (synthetic) preset's stage-2 call: its 4 weak images, 12x12
    features, D = 64, C = 21, training mode (tags);
  - a ResNet101-size head: batch 1, 45x45 features, D = 2048, C = 21, test
    mode (no tags; the serving call) and training mode;
and counts the ops inside the `tf.while_loop` body function (nested
function bodies, e.g. a jit-compiled step, counted through), and the nodes
of the loop frame after Grappler (what the runtime executes: dead gradient
ops pruned, control flow lowered, one Merge / Switch / NextIteration per
loop variable and iteration). Random weights: the graph does not depend on
them. tests/test_gram.py pins the counts with `latent_step_ops`. Writes
bench/results/latent_ops.md.

With --time, the latent step of this tree and of the git revision
--baseline (its dis_tf/inference.py and dis_tf/modeling/gram.py, loaded
side by side in this process) are timed on the same shapes: each
configuration is a traced `latent_inference` run with t = 0 and t = --steps,
all runs interleaved round by round; a step costs (median at t - median at
0) / t, and also (fastest at t - fastest at 0) / t, and the speed-up is
also given as the median of the per-round ratios. --jit adds this tree with
the step body (the while-loop body function) compiled by XLA
(`tf.function(jit_compile=True)`), the loop itself left to TensorFlow.
"""

import argparse
import collections
import subprocess
import sys
import types

import common  # Puts the checkout on sys.path.

import keras
import numpy as np
import tensorflow as tf

from dis_tf.modeling import latent as latent_lib
from dis_tf.modeling.subnets import Subnet1, Subnet2, Subnet3

# Bookkeeping ops that do no work (free in the executor).
TRIVIAL = frozenset({"Identity", "IdentityN", "NoOp", "Const", "Placeholder",
                     "_Arg", "_Retval", "StopGradient"})

# Control-flow nodes of a lowered while loop: Enter / Exit once per loop
# variable and loop, Merge / Switch / NextIteration once per loop variable
# and iteration.
PLUMBING = ("Enter", "Merge", "Switch", "NextIteration", "Exit", "LoopCond")

# (name, batch, h, w, depth, with tags)
SHAPES = (
    # Stage 2 of the synthetic preset runs the loop on its 4 weak images.
    ("tiny preset stage 2 (4x12x12, D=64, tags)", 4, 12, 12, 64, True),
    ("ResNet101 head test mode (1x45x45, D=2048)", 1, 45, 45, 2048, False),
    ("ResNet101 head training mode (1x45x45, D=2048, tags)", 1, 45, 45, 2048,
     True),
)


def heads(depth, num_classes=21, seed=0):
  """Subnet-1/2/3 with random weights (what the latent loop reads)."""
  keras.utils.set_random_seed(seed)
  h = type("Heads", (), {})()
  h.subnet1, h.subnet2, h.subnet3 = (
      Subnet1(num_classes), Subnet2(num_classes), Subnet3(num_classes))
  h.subnet1.build((None, None, None, depth))
  h.subnet2.build((None, None, None, num_classes))
  h.subnet3.build((None, None, None, depth))
  return h


def inputs(batch, height, width, depth, with_tags, num_classes=21, seed=0):
  rng = np.random.RandomState(seed)
  u1 = tf.constant(np.maximum(rng.randn(batch, height, width, depth), 0)
                   .astype(np.float32))
  v1 = tf.reduce_mean(u1, [1, 2])
  target = tf.constant(rng.randn(batch, height, width, 3).astype(np.float32))
  tags = None
  if with_tags:
    t = (rng.rand(batch, num_classes) > 0.8).astype(np.float32)
    t[:, 0] = 1
    tags = tf.constant(t)
  return u1, v1, target, tags


def _function_lookup(graph):
  """name -> function (graph or definition) of `graph` and its outers."""
  library = {}
  outer = graph
  while outer is not None:
    for name, fn in getattr(outer, "_functions", {}).items():
      library[name] = fn
    outer = getattr(outer, "outer_graph", None)

  def lookup(name):
    fn = library.get(name)
    if fn is None:
      fn = graph._get_function(name)  # pylint: disable=protected-access
    return fn

  return lookup


def _body_ops(graph, fn_name, lookup):
  """Op types of function `fn_name`, nested function calls expanded."""
  fn = lookup(fn_name)
  fn_graph = getattr(fn, "graph", None)
  if fn_graph is None:          # An AtomicFunction / definition.
    fdef = fn.cached_definition if hasattr(fn, "cached_definition") else (
        fn.definition)
    nodes = [(n.op, n.attr) for n in fdef.node_def]
  else:
    nodes = [(op.type, op.node_def.attr) for op in fn_graph.get_operations()]
  counts = collections.Counter()
  for op_type, attr in nodes:
    nested = []
    for key in ("f", "then_branch", "else_branch", "body", "cond"):
      if key in attr and attr[key].HasField("func"):
        nested.append(attr[key].func.name)
    if nested and op_type in ("PartitionedCall", "StatefulPartitionedCall",
                              "If", "StatelessIf", "While",
                              "StatelessWhile"):
      counts[op_type] += 1
      for name in nested:
        counts.update(_body_ops(graph, name, lookup))
    else:
      counts[op_type] += 1
  return counts


def _loop_body(fn, *args):
  """(graph, name of the while-loop body) of the traced `fn(*args)`."""
  concrete = tf.function(fn).get_concrete_function(*args)
  graph = concrete.graph
  lookup = _function_lookup(graph)
  bodies = []

  def scan(g):
    for op in g.get_operations():
      if op.type in ("While", "StatelessWhile"):
        bodies.append(op.get_attr("body").name)
      for key in ("then_branch", "else_branch", "f"):
        try:
          sub = op.get_attr(key).name
        except (ValueError, AttributeError):
          continue
        fg = lookup(sub)
        if getattr(fg, "graph", None) is not None:
          scan(fg.graph)

  scan(graph)
  if len(bodies) != 1:
    raise ValueError(f"Expected one latent while loop, found {len(bodies)}.")
  return graph, bodies[0], lookup


def count_step_ops(fn, *args):
  """Op types inside the latent while-loop body of the traced `fn(*args)`.

  `fn` is a Python callable calling `latent_inference` once; it is traced
  with `tf.function`. Returns a `collections.Counter` of op types, nested
  function bodies expanded.
  """
  graph, body, lookup = _loop_body(fn, *args)
  return _body_ops(graph, body, lookup)


def step_flops(fn, *args):
  """Float operations of one latent step (the loop body) of `fn(*args)`.

  Counted like `common.graph_flops` on the traced body, without the
  filter / bias gradients, which the tape traces but Grappler prunes (no
  `Conv2DBackpropFilter` runs; see `grappler_step_ops`).
  """
  _, body, lookup = _loop_body(fn, *args)
  return common.graph_flops(lookup(body).graph,
                            skip=("Conv2DBackpropFilter", "BiasAddGrad"))


def grappler_step_ops(fn, *args):
  """Op types the runtime runs per latent step, after Grappler.

  The traced graph is optimised as the runtime does it (default Grappler
  passes: dead-code pruning, constant folding, control-flow lowering), and
  the nodes of the lowered while-loop frame (names under the While op's)
  are counted, loop plumbing (Enter / Merge / Switch / NextIteration / Exit,
  one set per loop variable) included.
  """
  # pylint: disable=g-import-not-at-top
  from tensorflow.core.protobuf import config_pb2
  from tensorflow.python.grappler import tf_optimizer
  concrete = tf.function(fn).get_concrete_function(*args)
  graph = concrete.graph
  whiles = [op.name for op in graph.get_operations()
            if op.type in ("While", "StatelessWhile")]
  if len(whiles) != 1:
    raise ValueError(f"Expected one top-level while loop, found {whiles}.")
  meta = tf.compat.v1.train.export_meta_graph(
      graph_def=graph.as_graph_def(), graph=graph)
  meta.collection_def["train_op"].node_list.value.extend(
      [t.op.name for t in concrete.outputs])
  optimized = tf_optimizer.OptimizeGraph(config_pb2.ConfigProto(), meta)
  prefix = whiles[0] + "/"
  return collections.Counter(
      n.op for n in optimized.node if n.name.startswith(prefix))


def summarize(counts):
  """(all ops, ops that do work)."""
  total = sum(counts.values())
  work = sum(v for k, v in counts.items() if k not in TRIVIAL)
  return total, work


def latent_step_ops(batch, height, width, depth, with_tags, grappler=False,
                    module=latent_lib, **kwargs):
  """Op types per latent step (`count_step_ops`, or after Grappler).

  `module` is the `dis_tf.modeling.latent` whose `latent_inference` is traced
  (e.g. `baseline_inference(revision)`).
  """
  h = heads(depth)
  u1, v1, target, tags = inputs(batch, height, width, depth, with_tags)

  def run(steps):
    return module.latent_inference(h, u1, v1, target, tags=tags,
                                   steps=steps, **kwargs)["u3"]

  count = grappler_step_ops if grappler else count_step_ops
  return count(run, tf.constant(1))


def module_at(revision, path, name):
  """The module `path` (repository-relative) as of git `revision`."""
  source = subprocess.run(["git", "show", f"{revision}:{path}"], check=True,
                          capture_output=True, text=True,
                          cwd=common.ROOT).stdout
  module = types.ModuleType(name)
  module.__file__ = f"{revision}:{path}"
  exec(compile(source, module.__file__, "exec"), module.__dict__)  # pylint: disable=exec-used
  return module


def baseline_inference(revision):
  """`dis_tf.modeling.latent` and its Gram operator as of `revision`."""
  old_gram = module_at(revision, "dis_tf/modeling/gram.py", "baseline_gram")
  old = module_at(revision, "dis_tf/inference.py", "baseline_inference")
  old.gram_lib = old_gram
  return old


class _JitStepTF:
  """`tf` for a copy of dis_tf.modeling.latent whose latent-loop body (the step)
  is `tf.function(jit_compile=True)`: XLA on the step alone."""

  def __getattr__(self, name):
    return getattr(tf, name)

  @staticmethod
  def while_loop(cond, body, loop_vars, **kwargs):
    return tf.while_loop(cond, tf.function(body, jit_compile=True),
                         loop_vars, **kwargs)


def jit_step_inference():
  """dis_tf.modeling.latent of this tree with the latent step XLA-compiled."""
  module = types.ModuleType("jit_step_inference")
  module.__file__ = latent_lib.__file__
  with open(latent_lib.__file__) as f:
    exec(compile(f.read(), module.__file__, "exec"), module.__dict__)  # pylint: disable=exec-used
  module.tf = _JitStepTF()
  return module


def time_steps(implementations, repeats, steps=30):
  """Per latent step, interleaved.

  Returns:
    {(shape name, implementation): (ms from the medians, ms from the
    fastest runs)} and {(shape name, implementation): median over rounds of
    the per-round step-time ratio of the first implementation to this one}.
    On a loaded machine the fastest runs are the least disturbed ones.
  """
  fns = {}
  for name, b, hh, ww, d, with_tags in SHAPES:
    h = heads(d)
    u1, v1, target, tags = inputs(b, hh, ww, d, with_tags)
    for label, module in implementations.items():
      run = tf.function(
          lambda s, m=module, h=h, u1=u1, v1=v1, target=target, tags=tags:
          m.latent_inference(h, u1, v1, target, tags=tags, steps=s)["u3"])
      for t in (0, steps):
        fns[(name, label, t)] = (
            lambda run=run, t=t: run(tf.constant(t)).numpy())
  stats = common.interleaved_stats(fns, repeats=repeats, warmup=2)
  per_step, ratios = {}, {}
  labels = list(implementations)
  for name, *_ in SHAPES:
    rounds = {}
    for label in labels:
      median = lambda t: stats[(name, label, t)][0]
      fastest = lambda t: stats[(name, label, t)][1]
      per_step[(name, label)] = (
          1000 * (median(steps) - median(0)) / steps,
          1000 * (fastest(steps) - fastest(0)) / steps)
      rounds[label] = [(a - b) / steps for a, b in zip(
          stats[(name, label, steps)][2], stats[(name, label, 0)][2])]
    for label in labels[1:]:
      ratios[(name, label)] = float(np.median(
          [a / b for a, b in zip(rounds[labels[0]], rounds[label])]))
  return per_step, ratios


def op_rows(module, label):
  """Table rows of op counts per step for `module`'s `latent_inference`."""
  rows = []
  for name, b, hh, ww, d, with_tags in SHAPES:
    counts = latent_step_ops(b, hh, ww, d, with_tags, module=module)
    total, work = summarize(counts)
    run = latent_step_ops(b, hh, ww, d, with_tags, grappler=True,
                          module=module)
    frame = sum(run.values())
    compute = frame - sum(run[k] for k in PLUMBING) - run["Const"]
    rows.append([name, label, total, work, frame, compute, run["Merge"]])
    print(f"{name} [{label}]: {total} ops in the loop body, {work} doing "
          f"work\n  {_format(counts)}\n  after Grappler: {frame} nodes in "
          f"the loop frame, {compute} neither plumbing nor Const, "
          f"{run['Merge']} loop variables\n  {_format(run)}")
  return rows


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("--time", action="store_true")
  parser.add_argument("--baseline", default="23947fd")
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--jit", action="store_true",
                      help="also time the step body under XLA")
  args = parser.parse_args(argv)
  baseline = baseline_inference(args.baseline)
  rows = (op_rows(baseline, f"baseline {args.baseline}")
          + op_rows(latent_lib, "this tree"))
  rows.sort(key=lambda r: [s[0] for s in SHAPES].index(r[0]))
  body = ["Ops of one latent step (method gram), counted from the traced "
          "graph: the while-loop body as traced, and the nodes of the loop "
          "frame after Grappler (what the runtime executes per step).", "",
          common.table(
              ["shape", "implementation", "ops in the loop body",
               "non-trivial ops", "after Grappler: nodes in the loop frame",
               "after Grappler: neither Const nor loop plumbing",
               "loop variables"], rows)]
  if args.time:
    impls = {f"baseline {args.baseline}": baseline, "this tree": latent_lib}
    if args.jit:
      impls["this tree, XLA step"] = jit_step_inference()
    per_step, ratios = time_steps(impls, args.repeats, args.steps)
    labels = list(impls)
    rows = []
    for name, *_ in SHAPES:
      before = per_step[(name, labels[0])]
      for label in labels[1:]:
        after = per_step[(name, label)]
        rows.append([name, label, before[0], after[0], before[0] / after[0],
                     ratios[(name, label)], before[1], after[1],
                     before[1] / after[1]])
    body += ["", f"Time per step: t = 0 and t = {args.steps}, {args.repeats} "
             "interleaved rounds; ms per step from the medians, and from the "
             "fastest runs. \"XLA step\": the while-loop body compiled with "
             "`tf.function(jit_compile=True)`, the loop left to TensorFlow "
             "(not used: the exported graph stays core ops, and it is not "
             "faster here).", "",
             common.table(
                 ["shape", "implementation",
                  f"ms/step {labels[0]} (median)", "ms/step (median)",
                  "speed-up (medians)",
                  "speed-up (median of per-round ratios)",
                  f"ms/step {labels[0]} (fastest)", "ms/step (fastest)",
                  "speed-up (fastest)"], rows)]
  flag = " --time" + (" --jit" if args.jit else "") if args.time else ""
  common.emit("latent_ops", "Ops per latent step (bench/latent_ops.py)",
              f"python bench/latent_ops.py{flag}", "\n".join(body))


def _format(counts):
  return ", ".join(f"{k} {v}" for k, v in sorted(
      counts.items(), key=lambda kv: (-kv[1], kv[0])))


if __name__ == "__main__":
  main(sys.argv[1:])
