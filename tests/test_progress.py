"""callbacks.PhaseProgress: one progress line per phase quarter in a log."""

import io

from dis_tf import callbacks


def _run(total, start=0, steps=None):
  stream = io.StringIO()
  progress = callbacks.PhaseProgress("a", total, start, stream=stream)
  progress.on_train_begin()
  for i in range(steps if steps is not None else total - start):
    progress.on_train_batch_end(i, {"loss": 1.0 / (i + 1)})
  return stream.getvalue().splitlines()


def test_a_log_gets_a_line_per_quarter():
  lines = _run(8)
  assert [line.split(",")[0] for line in lines] == [
      "  phase a: 2/8 steps", "  phase a: 4/8 steps", "  phase a: 6/8 steps",
      "  phase a: 8/8 steps"]
  assert "loss 0.125" in lines[-1]


def test_a_resumed_phase_counts_from_where_it_was():
  lines = _run(8, start=4)
  assert [line.split(",")[0] for line in lines] == [
      "  phase a: 6/8 steps", "  phase a: 8/8 steps"]


def test_a_terminal_gets_one_line_redrawn():
  class Tty(io.StringIO):
    def isatty(self):
      return True
  stream = Tty()
  progress = callbacks.PhaseProgress("semi", 3, stream=stream)
  progress.on_train_begin()
  for i in range(3):
    progress.on_train_batch_end(i, {})
  text = stream.getvalue()
  assert text.count("\r") == 3 and text.count("\n") == 1
  assert text.endswith("3/3 steps, 0 s\n")
