"""Keras layers of the Dreamer networks.

Every layer creates its weights in `__init__` (input sizes are passed in), so a freshly built agent
already owns all its variables: checkpoints restore eagerly and strategy scopes see every variable.
Layers compute in the Keras dtype policy (bfloat16 under mixed precision); heads cast their final
outputs to float32 before building distributions.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from dreamer_tf import dists, ops


def initializer(scale=1.0):
    """Truncated normal with fan-in variance, std scaled by `scale` (0 gives a zero init)."""
    if scale == 0.0:
        return keras.initializers.Zeros()
    return keras.initializers.VarianceScaling(scale ** 2, 'fan_in', 'truncated_normal')


def activation(name):
    fns = {'silu': tf.nn.silu, 'elu': tf.nn.elu, 'relu': tf.nn.relu, 'tanh': tf.tanh,
           'none': tf.identity}
    if name not in fns:
        raise ValueError(f"activation '{name}' is not one of {sorted(fns)}")
    return fns[name]


class Linear(keras.layers.Layer):
    """Dense layer with its weights created up front."""

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
        init = keras.initializers.VarianceScaling(1.0, 'fan_in', 'truncated_normal')
        shape = (blocks, in_dim // blocks, units // blocks)
        # VarianceScaling counts fan-in of a [G, in/G, out/G] kernel as G * in/G = the whole input
        # width, which is also what the Nature release's initialiser does for block layers.
        self.kernel = self.add_weight(shape, init, name='kernel')
        self.bias = self.add_weight((units,), 'zeros', name='bias')
        # All weights exist now; BlockGRU reads this kernel without calling the layer, so Keras
        # would otherwise warn that 'core' has an unbuilt sub-layer.
        self.built = True

    def call(self, x):
        # x: [N, in_dim] -> [N, G, in/G] -> per-block matmul -> [N, units]
        x = tf.reshape(x, [-1, self.blocks, x.shape[-1] // self.blocks])
        x = tf.einsum('ngi,gio->ngo', x, tf.cast(self.kernel, x.dtype))
        return tf.reshape(x, [-1, self.units]) + tf.cast(self.bias, x.dtype)


class Norm(keras.layers.Layer):
    """RMSNorm or LayerNorm over the last axis, computed in float32 for stability."""

    def __init__(self, dim, kind='rms', eps=1e-4, **kw):
        super().__init__(**kw)
        if kind not in ('rms', 'layer', 'none'):
            raise ValueError(f"norm '{kind}' is not one of ['layer', 'none', 'rms']")
        self.kind, self.eps = kind, eps
        self.scale = self.add_weight((dim,), 'ones', name='scale') if kind != 'none' else None
        self.offset = self.add_weight((dim,), 'zeros', name='offset') if kind == 'layer' else None

    def call(self, x):
        if self.kind == 'none':
            return x
        dtype, x = x.dtype, tf.cast(x, tf.float32)
        if self.kind == 'layer':
            x = x - tf.reduce_mean(x, -1, keepdims=True)
        x = x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), -1, keepdims=True) + self.eps)
        x = x * self.scale
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


class BlockGRU(keras.layers.Layer):
    """DreamerV3's block-diagonal GRU step: deter_{t} = f(deter_{t-1}, inputs).

    Each input (deter, stoch, action) is first projected to `hidden` units; the projections are
    shared by all blocks, while each block sees only its own slice of the previous deter. The update
    gate is biased by -1 so the state is mostly kept at initialisation.
    """

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
        """The first block-linear layer's weights laid out for `_first_layer`, in `dtype`.

        A loop over time computes this once before the loop and passes it to every step, so the
        differentiated loop neither rebuilds it nor stores a copy per step for its backward pass.
        """
        first = (self.hidden_layers + [self.gates])[0]
        part = self.deter // self.blocks
        kernel = tf.cast(first.kernel, dtype)                          # [G, part + n*h, out/G]
        shared = tf.transpose(kernel[:, part:], [1, 0, 2])             # [n*h, G, out/G]
        return dict(own=kernel[:, :part], shared=tf.reshape(shared, [shared.shape[0], -1]),
                    bias=tf.cast(first.bias, dtype))

    def _first_layer(self, weights, deter, proj):
        """The first block-linear layer on concat_g(deter_g, proj), without building that input.

        Every block sees the same `proj`, so its share of the product is one dense matmul with
        the blocks' proj rows laid side by side, [n*hidden, deter]; only the deter part is
        block-diagonal. Same weights and result as BlockLinear on the concatenation, but it never
        materialises the [B, G, n*hidden] broadcast (the largest tensor of the step).
        """
        own = tf.einsum('ngi,gio->ngo', self._group(deter), weights['own'])
        return self._flat(own) + tf.matmul(proj, weights['shared']) + weights['bias']

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
        if self.hidden_layers:
            x = self.gates(x)
        x = self._group(x)                                             # [B, G, 3 * deter / G]
        reset, cand, update = [self._flat(g) for g in tf.split(x, 3, -1)]
        reset = tf.sigmoid(reset)
        cand = tf.tanh(reset * cand)
        update = tf.sigmoid(update - 1.0)
        return update * cand + (1.0 - update) * deter


class NormGRU(keras.layers.Layer):
    """DreamerV2's GRU cell (also the 2023 DreamerV3 release's): one dense layer on [x, h] gives the
    reset, candidate and update pre-activations, layer-normalised together; then

        r = sigmoid(.), c = tanh(r * c_pre), u = sigmoid(u_pre - 1), h' = u * c + (1 - u) * h.

    The -1 biases the update gate towards keeping the state at initialisation.
    """

    def __init__(self, deter, in_dim, **kw):
        super().__init__(**kw)
        self.deter = deter
        self.linear = Linear(in_dim + deter, 3 * deter, name='gates')
        self.norm = Norm(3 * deter, 'layer', eps=1e-3, name='norm')

    def call(self, deter, x):
        parts = self.norm(self.linear(tf.concat([x, deter], -1)))
        reset, cand, update = tf.split(parts, 3, -1)
        reset = tf.sigmoid(reset)
        cand = tf.tanh(reset * cand)
        update = tf.sigmoid(update - 1.0)
        return update * cand + (1.0 - update) * deter


class KerasGRU(keras.layers.Layer):
    """DreamerV1's recurrent core: the standard Keras GRU cell (reset after the recurrent matmul)."""

    def __init__(self, deter, in_dim, **kw):
        super().__init__(**kw)
        self.cell = keras.layers.GRUCell(deter, name='cell')
        self.cell.build((None, in_dim))

    def call(self, deter, x):
        out, _ = self.cell(x, [deter])
        return out


class TransposedDecoder(keras.layers.Layer):
    """DreamerV1/V2 decoder. image: dense to a 1x1 map of 32 * depth channels, then transposed convs
    of stride 2 and kernels (5, 5, 6, 6) (1 -> 5 -> 13 -> 30 -> 64), channels depth * (4, 2, 1) and
    the image's; Normal(mean, 1) per pixel of the image in [-0.5, 0.5]. vector: an MLP with a
    `vector_dist` of 'normal' (Normal(mean, 1)) or 'mse' (squared error, DreamerV2's proprio decoder).
    """

    def __init__(self, obs_space, feat_dim, depth, kernels, layers, units, norm, act, vector_dist,
                 **kw):
        super().__init__(**kw)
        self.keys = [k for k in ('vector', 'image') if k in obs_space]
        self.act = activation(act)
        if vector_dist not in ('normal', 'mse'):
            raise ValueError(f"decoder.vector_dist '{vector_dist}' is not one of ['mse', 'normal']")
        self.vector_dist = vector_dist
        if 'vector' in obs_space:
            self.mlp = MLP(feat_dim, layers, units, norm, act, name='mlp')
            self.vec_out = Linear(self.mlp.out_dim, obs_space['vector'].shape[0], name='vec_out')
        if 'image' in obs_space:
            self.img_shape = tuple(obs_space['image'].shape)
            self.proj = Linear(feat_dim, 32 * depth, name='img_in')
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
            pred = tf.cast(self.vec_out(self.mlp(feat)), tf.float32)
            out['vector'] = dists.unit_normal(pred, 1) if self.vector_dist == 'normal' else \
                dists.MSEDist(pred, 1)
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


class ShiftedImage:
    """A V1/V2 image distribution over [-0.5, 0.5] read through targets in [0, 1].

    The world model scores every image decoder against image / 255; the V1/V2 decoder predicts
    image / 255 - 0.5, so this shifts targets and predictions by 0.5.
    """

    def __init__(self, dist):
        self.dist = dist

    def log_prob(self, target):
        return self.dist.log_prob(tf.cast(target, tf.float32) - 0.5)

    def mode(self):
        return self.dist.mode() + 0.5

    def mean(self):
        return self.mode()


class Encoder(keras.layers.Layer):
    """Nature-release encoder: symlog MLP for `vector`, conv + max-pool stages for `image`.

    Returns the concatenated tokens (embed) that the posterior reads.
    """

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
            h, w, c = obs_space['image'].shape
            self.convs, self.conv_norms = [], []
            for i, mult in enumerate(mults):
                conv = keras.layers.Conv2D(depth * mult, kernel, self.stride, self.padding,
                                           kernel_initializer=initializer(), name=f'conv{i}')
                conv.build((None, h, w, c))
                h, w, c = self._stage_size(h, kernel), self._stage_size(w, kernel), depth * mult
                if h < 1 or w < 1:
                    raise ValueError(f"image {obs_space['image'].shape} is too small for "
                                     f'{len(mults)} stages of kernel {kernel}')
                self.convs.append(conv)
                self.conv_norms.append(Norm(c, norm, name=f'conv{i}norm'))
            self.out_dim += h * w * c

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
            x = tf.reshape(x, tf.concat([lead, [math.prod(x.shape[-3:])]], 0))
            tokens.append(x)
        return tf.concat(tokens, -1)

    # One image stage: a 'same' conv of stride 1, then a 2x2 max-pool that halves the map.
    stride, padding = 1, 'same'

    def _stage_size(self, size, kernel):
        return size // 2

    def _stage(self, conv, x):
        return tf.nn.max_pool2d(conv(x), 2, 2, 'VALID')


class StridedEncoder(Encoder):
    """DreamerV1/V2 encoder: 4 'valid' convs of kernel 4 and stride 2 (64 -> 31 -> 14 -> 6 -> 2) on
    images in [-0.5, 0.5], channels depth * mults, no pooling; an MLP (no symlog) for `vector`."""

    stride, padding = 2, 'valid'

    def __init__(self, obs_space, depth, mults, kernel, layers, units, norm, act, **kw):
        super().__init__(obs_space, depth, mults, kernel, layers, units, norm, act, symlog=False, **kw)

    def _stage_size(self, size, kernel):
        return (size - kernel) // 2 + 1

    def _stage(self, conv, x):
        return conv(x)


def upsample_taps(kernel):
    """0/1 tap matrices [2, P, kernel] that fold nearest x2 upsampling into a smaller kernel.

    Output row 2i + a (parity a) of a `kernel`-tap 'same' convolution over the upsampled map reads
    upsampled rows 2i + a + k for k in [-r, r] (r = kernel // 2), which are input rows
    i + floor((a + k) / 2). taps[a, p, j] = 1 when tap j lands on input row i + p - P // 2.
    For kernel 5: P = 3 (input offsets -1, 0, 1).
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
    """Nearest-neighbour x2 upsampling followed by a `kernel` x `kernel` 'same' convolution.

    Computed without the upsampled map: the four output parities (even/odd row x even/odd column)
    each see a P x P neighbourhood of the input (P = 3 for kernel 5) with summed kernel taps, so one
    P x P convolution with 4x the output channels and a depth-to-space gives the same result with
    (P / kernel)^2 of the multiply-adds (9/25 for kernel 5). The parameters are the usual
    [kernel, kernel, in, out] kernel and bias, so the layer is the paper's upsample + conv.
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
        # Under mixed precision Keras hands `kernel` over in the compute dtype: fold in float32.
        kernel = tf.cast(self.kernel, tf.float32)
        k = tf.einsum('apk,bql,klio->pqiabo', self.taps, self.taps, kernel)
        shape = k.shape
        return tf.reshape(k, [shape[0], shape[1], shape[2], 4 * self.out_ch])

    def call(self, x):
        y = tf.nn.conv2d(x, tf.cast(self.folded_kernel(), x.dtype), 1, 'SAME')
        y = y + tf.cast(tf.tile(self.bias, [4]), x.dtype)
        return tf.nn.depth_to_space(y, 2)      # channel (a * 2 + b) * out + o -> pixel (2i+a, 2j+b)


class Decoder(keras.layers.Layer):
    """Reconstructs each observation key from feat; returns a dict of MSE distributions.

    vector: symlog-space MSE summed over dims. image: projection to a minres x minres x C map ->
    (nearest upsample x2, conv) per stage -> sigmoid in [0, 1], MSE summed over pixels against
    image / 255. The projection (`bspace`):

        0: one dense layer on feat = concat(deter, stoch) (the 2023 release).
        G: block-linear on deter's G groups, group g filling channels [g*C/G, (g+1)*C/G) of every
           pixel, plus Linear(2*units) -> norm -> act -> Linear on the flat stoch (Nature release).

    Either way the sum then goes through norm and act. `deter` (the width of feat's deter part) is
    needed only when bspace > 0.
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
        depths = [depth * m for m in mults][-stages:] if stages <= len(mults) else None
        if depths is None:
            raise ValueError(f'image {shape} needs {stages} stages, config has {len(mults)}')
        self.minres, self.img_shape = minres, (h, w, c)
        # Built before the convs: with bspace 0 the weights are created in the same order as before.
        self._build_projection(feat_dim, depths[-1], norm, **proj)
        self.deconvs, self.deconv_norms = [], []
        res, ch = minres, depths[-1]
        outs = list(reversed(depths[:-1])) + [c]
        for i, out in enumerate(outs):
            last = i == len(outs) - 1
            conv = UpsampleConv(ch, out, kernel, initializer(outscale if last else 1.0),
                                name=f'deconv{i}')
            res *= 2
            ch = out
            self.deconvs.append(conv)
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
        x = self.project(tf.reshape(feat, [-1, feat.shape[-1]]))
        x = self.act(self.proj_norm(x))
        for conv, norm in zip(self.deconvs, self.deconv_norms):
            x = conv(x)                                          # nearest upsample x2 + conv
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
        # Group g's [res, res, C/G] block becomes channels [g*C/G, (g+1)*C/G) of each pixel.
        group = tf.transpose(tf.reshape(group, [-1, self.bspace, res, res, part]), [0, 2, 3, 1, 4])
        group = tf.reshape(group, [-1, res, res, self.bspace * part])
        x = self.proj_stoch_out(self.act(self.proj_stoch_norm(self.proj_stoch(stoch))))
        return group + tf.reshape(x, [-1, res, res, x.shape[-1] // res ** 2])


class Head(keras.layers.Layer):
    """MLP on feat followed by an output layer that parameterises a distribution.

    kind: 'twohot' (V3 reward, critic), 'unit_normal' (V1 and V2 reward, value: Normal(mean, 1), the
    V2 release's 'mse'), 'mse' (full squared error; no version uses it for a head), 'binary'
    (continue), 'normal' (V3 continuous actor), 'tanh_normal' (V1), 'trunc_normal' (V2), 'onehot'
    (discrete actor).
    """

    def __init__(self, kind, in_dim, out_dim=1, layers=1, units=1024, norm='rms', act='silu',
                 outscale=1.0, bins=255, minstd=0.1, maxstd=1.0, unimix=0.0, init_std=0.0,
                 mean_scale=5.0, **kw):
        super().__init__(**kw)
        self.kind = kind
        self.mlp = MLP(in_dim, layers, units, norm, act, name='mlp')
        sizes = {'twohot': bins, 'binary': 1, 'normal': 2 * out_dim, 'onehot': out_dim,
                 'unit_normal': 1, 'mse': 1, 'tanh_normal': 2 * out_dim, 'trunc_normal': 2 * out_dim}
        if kind not in sizes:
            raise ValueError(f"head kind '{kind}' is not one of {sorted(sizes)}")
        self.out = Linear(self.mlp.out_dim, sizes[kind], outscale, name='out')
        self.bins = dists.symexp_bins(bins) if kind == 'twohot' else None
        self.minstd, self.maxstd, self.unimix = minstd, maxstd, unimix
        self.init_std, self.mean_scale = init_std, mean_scale

    def call(self, feat):
        x = tf.cast(self.out(self.mlp(feat)), tf.float32)
        if self.kind == 'twohot':
            return dists.SymexpTwoHot(x, self.bins)
        if self.kind == 'unit_normal':
            return dists.unit_normal(x[..., 0], 0)
        if self.kind == 'mse':
            return dists.MSEDist(x[..., 0], 0)
        if self.kind == 'tanh_normal':
            mean, std = tf.split(x, 2, -1)
            return dists.tanh_normal(mean, std, self.init_std, self.mean_scale, self.minstd)
        if self.kind == 'trunc_normal':
            mean, std = tf.split(x, 2, -1)
            return dists.trunc_normal(mean, std, self.minstd, self.init_std)
        if self.kind == 'binary':
            return dists.bernoulli(x[..., 0])
        if self.kind == 'normal':
            mean, std = tf.split(x, 2, -1)
            return dists.bounded_normal(mean, std, self.minstd, self.maxstd)
        return dists.OneHotDist(x, self.unimix)


def named_weights(layer, prefix=''):
    """Every weight of `layer` under a path built from attribute names, e.g. 'core/gates/kernel'.

    Keras 3 names weights only by their own layer ('linear0/kernel'), which repeats across heads;
    checkpoints need names that are unique and stable, so they follow the attribute tree.
    """
    if not type(layer).__module__.startswith('dreamer_tf'):
        # A Keras built-in layer (Conv2D): its own weight names are unique within it.
        return {f'{prefix}{v.name}': v for v in layer.weights}
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
