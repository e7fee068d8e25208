"""dis_tf: Dual Image Segmentation (Luo et al., ICCV 2017) in TF 2 / Keras 3.

The library; README.md's layout table names the role of every module. The
subpackages are `dis_tf.modeling` (the network), `dis_tf.data` (datasets and
pipelines) and `dis_tf.serving` (TensorFlow Serving). The one name here is
the entry point for predictions on your own images,

  segmenter = dis_tf.load_segmenter("runs/demo/model")   # or an export
  results = segmenter.segment(["cat.jpg"], t_test=10)

(`dis_tf.segmenter`). It is imported on first use, so that importing one
module of the package stays light.
"""

__all__ = ["load_segmenter"]


def __getattr__(name):
  # PEP 562: `dis_tf.load_segmenter` imports TensorFlow only when used.
  if name == "load_segmenter":
    from dis_tf import segmenter
    return segmenter.load_segmenter
  raise AttributeError(f"module 'dis_tf' has no attribute {name!r}")
