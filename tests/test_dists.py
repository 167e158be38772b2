"""dreamer_tf.dists against hand arithmetic and naive numpy formulas from SPEC.md."""

import math

import numpy as np
import pytest
import tensorflow as tf

from dreamer_tf import dists, ops
from helpers import f32, np_log_softmax

BINS = dists.symexp_bins(255)
BINS64 = BINS.astype(np.float64)
STEP = 40.0 / 254.0                     # spacing of linspace(-20, 20, 255)


def np_symexp(y):
    y = np.asarray(y, np.float64)
    return np.sign(y) * np.expm1(np.abs(y))


def np_symlog(x):
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.log1p(np.abs(x))


def naive_twohot(x, bins):
    """Linear scan over the bins for the raw value x (no symlog): weights of its two neighbours."""
    k = len(bins)
    out = np.zeros(k)
    if x <= bins[0]:
        out[0] = 1.0
        return out
    if x >= bins[-1]:
        out[-1] = 1.0
        return out
    for i in range(k - 1):
        if bins[i] <= x < bins[i + 1]:
            out[i] = (bins[i + 1] - x) / (bins[i + 1] - bins[i])
            out[i + 1] = (x - bins[i]) / (bins[i + 1] - bins[i])
            return out
    raise AssertionError('unreachable')


# ---------------------------------------------------------------------------------------------
# symexp bins and two-hot
# ---------------------------------------------------------------------------------------------

def test_symexp_bins_values():
    assert BINS.shape == (255,) and BINS.dtype == np.float32
    expected = np_symexp(np.linspace(-20.0, 20.0, 255))
    np.testing.assert_allclose(BINS, expected.astype(np.float32), rtol=2e-7, atol=0)
    assert BINS[127] == 0.0
    np.testing.assert_array_equal(BINS, -BINS[::-1])      # exact antisymmetry, bit for bit
    assert np.all(np.diff(BINS64) > 0)
    # Hand values: the end bins are +-(e^20 - 1) = +-485165194.4; bin 128 = e^(40/254) - 1.
    np.testing.assert_allclose(BINS[-1], math.exp(20.0) - 1.0, rtol=1e-7)
    np.testing.assert_allclose(BINS[128], math.exp(STEP) - 1.0, rtol=1e-6)


def test_symexp_bins_other_sizes():
    even = dists.symexp_bins(4, -2.0, 2.0)
    # linspace(-2, 2, 4) = -2, -2/3, 2/3, 2 -> -(e^2 - 1), -(e^(2/3) - 1), ...
    expected = [-(math.exp(2) - 1), -(math.exp(2 / 3) - 1), math.exp(2 / 3) - 1, math.exp(2) - 1]
    np.testing.assert_allclose(even, expected, rtol=1e-6)
    odd = dists.symexp_bins(5, -1.0, 1.0)
    # linspace(-1, 1, 5) = -1, -0.5, 0, 0.5, 1
    expected = [-(math.e - 1), -(math.exp(0.5) - 1), 0.0, math.exp(0.5) - 1, math.e - 1]
    np.testing.assert_allclose(odd, expected, rtol=1e-6)
    assert odd[2] == 0.0


@pytest.mark.parametrize('j', [0, 1, 50, 126, 127, 128, 129, 200, 253, 254])
def test_twohot_on_a_bin_is_one_hot(j):
    enc = dists.twohot_encode(f32(BINS[j]), BINS).numpy()
    expected = np.zeros(255)
    expected[j] = 1.0
    np.testing.assert_allclose(enc, expected, atol=1e-7)


# (value, k): b_k <= value < b_{k+1}; k = 127 + floor(symlog(value) / (40/254)):
#   0.5  -> symlog 0.405465 / 0.157480 = 2.575  -> k = 129
#   -3   -> symlog -1.386294 / 0.157480 = -8.803 -> k = 118
#   100  -> symlog 4.615121 / 0.157480 = 29.306  -> k = 156
#   0.01 -> symlog 0.009950 / 0.157480 = 0.063   -> k = 127
#   -1e6 -> symlog -13.815512 / 0.157480 = -87.73 -> k = 39
@pytest.mark.parametrize('x, k', [(0.5, 129), (-3.0, 118), (100.0, 156), (0.01, 127),
                                  (-1e6, 39)])
def test_twohot_between_bins_interpolates_raw_value(x, k):
    b0, b1 = BINS64[k], BINS64[k + 1]
    assert b0 <= x < b1                                   # the table's k is right
    w_lo = (b1 - x) / (b1 - b0)
    w_hi = (x - b0) / (b1 - b0)
    enc = dists.twohot_encode(f32(x), BINS).numpy()
    expected = np.zeros(255)
    expected[k], expected[k + 1] = w_lo, w_hi
    np.testing.assert_allclose(enc, expected, atol=2e-6)
    # Interpolating in symlog space instead would give visibly different weights.
    s_hi = (np_symlog(x) - np_symlog(b0)) / (np_symlog(b1) - np_symlog(b0))
    if abs(s_hi - w_hi) > 1e-3:
        assert abs(enc[k + 1] - s_hi) > 1e-3


def test_twohot_hand_value_half():
    # 0.5 sits between b_129 = e^(2*40/254) - 1 = 0.370205 and b_130 = e^(3*40/254) - 1 = 0.603904:
    # weight on b_129 = (0.603904 - 0.5) / (0.603904 - 0.370205) = 0.103904 / 0.233699 = 0.444608
    # weight on b_130 = (0.5 - 0.370205) / 0.233699 = 0.129795 / 0.233699 = 0.555392
    enc = dists.twohot_encode(f32(0.5), BINS).numpy()
    np.testing.assert_allclose(BINS[129], 0.370205, atol=1e-6)
    np.testing.assert_allclose(BINS[130], 0.603904, atol=1e-6)
    np.testing.assert_allclose([enc[129], enc[130]], [0.444608, 0.555392], atol=3e-6)


@pytest.mark.parametrize('x, j', [(1e9, 254), (-1e9, 0), (4.9e8, 254), (-4.9e8, 0),
                                  (np.float32(3e38), 254)])
def test_twohot_beyond_range_goes_to_end_bin(x, j):
    enc = dists.twohot_encode(f32(x), BINS).numpy()
    expected = np.zeros(255)
    expected[j] = 1.0
    np.testing.assert_allclose(enc, expected, atol=1e-7)


def test_twohot_sums_to_one_and_decodes():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=50), rng.normal(size=50) * 1e3,
                        np_symexp(rng.uniform(-19.9, 19.9, size=50)), [0.0, -0.0, 1.0, -1.0]])
    x = x.astype(np.float32).reshape(2, 77)
    enc = dists.twohot_encode(f32(x), BINS).numpy().astype(np.float64)
    assert enc.shape == (2, 77, 255)
    np.testing.assert_allclose(enc.sum(-1), 1.0, atol=1e-6)
    assert np.all(enc >= 0) and np.all((enc > 0).sum(-1) <= 2)
    np.testing.assert_allclose((enc * BINS64).sum(-1), x, rtol=1e-5, atol=1e-6)
    for xi, ei in zip(x.reshape(-1)[:20], enc.reshape(-1, 255)[:20]):
        np.testing.assert_allclose(ei, naive_twohot(float(xi), BINS64), atol=2e-6)


# ---------------------------------------------------------------------------------------------
# SymexpTwoHot
# ---------------------------------------------------------------------------------------------

def test_symexp_twohot_log_prob_is_naive_cross_entropy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 4, 255)) * 2
    target = np.array([[0.0, 0.5, -3.0, 100.0], [1e4, -1e4, 7.0, 1e9],
                       [-0.25, 2.0, 33.0, -1e9]])
    dist = dists.SymexpTwoHot(f32(logits), BINS)
    assert dist.batch_shape == (3, 4) and dist.event_shape == ()
    logsm = np_log_softmax(logits.astype(np.float32))
    expected = np.zeros((3, 4))
    for i in range(3):
        for j in range(4):
            expected[i, j] = np.sum(naive_twohot(np.float32(target[i, j]), BINS64) * logsm[i, j])
    np.testing.assert_allclose(dist.log_prob(f32(target)).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_symexp_twohot_gradient_is_softmax_minus_target():
    rng = np.random.default_rng(2)
    logits = f32(rng.normal(size=(2, 255)))
    target = f32([0.5, -3.0])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([logits, target])
        nll = -tf.reduce_sum(dists.SymexpTwoHot(logits, BINS).log_prob(target))
    # d(-sum_k y_k log softmax_k) / d logit_j = softmax_j - y_j (since sum_k y_k = 1)
    probs = np.exp(np_log_softmax(logits.numpy()))
    expected = probs - np.stack([naive_twohot(0.5, BINS64), naive_twohot(-3.0, BINS64)])
    np.testing.assert_allclose(tape.gradient(nll, logits).numpy(), expected, atol=2e-6)
    grad_t = tape.gradient(nll, target)
    assert grad_t is None or not np.any(grad_t.numpy())


def test_symexp_twohot_mean():
    rng = np.random.default_rng(3)
    centers = np.array([127.0, 140.0, 100.0, 160.0])
    idx = np.arange(255)
    logits = -0.5 * ((idx[None] - centers[:, None]) / 3.0) ** 2 + rng.normal(size=(4, 255)) * 0.1
    dist = dists.SymexpTwoHot(f32(logits), BINS)
    probs = np.exp(np_log_softmax(logits.astype(np.float32)))
    expected = (probs * BINS64).sum(-1)
    scale = (probs * np.abs(BINS64)).sum(-1)       # float32 rounding is relative to this
    np.testing.assert_array_less(np.abs(dist.mean().numpy() - expected), 1e-5 * scale + 1e-6)
    np.testing.assert_array_equal(dist.mode().numpy(), dist.mean().numpy())


def test_symexp_twohot_mean_of_one_hot_logits_is_that_bin():
    logits = np.full((3, 255), -1e4, np.float32)
    for row, j in enumerate([0, 130, 254]):
        logits[row, j] = 0.0
    np.testing.assert_allclose(dists.SymexpTwoHot(f32(logits), BINS).mean().numpy(),
                               BINS[[0, 130, 254]], rtol=1e-6)


@pytest.mark.parametrize('mode', ['eager', 'function', 'xla'])
@pytest.mark.parametrize('num_bins', [255, 41, 511, 1001])
def test_symexp_twohot_zero_logits_predict_exactly_zero(mode, num_bins):
    # Uniform probabilities over exactly antisymmetric bins: the symmetric sum is 0 to the bit.
    # (A plain reduce_sum of p * b leaves float32 residue of 0.1 to 1.0 for 41, 511 or 1001 bins.)
    bins = BINS if num_bins == 255 else dists.symexp_bins(num_bins)
    np.testing.assert_array_equal(bins, -bins[::-1])

    def fn(logits):
        return dists.SymexpTwoHot(logits, bins).mean()

    if mode != 'eager':
        fn = tf.function(fn, jit_compile=(mode == 'xla'))
    mean = fn(tf.zeros([5, 7, num_bins])).numpy()
    assert mean.shape == (5, 7)
    assert np.all(mean == 0.0)


# ---------------------------------------------------------------------------------------------
# unimix and OneHotDist
# ---------------------------------------------------------------------------------------------

def test_unimix_by_hand_k4():
    logits = np.log([0.1, 0.2, 0.3, 0.4]).astype(np.float32) + 5.0   # softmax = 0.1 .. 0.4
    probs = np.exp(dists.unimix_logits(f32(logits), 0.01).numpy())
    # 0.99 * p + 0.01 / 4: 0.099 + 0.0025 = 0.1015, 0.198 + 0.0025 = 0.2005,
    #                      0.297 + 0.0025 = 0.2995, 0.396 + 0.0025 = 0.3985
    np.testing.assert_allclose(probs, [0.1015, 0.2005, 0.2995, 0.3985], rtol=1e-5)
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)


def test_unimix_floor_and_identity():
    logits = f32([[0.0, 0.0, 0.0, -1e9], [50.0, -50.0, -50.0, -50.0]])
    probs = np.exp(dists.unimix_logits(logits, 0.01).numpy())
    # softmax row 0 = 1/3, 1/3, 1/3, 0 -> 0.99/3 + 0.0025 = 0.3325 and 0.0025
    np.testing.assert_allclose(probs[0], [0.3325, 0.3325, 0.3325, 0.0025], rtol=1e-5)
    # row 1 is (almost) one-hot -> 0.9925 and 0.0025 (the floor)
    np.testing.assert_allclose(probs[1], [0.9925, 0.0025, 0.0025, 0.0025], rtol=1e-5)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    # unimix 0 leaves the logits as they are
    np.testing.assert_array_equal(dists.unimix_logits(logits, 0.0).numpy(), logits.numpy())


def test_onehot_dist_mixes_once():
    raw = f32(np.log([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]]))
    dist = dists.OneHotDist(raw, unimix=0.01)
    expected = [[0.1015, 0.2005, 0.2995, 0.3985], [0.25, 0.25, 0.25, 0.25]]
    np.testing.assert_allclose(dist.probs_parameter().numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(dist[0].probs_parameter().numpy(), expected[0], rtol=1e-5)
    np.testing.assert_allclose(dists.OneHotDist(dist.logits).probs_parameter().numpy(), expected,
                               rtol=1e-5)


def check_one_hot_frequencies(sample, probs):
    np.testing.assert_allclose(sample, np.round(sample), atol=1e-6)   # (one_hot + p) - p
    sample = np.round(sample).reshape(-1, len(probs))
    assert set(np.unique(sample)) <= {0.0, 1.0}
    np.testing.assert_array_equal(sample.sum(-1), 1.0)
    # Frequencies within ~5 standard errors (sqrt(0.25 / 4000) = 0.008).
    np.testing.assert_allclose(sample.mean(0), probs, atol=0.04)


@pytest.mark.parametrize('seed', [None, (7, 0)])
def test_onehot_dist_samples_are_one_hot_with_right_frequencies(seed):
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    dist = dists.OneHotDist(f32(np.tile(np.log(probs), (4000, 1))))
    sample = dist.sample(seed=seed).numpy()
    assert sample.shape == (4000, 4) and sample.dtype == np.float32
    check_one_hot_frequencies(sample, probs)


def test_onehot_dist_sample_shape():
    probs = np.array([0.5, 0.0, 0.25, 0.25])
    dist = dists.OneHotDist(f32(np.log(np.tile(probs, (2, 1)) + 1e-30)))   # batch [2]
    sample = dist.sample([1000, 2], seed=(1, 2)).numpy()
    assert sample.shape == (1000, 2, 2, 4)
    check_one_hot_frequencies(sample, probs)
    assert not np.any(np.round(sample)[..., 1])                          # p = 0 never drawn
    # tf.function with a fixed stateless seed is deterministic.
    fn = tf.function(lambda: dist.sample([3], seed=(5, 6)))
    np.testing.assert_array_equal(fn().numpy(), fn().numpy())


@pytest.mark.parametrize('mode', ['eager', 'function'])
def test_onehot_dist_sample_accepts_int_sample_shape(mode):
    # tfp's Distribution.sample contract: sample_shape may be a plain int.
    dist = dists.OneHotDist(f32(np.log([[0.1, 0.2, 0.3, 0.4]] * 2)))
    def fn():
        return dist.sample(1000, seed=(5, 6))
    if mode == 'function':
        fn = tf.function(fn)
    sample = fn().numpy()
    assert sample.shape == (1000, 2, 4)
    check_one_hot_frequencies(sample, np.array([0.1, 0.2, 0.3, 0.4]))


def test_onehot_dist_sample_accepts_int_seed():
    # tfp's Distribution.sample contract: `seed` may be a Python int (see tfp.random.sanitize_seed).
    dist = dists.OneHotDist(f32(np.log([[0.1, 0.2, 0.3, 0.4]] * 4000)))
    check_one_hot_frequencies(dist.sample(seed=7).numpy(), np.array([0.1, 0.2, 0.3, 0.4]))


@pytest.mark.parametrize('unimix', [0.0, 0.01])
@pytest.mark.parametrize('method', ['sample', 'mode'])
def test_onehot_dist_straight_through_gradient(unimix, method):
    rng = np.random.default_rng(4)
    logits = f32(rng.normal(size=(3, 2, 5)))
    w = rng.normal(size=(3, 2, 5))
    with tf.GradientTape() as tape:
        tape.watch(logits)
        dist = dists.OneHotDist(logits, unimix=unimix)
        out = getattr(dist, method)() if method == 'mode' else dist.sample(seed=(3, 4))
        loss = tf.reduce_sum(out * f32(w))
    # Forward value is (one_hot + p) - p: one-hot up to one float32 rounding of 1 + p.
    vals = out.numpy()
    np.testing.assert_allclose(vals, np.round(vals), atol=1e-6)
    np.testing.assert_allclose(np.round(vals).sum(-1), 1.0)
    if method == 'mode':
        np.testing.assert_array_equal(np.round(vals).argmax(-1), logits.numpy().argmax(-1))
    # d(sum_i w_i p_i)/d l_j with p = (1 - u) softmax(l) + u / K:
    #   (1 - u) * sum_i w_i p_i (delta_ij - p_j) = (1 - u) * p_j (w_j - sum_i w_i p_i)
    p = np.exp(np_log_softmax(logits.numpy()))
    expected = (1.0 - unimix) * p * (w - (w * p).sum(-1, keepdims=True))
    np.testing.assert_allclose(tape.gradient(loss, logits).numpy(), expected, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# bounded_normal
# ---------------------------------------------------------------------------------------------

def test_bounded_normal_std_by_hand_and_bounds():
    # s = 0: sigmoid(2) = 1 / (1 + e^-2) = 0.8807970780;
    # std = 0.9 * 0.8807970780 + 0.1 = 0.8927173702
    dist = dists.bounded_normal(f32([[0.0]]), f32([[0.0]]))
    np.testing.assert_allclose(dist.stddev().numpy(), [[0.8927173702]], rtol=1e-6)
    # s = -2: sigmoid(0) = 0.5 -> 0.9 * 0.5 + 0.1 = 0.55
    np.testing.assert_allclose(dists.bounded_normal(f32([[0.0]]), f32([[-2.0]])).stddev().numpy(),
                               [[0.55]], rtol=1e-6)
    s = np.concatenate([[-1e9, -100.0], np.linspace(-20, 20, 41), [100.0, 1e9]]).astype(np.float32)
    std = dists.bounded_normal(tf.zeros([1, len(s)]), f32(s[None])).stddev().numpy()[0]
    assert np.all(std >= 0.1 - 1e-7) and np.all(std <= 1.0 + 1e-7)
    assert np.all(np.diff(std) >= 0)
    np.testing.assert_allclose([std[0], std[-1]], [0.1, 1.0], rtol=1e-6)


def test_bounded_normal_mean_log_prob_entropy():
    rng = np.random.default_rng(5)
    m = rng.normal(size=(4, 3)) * 2
    s = rng.normal(size=(4, 3))
    a = rng.uniform(-1, 1, size=(4, 3))
    dist = dists.bounded_normal(f32(m), f32(s))
    assert dist.batch_shape == (4,) and dist.event_shape == (3,)
    m32, s32 = m.astype(np.float32).astype(np.float64), s.astype(np.float32).astype(np.float64)
    mu = np.tanh(m32)
    std = 0.9 / (1.0 + np.exp(-(s32 + 2.0))) + 0.1
    np.testing.assert_allclose(dist.mean().numpy(), mu, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dist.stddev().numpy(), std, rtol=1e-6)
    a32 = a.astype(np.float32).astype(np.float64)
    logp = (-0.5 * ((a32 - mu) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(-1)
    np.testing.assert_allclose(dist.log_prob(f32(a)).numpy(), logp, rtol=1e-5, atol=1e-5)
    ent = (0.5 * np.log(2 * np.pi * np.e * std ** 2)).sum(-1)
    np.testing.assert_allclose(dist.entropy().numpy(), ent, rtol=1e-5, atol=1e-5)


def test_bounded_normal_custom_bounds():
    # minstd 0.2, maxstd 2: s = -2 -> 1.8 * 0.5 + 0.2 = 1.1
    dist = dists.bounded_normal(f32([[1.0]]), f32([[-2.0]]), minstd=0.2, maxstd=2.0)
    np.testing.assert_allclose(dist.stddev().numpy(), [[1.1]], rtol=1e-6)
    np.testing.assert_allclose(dist.mean().numpy(), [[math.tanh(1.0)]], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# bernoulli
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('logit', [-3.0, 0.0, 0.7, 4.0])
@pytest.mark.parametrize('target', [0.997, 1.0, 0.0, 1.0 - 1.0 / 333.0])
def test_bernoulli_soft_target_cross_entropy(logit, target):
    p = 1.0 / (1.0 + math.exp(-logit))
    expected = -(target * math.log(p) + (1.0 - target) * math.log(1.0 - p))
    dist = dists.bernoulli(f32([logit]))
    np.testing.assert_allclose(-dist.log_prob(f32([target])).numpy(), [expected], rtol=1e-5)
    np.testing.assert_allclose(dist.mean().numpy(), [p], rtol=1e-6)


def test_bernoulli_hand_value():
    # logit 0 -> p = 0.5 -> -(t ln 0.5 + (1 - t) ln 0.5) = ln 2 for any target
    dist = dists.bernoulli(tf.zeros([2, 3]))
    assert dist.batch_shape == (2, 3) and dist.event_shape == ()
    np.testing.assert_allclose(-dist.log_prob(tf.fill([2, 3], 0.997)).numpy(), math.log(2.0),
                               rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# MSEDist
# ---------------------------------------------------------------------------------------------

def test_mse_symlog_by_hand():
    pred = f32([[1.0, 0.0, -1.0]])
    x = f32([[math.e - 1.0, 0.0, 0.0]])
    dist = dists.MSEDist(pred, 1, transform='symlog')
    # (1 - symlog(e - 1))^2 + (0 - 0)^2 + (-1 - 0)^2 = 0 + 0 + 1 = 1
    np.testing.assert_allclose(-dist.log_prob(x).numpy(), [1.0], rtol=1e-6)
    # mode = symexp(pred) = e - 1, 0, -(e - 1)
    np.testing.assert_allclose(dist.mode().numpy(), [[math.e - 1, 0.0, -(math.e - 1)]], rtol=1e-6)


def test_mse_symlog_matches_naive():
    rng = np.random.default_rng(6)
    pred = rng.normal(size=(2, 5, 4)) * 3
    x = rng.normal(size=(2, 5, 4)) * 100
    dist = dists.MSEDist(f32(pred), 1, transform='symlog')
    assert dist.batch_shape == (2, 5) and dist.event_shape == (4,)
    p32, x32 = pred.astype(np.float32).astype(np.float64), x.astype(np.float32).astype(np.float64)
    expected = ((p32 - np_symlog(x32)) ** 2).sum(-1)
    np.testing.assert_allclose(-dist.log_prob(f32(x)).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(dist.mode().numpy(), np_symexp(p32), rtol=1e-5)
    np.testing.assert_allclose(dist.mean().numpy(), np_symexp(p32), rtol=1e-5)


def test_mse_image_sums_over_hwc():
    rng = np.random.default_rng(7)
    pred = rng.uniform(size=(2, 3, 8, 8, 3))
    x = rng.uniform(size=(2, 3, 8, 8, 3))
    dist = dists.MSEDist(f32(pred), 3)
    assert dist.batch_shape == (2, 3) and dist.event_shape == (8, 8, 3)
    p32, x32 = pred.astype(np.float32).astype(np.float64), x.astype(np.float32).astype(np.float64)
    expected = np.zeros((2, 3))
    for b in range(2):
        for t in range(3):
            expected[b, t] = sum((p32[b, t, h, w, c] - x32[b, t, h, w, c]) ** 2
                                 for h in range(8) for w in range(8) for c in range(3))
    np.testing.assert_allclose(-dist.log_prob(f32(x)).numpy(), expected, rtol=1e-5)
    np.testing.assert_array_equal(dist.mode().numpy(), pred.astype(np.float32))
    # Hand value: every pixel off by 0.5 -> 8 * 8 * 3 * 0.25 = 48 per image.
    flat = dists.MSEDist(tf.fill([1, 8, 8, 3], 0.5), 3)
    np.testing.assert_allclose(-flat.log_prob(tf.zeros([1, 8, 8, 3])).numpy(), [48.0], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Samples drawn from per-row keys
# ---------------------------------------------------------------------------------------------

def test_keyed_onehot_sample_frequencies_and_split_invariance():
    probs = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    n = 20000
    dist = dists.OneHotDist(tf.math.log(tf.tile(probs[None, None], [n, 1, 1])))
    keys = tf.range(n, dtype=tf.int64)
    sample = dists.keyed_sample(dist, keys).numpy()                # [n, 1, 4], one-hot forward
    assert sample.shape == (n, 1, 4)
    freq = sample[:, 0].mean(0)
    np.testing.assert_allclose(freq, probs, atol=4 * np.sqrt(0.25 / n))
    half = dists.OneHotDist(tf.math.log(tf.tile(probs[None, None], [10, 1, 1])))
    np.testing.assert_array_equal(dists.keyed_sample(half, keys[5:15]).numpy(), sample[5:15])


def test_keyed_onehot_sample_is_the_inverse_cdf_of_the_keyed_uniform():
    dist = dists.OneHotDist(tf.math.log(tf.constant([[[0.5, 0.25, 0.25]]])))
    key = tf.constant([42], tf.int64)
    u = float(ops.keyed_uniform(key, [1, 1]).numpy()[0, 0, 0])
    expected = 0 if u <= 0.5 else (1 if u <= 0.75 else 2)
    assert int(np.argmax(dists.keyed_sample(dist, key).numpy()[0, 0])) == expected


def test_keyed_normal_sample_moments_and_gradient():
    n = 20000
    mean = tf.Variable(tf.fill([n, 2], 0.3))
    std_raw = tf.zeros([n, 2])
    with tf.GradientTape() as tape:
        dist = dists.bounded_normal(mean, std_raw)
        sample = dists.keyed_sample(dist, tf.range(n, dtype=tf.int64))
        total = tf.reduce_sum(sample)
    x = sample.numpy()
    std = 0.9 * (1 / (1 + np.exp(-2.0))) + 0.1
    np.testing.assert_allclose(x.mean(0), np.tanh(0.3), atol=4 * std / np.sqrt(n))
    np.testing.assert_allclose(x.std(0), std, rtol=0.03)
    # Reparameterised: d sample / d mean = d tanh(mean) / d mean.
    np.testing.assert_allclose(tape.gradient(total, mean).numpy(), 1 - np.tanh(0.3) ** 2, rtol=1e-5)


def test_keyed_sample_rejects_other_distributions():
    with pytest.raises(TypeError, match='OneHotDist'):
        dists.keyed_sample(dists.bernoulli(tf.zeros([2])), tf.constant([1, 2], tf.int64))
