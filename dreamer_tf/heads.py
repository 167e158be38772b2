"""Distribution heads: feat -> MLP -> output layer -> a float32 distribution of the kind's name."""

import keras
import tensorflow as tf

from dreamer_tf import dists
from dreamer_tf.layers import MLP, Linear, choose


class Head(keras.layers.Layer):
    """MLP on feat, then a Linear whose float32 output parameterises the distribution `kind`.

    twohot: V3 reward and critic. unit_normal: Normal(mean, 1), V1/V2 reward and value. mse: squared
    error. binary: continue. onehot: discrete actor. normal, tanh_normal, trunc_normal: the continuous
    actors of V3, V1 and V2.
    """

    def __init__(self, kind, in_dim, out_dim=1, layers=1, units=1024, norm='rms', act='silu',
                 outscale=1.0, bins=255, minstd=0.1, maxstd=1.0, unimix=0.0, init_std=0.0,
                 mean_scale=5.0, **kw):
        super().__init__(**kw)
        self.kind = kind
        self.mlp = MLP(in_dim, layers, units, norm, act, name='mlp')
        widths = {'twohot': bins, 'binary': 1, 'normal': 2 * out_dim, 'onehot': out_dim,
                  'unit_normal': 1, 'mse': 1, 'tanh_normal': 2 * out_dim, 'trunc_normal': 2 * out_dim}
        self.out = Linear(self.mlp.out_dim, choose(widths, kind, 'head kind'), outscale, name='out')
        self.bins = dists.symexp_bins(bins) if kind == 'twohot' else None
        self.minstd, self.maxstd, self.unimix = minstd, maxstd, unimix
        self.init_std, self.mean_scale = init_std, mean_scale

    def call(self, feat):
        x = tf.cast(self.out(self.mlp(feat)), tf.float32)
        return getattr(self, f'{self.kind}_dist')(x)

    def twohot_dist(self, x):
        return dists.SymexpTwoHot(x, self.bins)

    def unit_normal_dist(self, x):
        return dists.unit_normal(x[..., 0], 0)

    def mse_dist(self, x):
        return dists.MSEDist(x[..., 0], 0)

    def binary_dist(self, x):
        return dists.bernoulli(x[..., 0])

    def onehot_dist(self, x):
        return dists.OneHotDist(x, self.unimix)

    def normal_dist(self, x):
        mean, std = tf.split(x, 2, -1)
        return dists.bounded_normal(mean, std, self.minstd, self.maxstd)

    def tanh_normal_dist(self, x):
        mean, std = tf.split(x, 2, -1)
        return dists.tanh_normal(mean, std, self.init_std, self.mean_scale, self.minstd)

    def trunc_normal_dist(self, x):
        mean, std = tf.split(x, 2, -1)
        return dists.trunc_normal(mean, std, self.minstd, self.init_std)
