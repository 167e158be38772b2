"""Dense building blocks: Linear, BlockLinear, Norm and MLP, their weights all created in `__init__`.

Layers compute in the Keras dtype policy (bfloat16 under mixed precision); norms compute in float32.
"""

import keras
import tensorflow as tf


def choose(table, name, what):
    """`table[name]`, or a ValueError naming `what`, the bad value and the allowed ones."""
    if name not in table:
        raise ValueError(f"{what} '{name}' is not one of {sorted(table)}")
    return table[name]


def initializer(scale=1.0):
    """Truncated normal with fan-in variance, std scaled by `scale` (0 gives a zero init)."""
    if scale == 0.0:
        return keras.initializers.Zeros()
    return keras.initializers.VarianceScaling(scale ** 2, 'fan_in', 'truncated_normal')


ACTIVATIONS = {'silu': tf.nn.silu, 'elu': tf.nn.elu, 'relu': tf.nn.relu, 'tanh': tf.tanh,
               'none': tf.identity}


def activation(name):
    return choose(ACTIVATIONS, name, 'activation')


class Linear(keras.layers.Layer):
    """Dense layer: [..., in_dim] -> [..., units]."""

    def __init__(self, in_dim, units, outscale=1.0, bias=True, **kw):
        super().__init__(**kw)
        self.units = units
        self.kernel = self.add_weight((in_dim, units), initializer(outscale), name='kernel')
        self.bias = self.add_weight((units,), 'zeros', name='bias') if bias else None

    def call(self, x):
        x = tf.matmul(x, tf.cast(self.kernel, x.dtype)) if x.shape.rank == 2 else \
            tf.tensordot(x, tf.cast(self.kernel, x.dtype), 1)
        return x + tf.cast(self.bias, x.dtype) if self.bias is not None else x


class BlockLinear(keras.layers.Layer):
    """Block-diagonal dense layer: `blocks` independent [in/G, out/G] matrices on split features."""

    def __init__(self, in_dim, units, blocks, **kw):
        super().__init__(**kw)
        if in_dim % blocks or units % blocks:
            raise ValueError(f'block-linear sizes {in_dim}->{units} not divisible by {blocks} blocks')
        self.blocks, self.units = blocks, units
        # Fan-in of a [G, in/G, out/G] kernel counts G * in/G inputs, as the Nature release's does.
        init = keras.initializers.VarianceScaling(1.0, 'fan_in', 'truncated_normal')
        shape = (blocks, in_dim // blocks, units // blocks)
        self.kernel = self.add_weight(shape, init, name='kernel')
        self.bias = self.add_weight((units,), 'zeros', name='bias')
        self.built = True  # BlockGRU reads the kernel without calling the layer.

    def call(self, x, block_major=False):
        """[N, in] -> [N, units]; `block_major`: [G, N, in/G] -> [G, N, units/G], the matmul's own layout."""
        kernel, bias = tf.cast(self.kernel, x.dtype), tf.cast(self.bias, x.dtype)
        if block_major:
            return tf.einsum('gni,gio->gno', x, kernel) + tf.reshape(bias, [self.blocks, 1, -1])
        x = tf.reshape(x, [-1, self.blocks, x.shape[-1] // self.blocks])            # [N, G, in/G]
        return tf.reshape(tf.einsum('ngi,gio->ngo', x, kernel), [-1, self.units]) + bias  # [N, units]


def _rms_norm(x, eps):
    return x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), -1, keepdims=True) + eps)


def _layer_norm(x, eps):
    return _rms_norm(x - tf.reduce_mean(x, -1, keepdims=True), eps)


NORMS = {'rms': _rms_norm, 'layer': _layer_norm, 'none': None}


class Norm(keras.layers.Layer):
    """RMSNorm or LayerNorm over the last axis, in float32 for stability."""

    def __init__(self, dim, kind='rms', eps=1e-4, **kw):
        super().__init__(**kw)
        self.norm, self.eps = choose(NORMS, kind, 'norm'), eps
        self.scale = self.add_weight((dim,), 'ones', name='scale') if kind != 'none' else None
        self.offset = self.add_weight((dim,), 'zeros', name='offset') if kind == 'layer' else None

    def call(self, x):
        if self.norm is None:
            return x
        dtype = x.dtype
        x = self.norm(tf.cast(x, tf.float32), self.eps) * self.scale
        if self.offset is not None:
            x = x + self.offset
        return tf.cast(x, dtype)


class MLP(keras.layers.Layer):
    """`layers` x (Linear -> Norm -> activation)."""

    def __init__(self, in_dim, layers, units, norm='rms', act='silu', **kw):
        super().__init__(**kw)
        self.out_dim = units if layers else in_dim
        self.act = activation(act)
        self.linears, self.norms = [], []
        for i in range(layers):
            self.linears.append(Linear(in_dim if i == 0 else units, units, name=f'linear{i}'))
            self.norms.append(Norm(units, norm, name=f'norm{i}'))

    def call(self, x):
        for linear, norm in zip(self.linears, self.norms):
            x = self.act(norm(linear(x)))
        return x
