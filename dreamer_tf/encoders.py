"""Observation encoders: obs dict -> embed [..., out_dim], the concatenated vector and image tokens."""

import math

import keras
import tensorflow as tf

from dreamer_tf import ops
from dreamer_tf.layers import MLP, Norm, activation, initializer


class Encoder(keras.layers.Layer):
    """Nature-release encoder: a symlog MLP for `vector`, conv + 2x2 max-pool stages for `image`."""

    stride, padding = 1, 'same'

    def __init__(self, obs_space, depth, mults, kernel, layers, units, norm, act, symlog, **kw):
        super().__init__(**kw)
        self.keys = [k for k in ('vector', 'image') if k in obs_space]
        self.symlog = symlog
        self.act = activation(act)
        self.out_dim = 0
        if 'vector' in obs_space:
            self.mlp = MLP(obs_space['vector'].shape[0], layers, units, norm, act, name='mlp')
            self.out_dim += self.mlp.out_dim
        if 'image' in obs_space:
            self.out_dim += self._build_convs(obs_space['image'].shape, depth, mults, kernel, norm)

    def _build_convs(self, shape, depth, mults, kernel, norm):
        """The image stages; returns the width of their flat output."""
        h, w, c = shape
        self.convs, self.conv_norms = [], []
        for i, mult in enumerate(mults):
            conv = keras.layers.Conv2D(depth * mult, kernel, self.stride, self.padding,
                                       kernel_initializer=initializer(), name=f'conv{i}')
            conv.build((None, h, w, c))
            h, w, c = self._stage_size(h, kernel), self._stage_size(w, kernel), depth * mult
            if h < 1 or w < 1:
                raise ValueError(f'image {shape} is too small for {len(mults)} stages of kernel {kernel}')
            self.convs.append(conv)
            self.conv_norms.append(Norm(c, norm, name=f'conv{i}norm'))
        return h * w * c

    def call(self, obs):
        tokens = []
        if 'vector' in self.keys:
            x = tf.cast(obs['vector'], self.compute_dtype)
            tokens.append(self.mlp(ops.symlog(x) if self.symlog else x))
        if 'image' in self.keys:
            x = tf.cast(obs['image'], self.compute_dtype) / 255.0 - 0.5
            lead = tf.shape(x)[:-3]
            x = tf.reshape(x, tf.concat([[-1], tf.shape(x)[-3:]], 0))
            for conv, norm in zip(self.convs, self.conv_norms):
                x = self.act(norm(self._stage(conv, x)))
            tokens.append(tf.reshape(x, tf.concat([lead, [math.prod(x.shape[-3:])]], 0)))
        return tf.concat(tokens, -1)

    def _stage_size(self, size, kernel):
        return size // 2

    def _stage(self, conv, x):
        return tf.nn.max_pool2d(conv(x), 2, 2, 'VALID')


class StridedEncoder(Encoder):
    """DreamerV1/V2 encoder: 'valid' convs of stride 2 (64 -> 31 -> 14 -> 6 -> 2), no pooling or symlog."""

    stride, padding = 2, 'valid'

    def __init__(self, obs_space, depth, mults, kernel, layers, units, norm, act, **kw):
        super().__init__(obs_space, depth, mults, kernel, layers, units, norm, act, symlog=False, **kw)

    def _stage_size(self, size, kernel):
        return (size - kernel) // 2 + 1

    def _stage(self, conv, x):
        return conv(x)
