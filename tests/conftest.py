"""Test session setup: quiet TensorFlow, two logical CPUs, a `slow` marker."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

# Two logical CPU devices so that tf.distribute tests run a real 2-replica
# MirroredStrategy on one physical CPU. Must happen before TF initialises.
_cpus = tf.config.list_physical_devices("CPU")
try:
  tf.config.set_logical_device_configuration(
      _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:
  pass  # Already initialised by an earlier import; tests needing 2 skip.


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: a test that takes > ~20 s")
