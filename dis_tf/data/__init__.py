"""Datasets and input pipelines of dis_tf (see docs/DATA.md).

Submodules: `voc` (voc2012_segmentation builder), `web_tags` (web_tags
builder), `captions` (caption parser), `synthetic` (benchmark generator),
`pipeline` (tf.data pipelines), `safe_paths`. They are not imported here, so
that importing one (e.g. `synthetic`, used without TensorFlow work) stays
light.
"""
