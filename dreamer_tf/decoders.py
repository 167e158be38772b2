"""Observation decoders: feat [..., feat_dim] -> a dict of per-key distributions, in float32."""

import math

import keras
import numpy as np
import tensorflow as tf

from dreamer_tf import dists
from dreamer_tf.layers import MLP, BlockLinear, Linear, Norm, activation, choose, initializer

VECTOR_DISTS = {'normal': dists.unit_normal, 'mse': dists.MSEDist}


class ShiftedImage:
    """A V1/V2 image distribution over [-0.5, 0.5] read through targets in [0, 1], as V3's are."""

    def __init__(self, dist):
        self.dist = dist

    def log_prob(self, target):
        return self.dist.log_prob(tf.cast(target, tf.float32) - 0.5)

    def mode(self):
        return self.dist.mode() + 0.5

    def mean(self):
        return self.mode()


class TransposedDecoder(keras.layers.Layer):
    """DreamerV1/V2 decoder: Normal(mean, 1) per pixel; an MLP with `vector_dist` for vectors.

    image: dense to a 1x1 map of 32 * depth channels, then transposed convs of stride 2 and kernels
    (5, 5, 6, 6), 1 -> 5 -> 13 -> 30 -> 64 pixels.
    """

    def __init__(self, obs_space, feat_dim, depth, kernels, layers, units, norm, act, vector_dist,
                 **kw):
        super().__init__(**kw)
        self.keys = [k for k in ('vector', 'image') if k in obs_space]
        self.act = activation(act)
        self.vector_dist = choose(VECTOR_DISTS, vector_dist, 'decoder.vector_dist')
        if 'vector' in obs_space:
            self.mlp = MLP(feat_dim, layers, units, norm, act, name='mlp')
            self.vec_out = Linear(self.mlp.out_dim, obs_space['vector'].shape[0], name='vec_out')
        if 'image' in obs_space:
            self.img_shape = tuple(obs_space['image'].shape)
            self.proj = Linear(feat_dim, 32 * depth, name='img_in')
            self._build_deconvs(depth, kernels, norm)

    def _build_deconvs(self, depth, kernels, norm):
        chans = [4 * depth, 2 * depth, depth, self.img_shape[-1]][-len(kernels):]
        size, ch = 1, 32 * depth
        self.deconvs, self.deconv_norms = [], []
        for i, (kernel, out) in enumerate(zip(kernels, chans)):
            conv = keras.layers.Conv2DTranspose(out, kernel, 2, 'valid',
                                                kernel_initializer=initializer(), name=f'deconv{i}')
            conv.build((None, size, size, ch))
            size, ch = (size - 1) * 2 + kernel, out
            self.deconvs.append(conv)
            last = i == len(kernels) - 1
            self.deconv_norms.append(None if last else Norm(out, norm, name=f'deconv{i}norm'))
        if (size, size, ch) != self.img_shape:
            raise ValueError(f'transposed decoder with kernels {list(kernels)} makes '
                             f'{size}x{size}x{ch} images, the env gives {self.img_shape}')

    def call(self, feat):
        out = {}
        if 'vector' in self.keys:
            out['vector'] = self.vector_dist(tf.cast(self.vec_out(self.mlp(feat)), tf.float32), 1)
        if 'image' in self.keys:
            lead = tf.shape(feat)[:-1]
            x = tf.reshape(self.proj(tf.reshape(feat, [-1, feat.shape[-1]])), [-1, 1, 1, self.proj.units])
            for conv, norm in zip(self.deconvs, self.deconv_norms):
                x = conv(x)
                if norm is not None:
                    x = self.act(norm(x))
            mean = tf.reshape(tf.cast(x, tf.float32), tf.concat([lead, self.img_shape], 0))
            out['image'] = ShiftedImage(dists.unit_normal(mean, 3))
        return out


def upsample_taps(kernel):
    """0/1 tap matrices [2, P, kernel] that fold nearest x2 upsampling into a P-tap kernel.

    Output row 2i + a of a 'same' conv over the upsampled map reads upsampled rows 2i + a + k,
    k in [-r, r], which are input rows i + floor((a + k) / 2): taps[a, p, j] = 1 when tap j lands
    on input row i + p - P // 2. Kernel 5 gives P = 3.
    """
    if kernel % 2 != 1:
        raise ValueError(f'upsampling convolutions need an odd kernel size, got {kernel}')
    r = kernel // 2
    reach = (r + 1) // 2                       # input offsets run over [-reach, reach]
    taps = np.zeros((2, 2 * reach + 1, kernel), np.float32)
    for a in (0, 1):
        for j, k in enumerate(range(-r, r + 1)):
            taps[a, (a + k) // 2 + reach, j] = 1.0
    return taps


class UpsampleConv(keras.layers.Layer):
    """Nearest x2 upsampling, then a `kernel` x `kernel` 'same' conv, computed without the upsampled map.

    Each of the four output parities sees a P x P input neighbourhood with summed taps, so one P x P
    conv with 4x the channels and a depth-to-space give the same result at (P / kernel)^2 of the cost.
    """

    def __init__(self, in_ch, out_ch, kernel, kernel_initializer, **kw):
        super().__init__(**kw)
        self.out_ch = out_ch
        self.kernel = self.add_weight((kernel, kernel, in_ch, out_ch), kernel_initializer,
                                      name='kernel')
        self.bias = self.add_weight((out_ch,), 'zeros', name='bias')
        self.taps = tf.constant(upsample_taps(kernel))

    def folded_kernel(self):
        """[P, P, in, 4 * out], output channels ordered (row parity, column parity, out)."""
        kernel = tf.cast(self.kernel, tf.float32)  # Mixed precision hands it over in bfloat16.
        k = tf.einsum('apk,bql,klio->pqiabo', self.taps, self.taps, kernel)
        shape = k.shape
        return tf.reshape(k, [shape[0], shape[1], shape[2], 4 * self.out_ch])

    def call(self, x):
        y = tf.nn.conv2d(x, tf.cast(self.folded_kernel(), x.dtype), 1, 'SAME')
        y = y + tf.cast(tf.tile(self.bias, [4]), x.dtype)
        return tf.nn.depth_to_space(y, 2)      # channel (a * 2 + b) * out + o -> pixel (2i+a, 2j+b)


class Decoder(keras.layers.Layer):
    """Nature-release decoder: symlog MSE for `vector`; image / 255 by MSE of a sigmoid image.

    image: projection to a minres x minres x C map, norm, act, then (upsample x2, conv) stages. The
    projection is one dense layer on feat (bspace 0, the 2023 release) or, for bspace G, a block-linear
    layer on deter's G groups (group g fills channels [g*C/G, (g+1)*C/G)) plus an MLP on stoch.
    """

    def __init__(self, obs_space, feat_dim, depth, mults, kernel, layers, units, norm, act,
                 minres, outscale, bspace=0, deter=0, **kw):
        super().__init__(**kw)
        self.keys = [k for k in ('vector', 'image') if k in obs_space]
        self.act = activation(act)
        if 'vector' in obs_space:
            self.mlp = MLP(feat_dim, layers, units, norm, act, name='mlp')
            self.vec_out = Linear(self.mlp.out_dim, obs_space['vector'].shape[0], outscale,
                                  name='vec_out')
        if 'image' in obs_space:
            self._build_image(obs_space['image'].shape, feat_dim, depth, mults, kernel, norm,
                              minres, outscale, dict(units=units, bspace=bspace, deter=deter))

    def _build_projection(self, feat_dim, chans, norm, units, bspace, deter):
        """The layers from feat to the first [minres, minres, C] map, its norm included."""
        size = self.minres * self.minres * chans
        self.bspace, self.deter = bspace, deter
        if not bspace:
            self.proj = Linear(feat_dim, size, name='img_in')
        else:
            if chans % bspace or not 0 < deter < feat_dim:
                raise ValueError(f'decoder.bspace {bspace} needs C = {chans} divisible by it and '
                                 f'0 < deter = {deter} < feat width {feat_dim}')
            self.proj_deter = BlockLinear(deter, size, bspace, name='img_in_deter')
            self.proj_stoch = Linear(feat_dim - deter, 2 * units, name='img_in_stoch')
            self.proj_stoch_norm = Norm(2 * units, norm, name='img_in_stoch_norm')
            self.proj_stoch_out = Linear(2 * units, size, name='img_in_stoch_out')
        self.proj_norm = Norm(chans, norm, name='img_in_norm')

    def _build_image(self, shape, feat_dim, depth, mults, kernel, norm, minres, outscale, proj):
        h, w, c = shape
        stages = int(round(math.log2(h / minres)))
        if minres * 2 ** stages != h or h != w:
            raise ValueError(f'decoder needs a square image that is minres*2^k, got {shape}')
        if stages > len(mults):
            raise ValueError(f'image {shape} needs {stages} stages, config has {len(mults)}')
        depths = [depth * m for m in mults][-stages:]
        self.minres, self.img_shape = minres, (h, w, c)
        self._build_projection(feat_dim, depths[-1], norm, **proj)  # Before the convs: weight order.
        self.deconvs, self.deconv_norms = [], []
        outs = list(reversed(depths[:-1])) + [c]
        for i, (ch, out) in enumerate(zip([depths[-1]] + outs[:-1], outs)):
            last = i == len(outs) - 1
            self.deconvs.append(UpsampleConv(ch, out, kernel, initializer(outscale if last else 1.0),
                                             name=f'deconv{i}'))
            self.deconv_norms.append(None if last else Norm(out, norm, name=f'deconv{i}norm'))

    def call(self, feat):
        out = {}
        if 'vector' in self.keys:
            pred = tf.cast(self.vec_out(self.mlp(feat)), tf.float32)
            out['vector'] = dists.MSEDist(pred, 1, transform='symlog')
        if 'image' in self.keys:
            out['image'] = dists.MSEDist(self._image(feat), 3)
        return out

    def _image(self, feat):
        lead = tf.shape(feat)[:-1]
        x = self.act(self.proj_norm(self.project(tf.reshape(feat, [-1, feat.shape[-1]]))))
        for conv, norm in zip(self.deconvs, self.deconv_norms):
            x = conv(x)
            if norm is not None:
                x = self.act(norm(x))
        x = tf.sigmoid(tf.cast(x, tf.float32))
        return tf.reshape(x, tf.concat([lead, self.img_shape], 0))

    def project(self, feat):
        """[N, feat] -> the first [N, minres, minres, C] map, before its norm and act."""
        res = self.minres
        if not self.bspace:
            x = self.proj(feat)
            return tf.reshape(x, [-1, res, res, x.shape[-1] // res ** 2])
        deter, stoch = feat[:, :self.deter], feat[:, self.deter:]
        group = self.proj_deter(deter)                               # [N, G * res * res * C/G]
        part = group.shape[-1] // (self.bspace * res ** 2)           # C/G
        group = tf.transpose(tf.reshape(group, [-1, self.bspace, res, res, part]), [0, 2, 3, 1, 4])
        group = tf.reshape(group, [-1, res, res, self.bspace * part])
        x = self.proj_stoch_out(self.act(self.proj_stoch_norm(self.proj_stoch(stoch))))
        return group + tf.reshape(x, [-1, res, res, x.shape[-1] // res ** 2])
