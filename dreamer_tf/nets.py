"""The recurrent cores, and every network layer by one name. Layers create their weights in `__init__`."""

import keras
import numpy as np
import tensorflow as tf

from dreamer_tf import ops
from dreamer_tf.decoders import Decoder, ShiftedImage, TransposedDecoder, UpsampleConv, upsample_taps
from dreamer_tf.encoders import Encoder, StridedEncoder
from dreamer_tf.heads import Head
from dreamer_tf.layers import MLP, BlockLinear, Linear, Norm, activation, initializer

__all__ = ['MLP', 'BlockGRU', 'BlockLinear', 'Decoder', 'Encoder', 'Head', 'KerasGRU', 'Linear', 'Norm',
           'NormGRU', 'ShiftedImage', 'StridedEncoder', 'TransposedDecoder', 'UpsampleConv', 'activation',
           'count_params', 'gru_update', 'initializer', 'named_weights', 'upsample_taps']


def gru_update(reset, cand, update, deter):
    """h' = u * tanh(r * c) + (1 - u) * h, r = sigmoid(.), u = sigmoid(. - 1): keeps h at initialisation."""
    reset = tf.sigmoid(reset)
    cand = tf.tanh(reset * cand)
    update = tf.sigmoid(update - 1.0)
    return update * cand + (1.0 - update) * deter


class BlockGRU(keras.layers.Layer):
    """DreamerV3's block-diagonal GRU, [B, deter]: a block sees its deter slice and every projected input."""

    def __init__(self, deter, hidden, in_dims, blocks, dyn_layers=1, norm='rms', act='silu', **kw):
        super().__init__(**kw)
        self.deter, self.blocks = deter, blocks
        self.act = activation(act)
        self.inputs_in = [Linear(d, hidden, name=f'dynin{i}') for i, d in enumerate(in_dims)]
        self.inputs_norm = [Norm(hidden, norm, name=f'dynin{i}norm') for i in range(len(in_dims))]
        width = deter + blocks * hidden * len(in_dims)
        self.hidden_layers, self.hidden_norms = [], []
        for i in range(dyn_layers):
            self.hidden_layers.append(BlockLinear(width if i == 0 else deter, deter, blocks,
                                                  name=f'dynhid{i}'))
            self.hidden_norms.append(Norm(deter, norm, name=f'dynhid{i}norm'))
        self.gates = BlockLinear(deter if dyn_layers else width, 3 * deter, blocks, name='dyngru')

    def _group(self, x):
        return tf.reshape(x, [-1, self.blocks, x.shape[-1] // self.blocks])

    def _flat(self, x):
        return tf.reshape(x, [-1, x.shape[-2] * x.shape[-1]])

    def arrange(self, dtype):
        """The first block-linear layer's weights for `_first_layer`, computed once before a time loop."""
        first = (self.hidden_layers + [self.gates])[0]
        part = self.deter // self.blocks
        kernel = tf.cast(first.kernel, dtype)                          # [G, part + n*h, out/G]
        shared = tf.transpose(kernel[:, part:], [1, 0, 2])             # [n*h, G, out/G]
        shared = tf.reshape(shared, [shared.shape[0], -1])             # [n*h, out]
        return dict(own=kernel[:, :part], shared=shared, shared_t=tf.transpose(shared),
                    bias=tf.cast(first.bias, dtype))

    def _first_layer(self, weights, deter, proj):
        """BlockLinear on concat_g(deter_g, proj) as one dense matmul of proj, not a [B, G, n*h] broadcast."""
        own = tf.einsum('ngi,gio->ngo', self._group(deter), weights['own'])
        shared = ops.matmul_pre_t(proj, weights['shared'], weights['shared_t'])
        return self._flat(own) + shared + weights['bias']

    def call(self, deter, inputs, arranged=None):
        """One step; `arranged` is `self.arrange(deter.dtype)` when a loop computed it already."""
        proj = [self.act(norm(linear(x)))
                for x, linear, norm in zip(inputs, self.inputs_in, self.inputs_norm)]
        proj = tf.concat(proj, -1)                                     # [B, n * hidden]
        x = self._first_layer(arranged or self.arrange(deter.dtype), deter, proj)
        if self.hidden_layers:
            x = self.act(self.hidden_norms[0](x))
        for layer, norm in zip(self.hidden_layers[1:], self.hidden_norms[1:]):
            x = self.act(norm(layer(x)))
        if not self.hidden_layers:
            x = self._group(x)                                         # [B, G, 3 * deter / G]
            return gru_update(*[self._flat(g) for g in tf.split(x, 3, -1)], deter)
        return self._gates_update(x, deter)

    def _gates_update(self, x, deter):
        """The gates layer and `gru_update` block-major, [G, B, .]: the batched matmul writes that layout, and
        XLA's CPU code for the gate nonlinearities ran 15 % slower reading it transposed. Same values."""
        major = lambda v: tf.transpose(self._group(v), [1, 0, 2])       # noqa: E731  [B, n] -> [G, B, n/G]
        parts = self.gates(major(x), block_major=True)                  # [G, B, 3 * deter/G]
        out = gru_update(*tf.split(parts, 3, -1), major(deter))          # [G, B, deter/G]
        return self._flat(tf.transpose(out, [1, 0, 2]))                 # [B, deter]


class NormGRU(keras.layers.Layer):
    """DreamerV2's GRU (and the 2023 V3 release's): one dense layer on [x, h], layer-normed, `gru_update`."""

    def __init__(self, deter, in_dim, **kw):
        super().__init__(**kw)
        self.deter = deter
        self.linear = Linear(in_dim + deter, 3 * deter, name='gates')
        self.norm = Norm(3 * deter, 'layer', eps=1e-3, name='norm')

    def call(self, deter, x):
        parts = self.norm(self.linear(tf.concat([x, deter], -1)))
        return gru_update(*tf.split(parts, 3, -1), deter)


class KerasGRU(keras.layers.Layer):
    """DreamerV1's recurrent core: the standard Keras GRU cell (reset after the recurrent matmul)."""

    def __init__(self, deter, in_dim, **kw):
        super().__init__(**kw)
        self.cell = keras.layers.GRUCell(deter, name='cell')
        self.cell.build((None, in_dim))

    def call(self, deter, x):
        out, _ = self.cell(x, [deter])
        return out


def named_weights(layer, prefix=''):
    """Every weight by its attribute path, 'core/gates/kernel': Keras 3's 'linear0/kernel' repeats."""
    if not type(layer).__module__.startswith('dreamer_tf'):
        return {f'{prefix}{v.name}': v for v in layer.weights}   # A Keras built-in names its own uniquely.
    out = {}
    for attr, value in sorted(vars(layer).items()):
        if attr.startswith('_'):
            continue
        many = isinstance(value, (list, tuple))
        for i, item in enumerate(value if many else [value]):
            name = f'{prefix}{attr}{i}' if many else f'{prefix}{attr}'
            if isinstance(item, keras.layers.Layer):
                out.update(named_weights(item, name + '/'))
            elif isinstance(item, keras.Variable):
                out[name] = item
    return out


def count_params(layer):
    return int(sum(np.prod(v.shape) for v in layer.trainable_variables))
