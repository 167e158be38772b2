"""dreamer_tf: a TensorFlow 2 / Keras reproduction of DreamerV1, DreamerV2 and DreamerV3."""

__version__ = '0.1.0'
