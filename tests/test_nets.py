"""Network layers against naive numpy forward passes written from the docstrings and SPEC.md.

Each test reads the layer's own weights (randomised first, so zero biases and unit scales cannot hide a
wrong formula) and recomputes the output with explicit numpy loops.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces

from dreamer_tf import nets
from helpers import f32


def silu(x):
    return x / (1.0 + np.exp(-x))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def symlog(x):
    return np.sign(x) * np.log(1.0 + np.abs(x))


def rms_norm(x, scale, eps=1e-4):
    x = np.asarray(x, np.float64)
    return x / np.sqrt(np.mean(x ** 2, -1, keepdims=True) + eps) * scale


def block_diagonal(kernel):
    """[G, I, O] block kernels -> the [G*I, G*O] dense matrix with those blocks on its diagonal."""
    blocks, rows, cols = kernel.shape
    dense = np.zeros((blocks * rows, blocks * cols))
    for g in range(blocks):
        dense[g * rows:(g + 1) * rows, g * cols:(g + 1) * cols] = kernel[g]
    return dense


def randomize(layer, rng, std=0.5):
    """Every weight of `layer` set to random values (scales around 1, everything else around 0)."""
    for var in layer.weights:
        base = 1.0 if var.path.endswith('scale') else 0.0
        var.assign(base + std * rng.standard_normal(var.shape).astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Norm
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('magnitude', [1.0, 0.01])
def test_rms_norm_matches_numpy(magnitude):
    # magnitude 0.01: mean(x^2) ~ 1e-4 is as large as eps, so eps inside the sqrt matters.
    rng = np.random.default_rng(0)
    x = magnitude * rng.standard_normal((3, 7)).astype(np.float32)
    norm = nets.Norm(7, 'rms')
    randomize(norm, rng)
    out = norm(f32(x))
    assert out.dtype == tf.float32
    expected = rms_norm(x, norm.scale.numpy())
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_rms_norm_by_hand():
    # x = [3, 4]: mean(x^2) = 12.5, 1 / sqrt(12.5001) = 0.28284158; scale [1, 2]
    norm = nets.Norm(2, 'rms')
    norm.scale.assign([1.0, 2.0])
    out = norm(f32([[3.0, 4.0]])).numpy()
    np.testing.assert_allclose(out, [[3 * 0.28284158, 8 * 0.28284158]], rtol=1e-6)


def test_rms_norm_bfloat16_keeps_dtype_and_computes_in_float32():
    rng = np.random.default_rng(1)
    x = tf.cast(f32(rng.standard_normal((4, 16)) * 3.0), tf.bfloat16)
    norm = nets.Norm(16, 'rms', dtype='mixed_bfloat16')
    randomize(norm, rng, std=0.1)
    out = norm(x)
    assert out.dtype == tf.bfloat16
    # Reference in float32 from the bfloat16 input values; the output is rounded to bfloat16
    # once (8 bits of mantissa: relative error at most 2^-8), plus the scale's own rounding.
    expected = rms_norm(tf.cast(x, tf.float32).numpy(), norm.scale.numpy())
    np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), expected, rtol=1e-2, atol=1e-3)


def test_layer_norm_matches_numpy():
    rng = np.random.default_rng(2)
    x = 2.0 + rng.standard_normal((5, 6)).astype(np.float32)
    norm = nets.Norm(6, 'layer')
    randomize(norm, rng)
    centred = x - x.mean(-1, keepdims=True)
    var = np.mean(centred ** 2, -1, keepdims=True)
    expected = centred / np.sqrt(var + 1e-4) * norm.scale.numpy() + norm.offset.numpy()
    np.testing.assert_allclose(norm(f32(x)).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_norm_none_is_identity_and_unknown_kind_fails():
    x = f32([[1.0, -2.0, 3.0]])
    np.testing.assert_array_equal(nets.Norm(3, 'none')(x).numpy(), x.numpy())
    assert nets.Norm(3, 'none').weights == []
    with pytest.raises(ValueError, match='norm'):
        nets.Norm(3, 'batch')


# ---------------------------------------------------------------------------------------------
# Linear and BlockLinear
# ---------------------------------------------------------------------------------------------

def test_linear_matches_numpy_for_rank2_and_rank3():
    rng = np.random.default_rng(3)
    layer = nets.Linear(5, 3)
    randomize(layer, rng)
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    x2 = rng.standard_normal((4, 5)).astype(np.float32)
    x3 = rng.standard_normal((2, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(layer(f32(x2)).numpy(), x2 @ kernel + bias, rtol=1e-5, atol=1e-6)
    expected = np.einsum('bti,io->bto', x3, kernel) + bias
    np.testing.assert_allclose(layer(f32(x3)).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_linear_outscale_zero_is_zero_init():
    layer = nets.Linear(6, 4, outscale=0.0)
    np.testing.assert_array_equal(layer.kernel.numpy(), np.zeros((6, 4)))
    np.testing.assert_array_equal(layer.bias.numpy(), np.zeros(4))
    x = np.random.default_rng(4).standard_normal((3, 6))
    np.testing.assert_array_equal(layer(f32(x)).numpy(), np.zeros((3, 4)))


def test_linear_init_has_fan_in_variance():
    # Truncated normal rescaled so the std is sqrt(1 / fan_in) = 1 / sqrt(400) = 0.05.
    kernel = nets.Linear(400, 300).kernel.numpy()
    assert abs(kernel.std() - 0.05) < 0.05 * 0.03
    assert np.abs(kernel).max() <= 2 * 0.05 / 0.87962566 + 1e-6    # truncated at two raw stds


def test_block_linear_equals_dense_block_diagonal_matmul():
    rng = np.random.default_rng(5)
    layer = nets.BlockLinear(6, 4, blocks=2)
    assert layer.kernel.shape == (2, 3, 2)
    randomize(layer, rng)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    dense = block_diagonal(layer.kernel.numpy())
    expected = x @ dense + layer.bias.numpy()
    np.testing.assert_allclose(layer(f32(x)).numpy(), expected, rtol=1e-5, atol=1e-6)
    # Block structure: output block 0 does not depend on input block 1.
    x_changed = x.copy()
    x_changed[:, 3:] += 10.0
    out, out_changed = layer(f32(x)).numpy(), layer(f32(x_changed)).numpy()
    np.testing.assert_array_equal(out[:, :2], out_changed[:, :2])
    assert not np.allclose(out[:, 2:], out_changed[:, 2:])


def test_block_linear_init_uses_the_full_input_width_as_fan_in():
    # The Nature release's fan computation for a [G, I/G, O/G] kernel multiplies I/G by G, so
    # every block is initialised with std 1 / sqrt(I) = 1 / sqrt(512), not 1 / sqrt(I/G).
    kernel = nets.BlockLinear(512, 512, blocks=8).kernel.numpy()
    assert abs(kernel.std() - 1 / np.sqrt(512)) < 0.03 / np.sqrt(512)


def test_block_linear_rejects_indivisible_sizes():
    with pytest.raises(ValueError, match='divisible'):
        nets.BlockLinear(7, 4, blocks=2)
    with pytest.raises(ValueError, match='divisible'):
        nets.BlockLinear(6, 5, blocks=2)


# ---------------------------------------------------------------------------------------------
# BlockGRU
# ---------------------------------------------------------------------------------------------

def naive_block_gru(gru, deter, inputs):
    """One step written from the BlockGRU docstring and SPEC.md, per block, in float64."""
    blocks = gru.blocks
    size = deter.shape[-1] // blocks
    proj = []
    for x, linear, norm in zip(inputs, gru.inputs_in, gru.inputs_norm):
        h = x @ linear.kernel.numpy() + linear.bias.numpy()
        proj.append(silu(rms_norm(h, norm.scale.numpy())))
    proj = np.concatenate(proj, -1)                               # shared by every block
    x = np.concatenate(
        [np.concatenate([deter[:, g * size:(g + 1) * size], proj], -1) for g in range(blocks)], -1)
    for layer, norm in zip(gru.hidden_layers, gru.hidden_norms):
        h = x @ block_diagonal(layer.kernel.numpy()) + layer.bias.numpy()
        x = silu(rms_norm(h, norm.scale.numpy()))
    gates = x @ block_diagonal(gru.gates.kernel.numpy()) + gru.gates.bias.numpy()
    # Block g owns gate columns [3 * g * size, 3 * (g + 1) * size): reset, cand, update in turn.
    reset, cand, update = [
        np.concatenate([gates[:, (3 * g + i) * size:(3 * g + i + 1) * size]
                        for g in range(blocks)], -1)
        for i in range(3)]
    reset = sigmoid(reset)
    cand = np.tanh(reset * cand)
    update = sigmoid(update - 1.0)
    return update * cand + (1.0 - update) * deter


@pytest.mark.parametrize('dyn_layers', [0, 1, 2])
def test_block_gru_step_matches_numpy(dyn_layers):
    rng = np.random.default_rng(6 + dyn_layers)
    deter_size, hidden, in_dims, blocks = 8, 3, [8, 6, 2], 2
    gru = nets.BlockGRU(deter_size, hidden, in_dims, blocks, dyn_layers=dyn_layers)
    randomize(gru, rng)
    deter = rng.standard_normal((4, deter_size)).astype(np.float32)
    inputs = [rng.standard_normal((4, d)).astype(np.float32) for d in in_dims]
    out = gru(f32(deter), [f32(x) for x in inputs])
    assert out.shape == (4, deter_size)
    expected = naive_block_gru(gru, deter, inputs)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('dyn_layers', [0, 1, 2])
def test_block_gru_gradients_match_numpy_finite_differences(dyn_layers):
    # The block-major gates and the pre-transposed first layer have hand-written layouts and gradient.
    rng = np.random.default_rng(16 + dyn_layers)
    gru = nets.BlockGRU(8, 3, [8, 6, 2], 2, dyn_layers=dyn_layers)
    randomize(gru, rng)
    deter = rng.standard_normal((4, 8))
    inputs = [rng.standard_normal((4, d)) for d in (8, 6, 2)]
    probe = rng.standard_normal((4, 8))
    with tf.GradientTape() as tape:
        d = tf.constant(deter, tf.float32)
        tape.watch(d)
        loss = tf.reduce_sum(gru(d, [d] + [f32(x) for x in inputs[1:]], gru.arrange(tf.float32)) * probe)
    grads = tape.gradient(loss, [d, gru.gates.kernel])

    def f(deter, kernel):
        saved = gru.gates.kernel.numpy()
        gru.gates.kernel.assign(kernel)
        out = (naive_block_gru(gru, deter, [deter] + inputs[1:]) * probe).sum()
        gru.gates.kernel.assign(saved)
        return out

    eps, kernel = 1e-3, gru.gates.kernel.numpy().astype(np.float64)
    for got, x, at in ((grads[0], deter, lambda v: f(v, kernel)), (grads[1], kernel, lambda v: f(deter, v))):
        idx = tuple(rng.integers(0, s) for s in x.shape)
        up, down = x.copy(), x.copy()
        up[idx] += eps
        down[idx] -= eps
        np.testing.assert_allclose(got.numpy()[idx], (at(up) - at(down)) / (2 * eps), rtol=2e-2, atol=2e-3)


def test_block_gru_keeps_zero_state_at_init():
    # Zero biases at init: all-zero inputs give zero projections, reset 0.5, cand tanh(0) = 0, so
    # new = update * 0 + (1 - update) * 0 = 0.
    gru = nets.BlockGRU(8, 4, [8, 4], blocks=2)
    out = gru(tf.zeros([3, 8]), [tf.zeros([3, 8]), tf.zeros([3, 4])])
    np.testing.assert_array_equal(out.numpy(), np.zeros((3, 8)))


# ---------------------------------------------------------------------------------------------
# Encoder and Decoder
# ---------------------------------------------------------------------------------------------

def obs_space(vector=5, image=(64, 64, 3)):
    space = {}
    if vector:
        space['vector'] = spaces.Box(-np.inf, np.inf, (vector,), np.float32)
    if image:
        space['image'] = spaces.Box(0, 255, image, np.uint8)
    return space


ENC = dict(depth=2, mults=(2, 3, 4, 4), kernel=5, layers=1, units=16, norm='rms', act='silu',
           symlog=True)


def spy_on(layer):
    """Record the first argument of every eager call of `layer`.

    (Keras traces a layer's first call symbolically to build it; those tensors are skipped.)
    """
    seen, call = [], layer.call

    def spy(x, *args, **kwargs):
        if tf.executing_eagerly():
            seen.append(x)
        return call(x, *args, **kwargs)

    layer.call = spy
    return seen


def test_encoder_output_size_and_input_scaling():
    rng = np.random.default_rng(7)
    enc = nets.Encoder(obs_space(), **ENC)
    # vector: MLP units; image: four halvings 64 -> 4, channels depth * mults[-1] = 2 * 4 = 8.
    assert enc.out_dim == 16 + 4 * 4 * 8
    image = rng.integers(0, 256, (2, 3, 64, 64, 3)).astype(np.uint8)
    image[0, 0, 0, 0] = [0, 255, 128]
    vector = (rng.standard_normal((2, 3, 5)) * 100).astype(np.float32)
    first_conv = spy_on(enc.convs[0])
    first_linear = spy_on(enc.mlp.linears[0])
    out = enc({'image': tf.constant(image), 'vector': f32(vector)})
    assert out.shape == (2, 3, 16 + 128)
    assert np.isfinite(out.numpy()).all()
    # The first conv sees every frame (time folded into the batch) as pixel / 255 - 0.5.
    assert len(first_conv) == 1 and len(first_linear) == 1
    conv_in = first_conv[0].numpy()
    assert conv_in.shape == (6, 64, 64, 3)
    np.testing.assert_allclose(conv_in, image.reshape(6, 64, 64, 3) / 255.0 - 0.5, atol=1e-7)
    np.testing.assert_allclose(conv_in[0, 0, 0], [-0.5, 0.5, 128 / 255 - 0.5], atol=1e-7)
    # The vector MLP sees symlog(vector).
    np.testing.assert_allclose(first_linear[0].numpy(), symlog(vector), rtol=1e-6)


def test_encoder_vector_only_is_the_mlp():
    rng = np.random.default_rng(8)
    enc = nets.Encoder(obs_space(image=None), **ENC)
    assert enc.out_dim == 16
    randomize(enc, rng)
    vector = rng.standard_normal((4, 5)).astype(np.float32) * 10
    linear, norm = enc.mlp.linears[0], enc.mlp.norms[0]
    h = symlog(vector) @ linear.kernel.numpy() + linear.bias.numpy()
    expected = silu(rms_norm(h, norm.scale.numpy()))
    np.testing.assert_allclose(enc({'vector': f32(vector)}).numpy(), expected, rtol=1e-4, atol=1e-5)


DEC = dict(depth=2, mults=(2, 3, 4, 4), kernel=5, layers=1, units=16, norm='rms', act='silu',
           minres=4, outscale=1.0)


def test_decoder_image_shape_range_and_mse():
    rng = np.random.default_rng(9)
    dec = nets.Decoder(obs_space(), 12, **DEC)
    feat = rng.standard_normal((2, 3, 12)).astype(np.float32)
    out = dec(f32(feat))
    assert set(out) == {'vector', 'image'}
    image = out['image'].mode().numpy()
    assert image.shape == (2, 3, 64, 64, 3)
    assert image.min() > 0.0 and image.max() < 1.0             # sigmoid output
    target = rng.uniform(0, 1, (2, 3, 64, 64, 3)).astype(np.float32)
    expected = np.sum((image.astype(np.float64) - target) ** 2, axis=(2, 3, 4))
    nll = -out['image'].log_prob(f32(target)).numpy()
    assert nll.shape == (2, 3)
    np.testing.assert_allclose(nll, expected, rtol=1e-5)


def test_decoder_vector_mse_in_symlog_space():
    rng = np.random.default_rng(10)
    dec = nets.Decoder(obs_space(image=None), 12, **DEC)
    randomize(dec, rng)
    feat = rng.standard_normal((2, 3, 12)).astype(np.float32)
    dist = dec(f32(feat))['vector']
    mode = dist.mode().numpy().astype(np.float64)              # symexp of the prediction
    assert mode.shape == (2, 3, 5)
    pred = symlog(mode)
    target = (rng.standard_normal((2, 3, 5)) * 100).astype(np.float32)
    expected = np.sum((pred - symlog(target)) ** 2, -1)
    nll = -dist.log_prob(f32(target)).numpy()
    assert nll.shape == (2, 3)
    np.testing.assert_allclose(nll, expected, rtol=1e-4)
    # Far from a plain MSE on the raw values, which would be ~ 5 * 100^2.
    assert nll.max() < 0.1 * np.sum((mode - target) ** 2, -1).min()


# The Nature projection (bspace 8) on a 24-wide feat = concat(deter 16, stoch 8): 8 deter groups of 2
# rows; depth 4 gives C = 4 * 4 = 16 channels, 2 per group.
BDEC = dict(DEC, depth=4, bspace=8, deter=16)


def naive_block_projection(dec, feat):
    """The Nature release's projection written from SPEC.md with explicit loops, in float64."""
    res, groups = dec.minres, dec.bspace
    chans = dec.proj_norm.scale.shape[0]
    part, rows = chans // groups, 16 // groups                   # channels and deter rows per group
    deter, stoch = feat[:, :16].astype(np.float64), feat[:, 16:].astype(np.float64)
    kernel, bias = dec.proj_deter.kernel.numpy(), dec.proj_deter.bias.numpy()
    h = stoch @ dec.proj_stoch.kernel.numpy() + dec.proj_stoch.bias.numpy()
    h = silu(rms_norm(h, dec.proj_stoch_norm.scale.numpy()))
    flat = h @ dec.proj_stoch_out.kernel.numpy() + dec.proj_stoch_out.bias.numpy()
    out = np.zeros((len(feat), res, res, chans))
    for n in range(len(feat)):
        for i in range(res):
            for j in range(res):
                for c in range(chans):
                    g, k = divmod(c, part)                       # channel c belongs to group g
                    col = (i * res + j) * part + k              # its column inside group g's block
                    block = deter[n, g * rows:(g + 1) * rows] @ kernel[g, :, col]
                    out[n, i, j, c] = block + bias[g * res * res * part + col] + \
                        flat[n, (i * res + j) * chans + c]
    return out


def test_decoder_block_projection_matches_numpy():
    rng = np.random.default_rng(21)
    dec = nets.Decoder(obs_space(vector=None), 24, **BDEC)
    assert dec.proj_deter.kernel.shape == (8, 2, 4 * 4 * 16 // 8)
    assert dec.proj_stoch.kernel.shape == (8, 2 * 16)           # stoch -> 2 * units
    assert dec.proj_stoch_out.kernel.shape == (32, 4 * 4 * 16)
    randomize(dec, rng)
    feat = rng.standard_normal((3, 24)).astype(np.float32)
    np.testing.assert_allclose(dec.project(f32(feat)).numpy(), naive_block_projection(dec, feat),
                               rtol=1e-4, atol=1e-5)


def test_decoder_block_projection_deter_group_g_moves_only_channel_group_g():
    rng = np.random.default_rng(22)
    dec = nets.Decoder(obs_space(vector=None), 24, **BDEC)
    randomize(dec, rng)
    feat = rng.standard_normal((2, 24)).astype(np.float32)
    base = dec.project(f32(feat)).numpy()                       # [2, 4, 4, 16], before the norm
    for g in range(8):
        changed = feat.copy()
        changed[:, 2 * g:2 * g + 2] += 3.0                      # deter group g: rows 2g, 2g + 1
        diff = np.abs(dec.project(f32(changed)).numpy() - base)
        mine = np.zeros(16, bool)
        mine[2 * g:2 * g + 2] = True                            # channel group g: 2 of 16 channels
        assert np.all(diff[..., mine] > 1e-4), g                # every pixel moves in group g ...
        np.testing.assert_array_equal(diff[..., ~mine], 0.0)    # ... and nowhere else
    # The stoch part reaches every channel.
    changed = feat.copy()
    changed[:, 16:] += 3.0
    assert np.all(np.abs(dec.project(f32(changed)).numpy() - base) > 0)


def test_decoder_bspace_zero_is_one_dense_layer_on_feat():
    rng = np.random.default_rng(23)
    dec = nets.Decoder(obs_space(vector=None), 12, **DEC)
    # The names (and so checkpoint paths) of the dense projection.
    assert {n for n in nets.named_weights(dec) if n.startswith('proj')} == \
        {'proj/kernel', 'proj/bias', 'proj_norm/scale'}
    randomize(dec, rng)
    feat = rng.standard_normal((3, 12)).astype(np.float32)
    expected = (feat @ dec.proj.kernel.numpy() + dec.proj.bias.numpy()).reshape(3, 4, 4, 8)
    np.testing.assert_allclose(dec.project(f32(feat)).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_decoder_block_projection_rejects_channels_it_cannot_split():
    with pytest.raises(ValueError, match='bspace'):
        nets.Decoder(obs_space(vector=None), 24, **dict(BDEC, depth=3))   # C = 12, 8 groups


def naive_upsample_conv(x, kernel, bias):
    """Nearest x2 upsampling, then a zero-padded 'same' convolution, by explicit loops."""
    n, h, w, cin = x.shape
    k, cout = kernel.shape[0], kernel.shape[-1]
    r = k // 2
    up = np.zeros((n, 2 * h + 2 * r, 2 * w + 2 * r, cin))
    up[:, r:r + 2 * h, r:r + 2 * w] = x.repeat(2, 1).repeat(2, 2)
    out = np.zeros((n, 2 * h, 2 * w, cout))
    for i in range(2 * h):
        for j in range(2 * w):
            patch = up[:, i:i + k, j:j + k]                     # [n, k, k, cin]
            out[:, i, j] = np.einsum('nabc,abco->no', patch, kernel) + bias
    return out


def test_upsample_taps_for_kernel_5_by_hand():
    # Even output rows 2i read upsampled rows 2i-2 .. 2i+2 = input rows i-1, i-1, i, i, i+1;
    # odd rows 2i+1 read 2i-1 .. 2i+3 = input rows i-1, i, i, i+1, i+1.
    taps = nets.upsample_taps(5)
    np.testing.assert_array_equal(taps[0], [[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]])
    np.testing.assert_array_equal(taps[1], [[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 1]])
    with pytest.raises(ValueError, match='odd'):
        nets.upsample_taps(4)


@pytest.mark.parametrize('kernel', [3, 5, 7])
def test_upsample_conv_equals_upsampling_then_convolution(kernel):
    rng = np.random.default_rng(kernel)
    layer = nets.UpsampleConv(3, 4, kernel, nets.initializer())
    layer.bias.assign(rng.standard_normal(4).astype(np.float32))
    x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    out = layer(f32(x)).numpy()
    assert out.shape == (2, 10, 12, 4)
    expected = naive_upsample_conv(x.astype(np.float64), layer.kernel.numpy().astype(np.float64),
                                   layer.bias.numpy())
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_upsample_conv_gradients_match_the_plain_formulation():
    rng = np.random.default_rng(3)
    layer = nets.UpsampleConv(3, 2, 5, nets.initializer())
    x = f32(rng.standard_normal((2, 4, 4, 3)))
    target = f32(rng.standard_normal((2, 8, 8, 2)))

    def plain():
        up = tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)
        return tf.nn.conv2d(up, layer.kernel, 1, 'SAME') + layer.bias

    grads = []
    for fn in (lambda: layer(x), plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum((fn() - target) ** 2)
        grads.append(tape.gradient(loss, [x, layer.kernel, layer.bias]))
    for fast, slow in zip(*grads):
        np.testing.assert_allclose(fast.numpy(), slow.numpy(), rtol=1e-4, atol=1e-4)


def test_decoder_rejects_image_sizes_it_cannot_reach():
    with pytest.raises(ValueError, match='square'):
        nets.Decoder(obs_space(image=(48, 64, 3)), 12, **DEC)


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------

def head(kind, out_dim=1, **kw):
    return nets.Head(kind, 8, out_dim, layers=1, units=16, **kw)


def set_output(layer, bias):
    """Zero the output kernel and set its bias: the distribution parameters become `bias`."""
    layer.out.kernel.assign(np.zeros(layer.out.kernel.shape, np.float32))
    layer.out.bias.assign(np.asarray(bias, np.float32))


FEAT = np.random.default_rng(11).standard_normal((5, 8)).astype(np.float32)


def test_twohot_head_with_zero_output_layer_predicts_exactly_zero():
    h = head('twohot', outscale=0.0)
    dist = h(f32(FEAT))
    np.testing.assert_array_equal(dist.mean().numpy(), np.zeros(5))
    # Uniform over 255 bins, and 0 is the middle bin: log p(0) = log(1 / 255).
    np.testing.assert_allclose(dist.log_prob(f32(np.zeros(5))).numpy(), np.full(5, -np.log(255.0)),
                               rtol=1e-6)


def test_normal_head_splits_mean_then_std():
    h = head('normal', 3)
    m, s = np.array([0.5, -1.0, 3.0]), np.array([0.0, -3.0, 2.0])
    set_output(h, np.concatenate([m, s]))
    dist = h(f32(FEAT))
    np.testing.assert_allclose(dist.mean().numpy(), np.tile(np.tanh(m), (5, 1)), rtol=1e-6)
    std = (1.0 - 0.1) * sigmoid(s + 2.0) + 0.1
    np.testing.assert_allclose(dist.stddev().numpy(), np.tile(std, (5, 1)), rtol=1e-6)
    sample = dist.sample().numpy()
    assert sample.shape == (5, 3)
    assert dist.log_prob(f32(sample)).shape == (5,)


def test_normal_head_default_init_bounds():
    dist = head('normal', 4)(f32(FEAT))
    assert np.all(np.abs(dist.mean().numpy()) <= 1.0)
    assert np.all((dist.stddev().numpy() >= 0.1) & (dist.stddev().numpy() <= 1.0))


def test_onehot_head_samples_one_hot():
    h = head('onehot', 4)
    set_output(h, [0.0, 1.0, 5.0, -2.0])
    dist = h(f32(FEAT))
    sample = dist.sample().numpy()
    assert sample.shape == (5, 4)
    np.testing.assert_allclose(np.sort(sample, -1), np.tile([0, 0, 0, 1.0], (5, 1)), atol=1e-6)
    probs = np.exp([0.0, 1.0, 5.0, -2.0]) / np.exp([0.0, 1.0, 5.0, -2.0]).sum()
    np.testing.assert_allclose(dist.probs_parameter().numpy(), np.tile(probs, (5, 1)), rtol=1e-5)
    np.testing.assert_allclose(dist.mode().numpy(), np.tile([0, 0, 1.0, 0], (5, 1)), atol=1e-6)


def test_onehot_head_unimix_floor():
    h = head('onehot', 4, unimix=0.01)
    set_output(h, [0.0, 0.0, 50.0, 0.0])
    probs = h(f32(FEAT)).probs_parameter().numpy()
    # 0.99 * softmax + 0.01 / 4: the three unlikely classes sit at the floor 0.0025.
    np.testing.assert_allclose(probs[:, [0, 1, 3]], np.full((5, 3), 0.0025), rtol=1e-4)


def test_binary_head():
    h = head('binary')
    set_output(h, [0.7])
    dist = h(f32(FEAT))
    np.testing.assert_allclose(dist.mean().numpy(), np.full(5, sigmoid(0.7)), rtol=1e-6)
    sample = dist.sample().numpy()
    assert sample.shape == (5,) and set(np.unique(sample)) <= {0.0, 1.0}
    np.testing.assert_allclose(dist.log_prob(f32(np.ones(5))).numpy(),
                               np.full(5, np.log(sigmoid(0.7))), rtol=1e-6)


def test_head_rejects_unknown_kind():
    with pytest.raises(ValueError, match='head kind'):
        head('gaussian')


@pytest.mark.parametrize('make, message', [
    (lambda: head('gaussian'), "head kind 'gaussian' is not one of ['binary', 'mse', 'normal', 'onehot', "
                               "'tanh_normal', 'trunc_normal', 'twohot', 'unit_normal']"),
    (lambda: nets.activation('gelu'), "activation 'gelu' is not one of ['elu', 'none', 'relu', 'silu', "
                                      "'tanh']"),
    (lambda: nets.Norm(3, 'batch'), "norm 'batch' is not one of ['layer', 'none', 'rms']"),
    (lambda: nets.TransposedDecoder(obs_space(), 12, 2, (5, 5, 6, 6), 1, 8, 'layer', 'elu', 'huber'),
     "decoder.vector_dist 'huber' is not one of ['mse', 'normal']"),
], ids=['head', 'activation', 'norm', 'vector_dist'])
def test_unknown_names_are_refused_with_the_allowed_ones(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert str(error.value) == message


def test_gru_update_by_hand():
    # reset 0 -> r = 1/2, cand 2 -> c = tanh(1), update 1 -> u = sigmoid(0) = 1/2.
    out = nets.gru_update(f32([0.0]), f32([2.0]), f32([1.0]), f32([3.0]))
    np.testing.assert_allclose(out.numpy(), [0.5 * np.tanh(1.0) + 0.5 * 3.0], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# named_weights
# ---------------------------------------------------------------------------------------------

def test_named_weights_paths_of_a_head():
    names = nets.named_weights(head('binary'))
    assert sorted(names) == ['mlp/linears0/bias', 'mlp/linears0/kernel', 'mlp/norms0/scale',
                             'out/bias', 'out/kernel']


@pytest.mark.parametrize('make', [
    lambda: nets.BlockGRU(8, 4, [8, 6, 2], blocks=2, dyn_layers=2),
    lambda: nets.Encoder(obs_space(), **ENC),
    lambda: nets.Decoder(obs_space(), 12, **DEC),
    lambda: nets.Decoder(obs_space(), 24, **BDEC),
    lambda: nets.MLP(4, 3, 8, norm='layer'),
], ids=['gru', 'encoder', 'decoder', 'block-decoder', 'mlp'])
def test_named_weights_cover_every_weight_once(make):
    layer = make()
    names = nets.named_weights(layer, 'root/')
    assert all(name.startswith('root/') for name in names)
    assert len(names) == len(layer.weights)
    assert {id(v) for v in names.values()} == {id(v) for v in layer.weights}
    assert all(isinstance(v, keras.Variable) for v in names.values())
