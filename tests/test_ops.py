"""dreamer_tf.ops against hand arithmetic, naive loops written from SPEC.md, and properties."""

import math

import numpy as np
import pytest
import tensorflow as tf

from dreamer_tf import ops
from helpers import f32, naive_lambda_return

E = math.e


# ---------------------------------------------------------------------------------------------
# symlog / symexp
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('x, expected', [
    (0.0, 0.0),
    (E - 1.0, 1.0),                 # ln(1 + e - 1) = ln e = 1
    (-(E - 1.0), -1.0),
    (-(E ** 2 - 1.0), -2.0),        # -ln(1 + e^2 - 1) = -2
    (E ** 3 - 1.0, 3.0),
    (1.0, math.log(2.0)),           # ln 2 = 0.693147...
    (-0.5, -math.log(1.5)),
])
def test_symlog_by_hand(x, expected):
    np.testing.assert_allclose(ops.symlog(f32(x)).numpy(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('y, expected', [
    (0.0, 0.0),
    (1.0, E - 1.0),                 # exp(1) - 1
    (-2.0, -(E ** 2 - 1.0)),        # -(exp(2) - 1) = -6.389056...
    (math.log(101.0), 100.0),       # exp(ln 101) - 1 = 100
    (-math.log(2.0), -1.0),
])
def test_symexp_by_hand(y, expected):
    np.testing.assert_allclose(ops.symexp(f32(y)).numpy(), expected, rtol=1e-6, atol=1e-7)


def test_symexp_inverts_symlog_over_wide_range():
    mags = np.concatenate([[0.0, 1e-6, 1e-3, 0.5, 1.0, 2.0], np.logspace(-4, 6, 41)])
    x = np.concatenate([mags, -mags, [1e6, -1e6]]).astype(np.float32)
    back = ops.symexp(ops.symlog(f32(x))).numpy()
    np.testing.assert_allclose(back, x, rtol=2e-6, atol=1e-7)
    assert back[0] == 0.0
    # And the other way round, over the whole bin range of the two-hot heads.
    y = np.linspace(-20.0, 20.0, 81).astype(np.float32)
    np.testing.assert_allclose(ops.symlog(ops.symexp(f32(y))).numpy(), y, rtol=1e-6, atol=1e-6)


def test_symlog_is_odd_and_monotone():
    x = np.linspace(-50.0, 50.0, 1001).astype(np.float32)
    y = ops.symlog(f32(x)).numpy()
    np.testing.assert_array_equal(y, -y[::-1])
    assert np.all(np.diff(y) > 0)


@pytest.mark.parametrize('x, expected', [
    (0.5, 1.0 / 1.5),               # d/dx ln(1 + x) = 1 / (1 + x)
    (-0.5, 1.0 / 1.5),              # odd function -> even derivative
    (3.0, 0.25),
    (1e-6, 1.0),                    # next to zero the slope is 1 from both sides
    (-1e-6, 1.0),
])
def test_symlog_gradient_away_from_zero(x, expected):
    x = f32(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = ops.symlog(x)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), expected, rtol=1e-5)


def test_symlog_gradient_at_zero_is_one():
    x = f32(0.0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = ops.symlog(x)
    # Limit of (symlog(h) - symlog(0)) / h = ln(1 + h) / h -> 1 as h -> 0.
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), 1.0, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# lambda_return
# ---------------------------------------------------------------------------------------------

REW = [0.0, 1.0, 2.0, 3.0, 4.0]        # rew[0] never enters: rewards arrive with the next state
BOOT = [10.0, 20.0, 30.0, 40.0, 50.0]
ZERO = [0.0] * 5
MID = [0.0, 0.0, 1.0, 0.0, 0.0]        # flag set on state 2

# Hand arithmetic for a 5-state / 4-return sequence with disc = 0.5.
HAND_CASES = {
    # lam = 0 -> one-step TD: R_t = r_{t+1} + 0.5 * boot_{t+1}
    #   R0 = 1 + 0.5*20 = 11, R1 = 2 + 0.5*30 = 17, R2 = 3 + 0.5*40 = 23, R3 = 4 + 0.5*50 = 29
    'td0': (ZERO, ZERO, 0.0, [11.0, 17.0, 23.0, 29.0]),
    # lam = 1 -> Monte Carlo bootstrapped on boot_4 = 50:
    #   R3 = 4 + 0.5*50 = 29, R2 = 3 + 0.5*29 = 17.5, R1 = 2 + 0.5*17.5 = 10.75,
    #   R0 = 1 + 0.5*10.75 = 6.375
    'mc': (ZERO, ZERO, 1.0, [6.375, 10.75, 17.5, 29.0]),
    # lam = 0.75 (1 - lam = 0.25; swapping them gives different numbers):
    #   R3 = 4 + 0.5*(0.25*50 + 0.75*50) = 29
    #   R2 = 3 + 0.5*(0.25*40 + 0.75*29) = 3 + 0.5*31.75 = 18.875
    #   R1 = 2 + 0.5*(0.25*30 + 0.75*18.875) = 2 + 0.5*21.65625 = 12.828125
    #   R0 = 1 + 0.5*(0.25*20 + 0.75*12.828125) = 1 + 0.5*14.62109375 = 8.310546875
    'lam075': (ZERO, ZERO, 0.75, [8.310546875, 12.828125, 18.875, 29.0]),
    # lam = 0.25: R3 = 29, R2 = 3 + 0.5*(0.75*40 + 0.25*29) = 3 + 0.5*37.25 = 21.625
    #   R1 = 2 + 0.5*(0.75*30 + 0.25*21.625) = 2 + 0.5*27.90625 = 15.953125
    #   R0 = 1 + 0.5*(0.75*20 + 0.25*15.953125) = 1 + 0.5*18.98828125 = 10.494140625
    'lam025': (ZERO, ZERO, 0.25, [10.494140625, 15.953125, 21.625, 29.0]),
    # Terminal at state 2 (lam = 1): R3 = 29, R2 = 17.5 (after the terminal, untouched),
    #   R1 = r2 + 0.5*(1 - 1)*... = 2, R0 = 1 + 0.5*2 = 2
    'terminal_mid': (ZERO, MID, 1.0, [2.0, 2.0, 17.5, 29.0]),
    # is_last at state 2 (lam = 1): the recursion is cut there and bootstraps fully on boot_2:
    #   R3 = 29, R2 = 17.5, R1 = 2 + 0.5*(1*30 + 0*17.5) = 17, R0 = 1 + 0.5*17 = 9.5
    'last_mid': (MID, ZERO, 1.0, [9.5, 17.0, 17.5, 29.0]),
    # Terminal and last together at state 2: the terminal wins, nothing after it counts.
    'terminal_and_last_mid': (MID, MID, 1.0, [2.0, 2.0, 17.5, 29.0]),
    # Terminal on the final state: R3 = 4 + 0 = 4, R2 = 3 + 0.5*4 = 5, R1 = 2 + 2.5 = 4.5,
    #   R0 = 1 + 0.5*4.5 = 3.25
    'terminal_end': (ZERO, [0.0, 0.0, 0.0, 0.0, 1.0], 1.0, [3.25, 4.5, 5.0, 4.0]),
}


@pytest.mark.parametrize('name', sorted(HAND_CASES))
def test_lambda_return_by_hand(name):
    last, term, lam, expected = HAND_CASES[name]
    # The naive loop reproduces the hand numbers (guards the reference itself) ...
    np.testing.assert_allclose(
        naive_lambda_return([last], [term], [REW], [BOOT], 0.5, lam)[0], expected, rtol=1e-12)
    # ... and so does the library. `val` gets junk: only `boot` may seed the targets.
    ret = ops.lambda_return(f32([last]), f32([term]), f32([REW]), f32([[-999.0] * 5]),
                            f32([BOOT]), 0.5, lam)
    assert ret.shape == (1, 4)
    np.testing.assert_allclose(ret.numpy()[0], expected, rtol=1e-6)


@pytest.mark.parametrize('disc, lam', [(0.997, 0.95), (1.0, 0.95), (0.9, 0.0), (0.8, 1.0),
                                       (0.99, 0.3)])
def test_lambda_return_matches_naive_loop(disc, lam):
    rng = np.random.default_rng(int(disc * 1000) + int(lam * 100))
    batch, length = 4, 9
    rew = rng.normal(size=(batch, length))
    boot = rng.normal(size=(batch, length)) * 5
    val = rng.normal(size=(batch, length))
    last = (rng.random((batch, length)) < 0.2).astype(np.float64)
    term = last * (rng.random((batch, length)) < 0.5)
    # Soft terminals, as imagination passes 1 - predicted continue.
    term[0] = rng.random(length)
    expected = naive_lambda_return(last, term, rew, boot, disc, lam)
    ret = ops.lambda_return(f32(last), f32(term), f32(rew), f32(val), f32(boot), disc, lam)
    assert ret.shape == (batch, length - 1)
    np.testing.assert_allclose(ret.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_lambda_return_accepts_bool_flags():
    last = np.array([MID], bool)
    term = np.zeros((1, 5), bool)
    ret = ops.lambda_return(tf.constant(last), tf.constant(term), f32([REW]), f32([BOOT]),
                            f32([BOOT]), 0.5, 1.0)
    np.testing.assert_allclose(ret.numpy()[0], HAND_CASES['last_mid'][3], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# percentile
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('shape', [(1,), (2,), (3,), (7,), (4, 5), (16, 15), (1000,)])
@pytest.mark.parametrize('q', [0.0, 5.0, 37.5, 50.0, 95.0, 100.0])
def test_percentile_matches_numpy_linear(shape, q):
    rng = np.random.default_rng(sum(shape) + int(q * 10))
    x = (rng.normal(size=shape) * 100).astype(np.float32)
    expected = np.percentile(x.astype(np.float64), q, method='linear')
    np.testing.assert_allclose(ops.percentile(f32(x), q).numpy(), expected, rtol=1e-5, atol=1e-4)


def test_percentile_by_hand():
    x = f32([[30.0, 10.0], [40.0, 20.0]])   # sorted 10 20 30 40, position q/100 * 3
    # q=5: pos 0.15 -> 10 + 0.15*10 = 11.5; q=50: pos 1.5 -> 25; q=95: pos 2.85 -> 38.5
    for q, expected in [(5.0, 11.5), (50.0, 25.0), (95.0, 38.5)]:
        np.testing.assert_allclose(ops.percentile(x, q).numpy(), expected, rtol=1e-6)
    assert ops.percentile(f32([7.0]), 95.0).numpy() == 7.0


# ---------------------------------------------------------------------------------------------
# ReturnNormalizer
# ---------------------------------------------------------------------------------------------

def test_return_normalizer_hand_ema_large_spread():
    norm = ops.ReturnNormalizer(rate=0.01, limit=1.0, perclo=5.0, perchi=95.0)
    assert norm.lo.numpy() == 0.0 and norm.hi.numpy() == 0.0
    # x1 = 0, 10, ..., 1000 (101 values): position q/100 * 100 is an integer,
    # so p5 = 50 and p95 = 950 exactly.
    x1 = np.arange(101, dtype=np.float32) * 10.0
    # x2 = -500, -480, ..., 1500: p5 = -500 + 5*20 = -400, p95 = -500 + 95*20 = 1400.
    x2 = np.arange(101, dtype=np.float32) * 20.0 - 500.0
    scale1 = norm.update_and_scale(f32(x1.reshape(101, 1)))
    # lo = 0.01*50 + 0.99*0 = 0.5, hi = 0.01*950 = 9.5; no debiasing (a debiased EMA would be
    # 50/950)
    np.testing.assert_allclose([norm.lo.numpy(), norm.hi.numpy()], [0.5, 9.5], rtol=1e-6)
    np.testing.assert_allclose(scale1.numpy(), 9.0, rtol=1e-6)      # max(1, 9.5 - 0.5)
    norm.update(f32(x2))
    # lo = 0.01*(-400) + 0.99*0.5 = -4 + 0.495 = -3.505
    # hi = 0.01*1400 + 0.99*9.5 = 14 + 9.405 = 23.405
    np.testing.assert_allclose(norm.lo.numpy(), -3.505, rtol=1e-6)
    np.testing.assert_allclose(norm.hi.numpy(), 23.405, rtol=1e-6)
    # hi - lo = 26.91 > 1, so the limit is not binding.
    np.testing.assert_allclose(norm.scale().numpy(), 26.91, rtol=1e-6)


def test_return_normalizer_limit_binds_for_small_returns():
    norm = ops.ReturnNormalizer(rate=0.01, limit=1.0)
    x = np.arange(101, dtype=np.float32) * 0.1    # p5 = 0.5, p95 = 9.5
    scale = norm.update_and_scale(f32(x))
    # lo = 0.005, hi = 0.095 -> hi - lo = 0.09 < 1 -> scale = 1
    np.testing.assert_allclose([norm.lo.numpy(), norm.hi.numpy()], [0.005, 0.095], rtol=1e-5)
    assert scale.numpy() == 1.0


def test_return_normalizer_other_rate_and_percentiles():
    norm = ops.ReturnNormalizer(rate=0.5, limit=0.0, perclo=0.0, perchi=100.0)
    norm.update(f32([[-4.0, 2.0], [6.0, 0.0]]))   # min -4, max 6
    norm.update(f32([10.0, 20.0]))                # min 10, max 20
    # lo = 0.5*10 + 0.5*(0.5*-4) = 5 - 1 = 4; hi = 0.5*20 + 0.5*(0.5*6) = 10 + 1.5 = 11.5
    np.testing.assert_allclose([norm.lo.numpy(), norm.hi.numpy()], [4.0, 11.5], rtol=1e-6)
    np.testing.assert_allclose(norm.scale().numpy(), 7.5, rtol=1e-6)


def test_return_normalizer_scale_has_no_gradient():
    norm = ops.ReturnNormalizer()
    x = f32(np.arange(101) * 10.0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        scale = norm.update_and_scale(x)
    grad = tape.gradient(scale, x)
    assert grad is None or not np.any(grad.numpy())


# ---------------------------------------------------------------------------------------------
# ema_update, cumulative_weight, masked_mean
# ---------------------------------------------------------------------------------------------

def test_ema_update_by_hand():
    tgt = [tf.Variable([1.0, -2.0]), tf.Variable([[4.0]])]
    src = [tf.Variable([3.0, 2.0]), tf.Variable([[0.0]])]
    ops.ema_update(tgt, src, 0.02)
    # 0.98*1 + 0.02*3 = 1.04; 0.98*-2 + 0.02*2 = -1.92; 0.98*4 + 0 = 3.92
    np.testing.assert_allclose(tgt[0].numpy(), [1.04, -1.92], rtol=1e-6)
    np.testing.assert_allclose(tgt[1].numpy(), [[3.92]], rtol=1e-6)
    ops.ema_update(tgt, src, 0.02)
    # 0.98*1.04 + 0.06 = 1.0792
    np.testing.assert_allclose(tgt[0].numpy()[0], 1.0792, rtol=1e-6)
    np.testing.assert_array_equal(src[0].numpy(), [3.0, 2.0])    # the source is untouched
    ops.ema_update(tgt, src, 0.0)                                 # rate 0 keeps the target
    np.testing.assert_allclose(tgt[0].numpy()[0], 1.0792, rtol=1e-6)
    ops.ema_update(tgt, src, 1.0)                                 # rate 1 copies
    np.testing.assert_array_equal(tgt[0].numpy(), [3.0, 2.0])


def test_ema_update_rejects_mismatched_lists():
    with pytest.raises(ValueError):
        ops.ema_update([tf.Variable(1.0)], [tf.Variable(1.0), tf.Variable(2.0)], 0.5)


def test_cumulative_weight_by_hand():
    con = f32([[1.0, 0.5, 0.5, 0.0, 1.0],
               [0.9, 0.9, 0.9, 0.9, 0.9]])
    # row 0: 1, 0.5, 0.25, 0, 0 ; row 1: 0.9, 0.81, 0.729, 0.6561, 0.59049
    expected = [[1.0, 0.5, 0.25, 0.0, 0.0], [0.9, 0.81, 0.729, 0.6561, 0.59049]]
    np.testing.assert_allclose(ops.cumulative_weight(con).numpy(), expected, rtol=1e-6)


def test_cumulative_weight_stops_gradient():
    con = f32([[0.9, 0.8, 0.7]])
    with tf.GradientTape() as tape:
        tape.watch(con)
        out = tf.reduce_sum(ops.cumulative_weight(con))
    grad = tape.gradient(out, con)
    assert grad is None or not np.any(grad.numpy())


# ---------------------------------------------------------------------------------------------
# Keyed random numbers
# ---------------------------------------------------------------------------------------------

def mix32_reference(x):
    """The same xor-shift-multiply hash on Python ints (unbounded, masked by hand)."""
    mask = 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x21f0aaad) & mask
    x ^= x >> 15
    x = (x * 0x735a2d97) & mask
    return x ^ (x >> 15)


def test_mix32_matches_python_integers():
    keys = [0, 1, 2, 12345, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1]
    got = ops._mix32(tf.constant(keys, tf.int64)).numpy()
    assert list(got) == [mix32_reference(k) for k in keys]


def test_fold_in_by_hand():
    key, data = 987654321, 7
    expected = mix32_reference(mix32_reference(key) ^ data)
    assert int(ops.fold_in(tf.constant(key, tf.int64), data).numpy()) == expected


def test_keyed_uniform_rows_depend_only_on_their_key():
    keys = tf.constant([3, 1, 4, 1, 5], tf.int64)
    u = ops.keyed_uniform(keys, [6, 2]).numpy()
    assert u.shape == (5, 6, 2) and u.dtype == np.float32
    np.testing.assert_array_equal(u[1], u[3])                      # equal keys, equal rows
    alone = ops.keyed_uniform(tf.constant([4], tf.int64), [6, 2]).numpy()
    np.testing.assert_array_equal(u[2], alone[0])                  # batch-split invariant
    # Element 0 of key k by hand: top 24 bits of fold_in(k, 0), centred in its 2^-24 cell.
    bits = mix32_reference(mix32_reference(3) ^ 0)
    assert u[0, 0, 0] == np.float32(((bits >> 8) + 0.5) * 2.0 ** -24)


def test_keyed_uniform_is_uniform_and_open():
    u = ops.keyed_uniform(tf.range(4000, dtype=tf.int64), [64]).numpy().ravel()
    assert 0.0 < u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.003 and abs(u.var() - 1 / 12) < 0.002
    counts = np.histogram(u, bins=16, range=(0, 1))[0]
    expected = len(u) / 16
    assert np.max(np.abs(counts - expected)) < 5 * np.sqrt(expected)
    # Neighbouring keys and neighbouring elements are uncorrelated.
    grid = u.reshape(4000, 64)
    assert abs(np.corrcoef(grid[:-1].ravel(), grid[1:].ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(grid[:, :-1].ravel(), grid[:, 1:].ravel())[0, 1]) < 0.01


def test_keyed_uniform_same_under_xla():
    keys = tf.constant([0, 17, 2 ** 32 - 1], tf.int64)
    compiled = tf.function(lambda k: ops.keyed_uniform(k, [5]), jit_compile=True)
    np.testing.assert_array_equal(compiled(keys).numpy(), ops.keyed_uniform(keys, [5]).numpy())


def test_matmul_pre_t_matches_matmul_and_its_autodiff_in_a_compiled_loop():
    # The custom gradient must be the plain matmul's, also as tf.scan's body under XLA (the observe loop).
    rng = np.random.default_rng(3)
    xs, w = f32(rng.normal(size=(5, 4, 6))), tf.Variable(f32(rng.normal(size=(6, 6))))

    def run(matmul):
        @tf.function(jit_compile=True)
        def grads():
            with tf.GradientTape() as tape:
                tape.watch(xs)
                w_t = tf.transpose(w)
                hs = tf.scan(lambda h, x: tf.tanh(matmul(h + x, w, w_t)), xs, tf.zeros([4, 6]))
                loss = tf.reduce_sum(hs ** 2)
            return hs, tape.gradient(loss, [xs, w])
        return grads()

    hs, (gx, gw) = run(ops.matmul_pre_t)
    hs0, (gx0, gw0) = run(lambda x, w, w_t: tf.matmul(x, w))
    for got, want in ((hs, hs0), (gx, gx0), (gw, gw0)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)
    assert np.abs(gw.numpy()).sum() > 0


def test_unit_interval_stays_strictly_inside_zero_one_at_both_ends():
    # bits >> 8 = 2^24 - 1 gives (2^24 - 0.5) / 2^24, which float32 rounds to 1.0: ndtri(1.0) is inf, and
    # an inf imagined action made the paper run skip updates (non-finite imagination, finite model losses).
    bits = tf.constant([0, 255, 2 ** 31, 2 ** 32 - 257, 2 ** 32 - 1], tf.int64)
    u = ops.unit_interval(bits).numpy()
    assert u.dtype == np.float32 and (u > 0).all() and (u < 1).all()
    assert u[0] == u[1] == np.float32(0.5 / 2 ** 24) and u[2] == 0.5
    assert u[-1] == np.nextafter(np.float32(1), np.float32(0))
    assert np.isfinite(tf.math.ndtri(u).numpy()).all()
