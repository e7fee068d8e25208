"""dis_tf: Dual Image Segmentation (Luo et al., ICCV 2017) in TF 2 / Keras 3.

The library; README.md's layout table names the role of every module. The
subpackages are `dis_tf.modeling` (the network), `dis_tf.data` (datasets and
pipelines) and `dis_tf.serving` (TensorFlow Serving). Nothing is imported
here, so that importing one module stays light.
"""
