"""AGC + LaProp optimiser against hand arithmetic and a naive numpy re-implementation of SPEC.md."""

import math

import numpy as np
import pytest
import tensorflow as tf

from dreamer_tf import optim
from helpers import f32


# ---------------------------------------------------------------------------------------------
# adaptive gradient clipping
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('grad, param, clip, pmin, expected', [
    # ||g|| = sqrt(36 + 64) = 10, ||p|| = 2 -> limit 0.3 * 2 = 0.6 -> g * 0.6 / 10 = [0.36, 0.48]
    ([6.0, 8.0], [2.0, 0.0], 0.3, 1e-3, [0.36, 0.48]),
    # same norms as a matrix: p = [[1.2, 1.6]] (norm 2), g = [[0, 10]] -> [[0, 0.6]]
    ([[0.0, 10.0]], [[1.2, 1.6]], 0.3, 1e-3, [[0.0, 0.6]]),
    # ||g|| = 0.5 below the limit 0.6 -> unchanged
    ([0.3, -0.4], [2.0, 0.0], 0.3, 1e-3, [0.3, -0.4]),
    # ||p|| = 0 < pmin -> limit 0.3 * 1e-3 = 3e-4 -> g * 3e-4 / 10 = [1.8e-4, 2.4e-4]
    ([6.0, 8.0], [0.0, 0.0], 0.3, 1e-3, [1.8e-4, 2.4e-4]),
    # ||p|| = 5e-4 < pmin still uses pmin -> same as above
    ([6.0, 8.0], [3e-4, 4e-4], 0.3, 1e-3, [1.8e-4, 2.4e-4]),
    # ||p|| = 5e-3 > pmin: limit 0.3 * 5e-3 = 1.5e-3 -> g * 1.5e-4 = [9e-4, 1.2e-3]
    ([6.0, 8.0], [3e-3, 4e-3], 0.3, 1e-3, [9e-4, 1.2e-3]),
    # scalar: |g| = 5, |p| = 1, clip 1 -> 1 * sign(g)
    (-5.0, 1.0, 1.0, 1e-3, -1.0),
])
def test_agc_clip_by_hand(grad, param, clip, pmin, expected):
    out = optim.agc_clip(f32(grad), f32(param), clip, pmin).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-12)


def test_agc_clipped_norm_is_limit():
    out = optim.agc_clip(f32([6.0, 8.0]), f32([2.0, 0.0]), 0.3, 1e-3)
    np.testing.assert_allclose(np.linalg.norm(out.numpy()), 0.6, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# LaProp
# ---------------------------------------------------------------------------------------------

class NaiveLaProp:
    """Element-by-element numpy version of the update order in SPEC.md / optim's docstring."""

    def __init__(self, params, lr, agc, pmin, beta1, beta2, eps, warmup):
        self.params = [np.array(p, np.float64) for p in params]
        self.mu = [np.zeros_like(p) for p in self.params]
        self.nu = [np.zeros_like(p) for p in self.params]
        self.lr, self.agc, self.pmin = lr, agc, pmin
        self.beta1, self.beta2, self.eps, self.warmup = beta1, beta2, eps, warmup
        self.t = 0

    def apply(self, grads):
        self.t += 1
        t = self.t
        lr = self.lr * min(1.0, (t - 1) / self.warmup) if self.warmup > 0 else self.lr
        for i, g in enumerate(grads):
            g = np.array(g, np.float64)
            p = self.params[i]
            if self.agc:
                gnorm = math.sqrt(sum(x * x for x in g.reshape(-1)))
                pnorm = math.sqrt(sum(x * x for x in p.reshape(-1)))
                limit = self.agc * max(self.pmin, pnorm)
                if gnorm > limit:
                    g = g * (limit / gnorm)
            flat_g, flat_p = g.reshape(-1), p.reshape(-1).copy()
            flat_mu, flat_nu = self.mu[i].reshape(-1), self.nu[i].reshape(-1)
            for j in range(flat_g.size):
                flat_nu[j] = self.beta2 * flat_nu[j] + (1 - self.beta2) * flat_g[j] ** 2
                nu_hat = flat_nu[j] / (1 - self.beta2 ** t)
                u = flat_g[j] / (math.sqrt(nu_hat) + self.eps)
                flat_mu[j] = self.beta1 * flat_mu[j] + (1 - self.beta1) * u
                mu_hat = flat_mu[j] / (1 - self.beta1 ** t)
                flat_p[j] = flat_p[j] - lr * mu_hat
            self.params[i] = flat_p.reshape(p.shape)
        return lr


def make_pair(params, **kw):
    variables = [tf.Variable(np.asarray(p, np.float32)) for p in params]
    return variables, optim.LaProp(variables, **kw), NaiveLaProp(params, **kw)


def test_laprop_matches_naive_with_warmup_and_agc():
    rng = np.random.default_rng(0)
    params = [rng.normal(size=(3,)), rng.normal(size=(2, 4)), np.array(0.7), rng.normal(size=(1, 1, 2))]
    kw = dict(lr=0.1, agc=0.3, pmin=1e-3, beta1=0.9, beta2=0.999, eps=1e-20, warmup=2)
    variables, opt, ref = make_pair(params, **kw)
    before = [v.numpy().copy() for v in variables]
    # Mixed magnitudes: some gradients get clipped by AGC, some do not, one is all zero.
    scales = [[0.01, 5.0, 0.02, 3.0], [10.0, 0.05, 1.0, 0.0], [0.1, 0.1, 20.0, 0.1],
              [2.0, 0.01, 0.3, 7.0]]
    expected_lr = [0.0, 0.05, 0.1, 0.1]      # lr * min(1, (t - 1) / 2) for t = 1..4
    for step in range(4):
        grads = [rng.normal(size=np.shape(p)) * scales[step][i] for i, p in enumerate(params)]
        if step == 1:
            grads[3] = np.zeros_like(grads[3])
        metrics = opt.apply([f32(g) for g in grads])
        lr = ref.apply([np.asarray(g, np.float32) for g in grads])
        assert lr == expected_lr[step]
        np.testing.assert_allclose(metrics['lr'].numpy(), lr, rtol=1e-6)
        np.testing.assert_allclose(metrics['grad_norm'].numpy(),
                                   math.sqrt(sum(float(np.sum(np.square(g))) for g in grads)),
                                   rtol=1e-5)
        for var, want in zip(variables, ref.params):
            np.testing.assert_allclose(var.numpy(), want, rtol=2e-5, atol=1e-6)
        if step == 0:
            # The first update has learning rate 0: nothing moves, but the moments are filled.
            for var, old in zip(variables, before):
                np.testing.assert_array_equal(var.numpy(), old)
            assert np.any(opt.nu[0].numpy() > 0) and np.any(opt.mu[0].numpy() != 0)
    assert int(opt.step.numpy()) == 4
    for var, old in zip(variables, before):
        assert not np.allclose(var.numpy(), old)


def test_laprop_matches_naive_without_agc():
    rng = np.random.default_rng(1)
    params = [rng.normal(size=(5,)), rng.normal(size=(3, 2))]
    kw = dict(lr=0.01, agc=0.0, pmin=1e-3, beta1=0.9, beta2=0.999, eps=1e-20, warmup=3)
    variables, opt, ref = make_pair(params, **kw)
    for step in range(4):
        grads = [rng.normal(size=np.shape(p)) * 10 ** step for p in params]
        opt.apply([f32(g) for g in grads])
        ref.apply([np.asarray(g, np.float32) for g in grads])
    for var, want in zip(variables, ref.params):
        np.testing.assert_allclose(var.numpy(), want, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize('grad', [0.5, -0.5, 3e-6, -40.0])
@pytest.mark.parametrize('agc', [0.0, 0.3])
def test_laprop_first_step_is_lr_times_sign(grad, agc):
    # t=1: nu = 0.001 g^2, nu_hat = g^2 -> u = g / |g|; mu = 0.1 u, mu_hat = u -> p -= lr * sign(g)
    # (AGC can only shrink g, never flip it, so the result is the same with clipping on.)
    var = tf.Variable(1.0)
    opt = optim.LaProp([var], lr=0.25, agc=agc, pmin=1e-3, beta1=0.9, beta2=0.999, eps=1e-20,
                       warmup=0)
    opt.apply([tf.constant(grad)])
    # float32 tolerance: the bias correction 1 - 0.999^t is computed in float32 (relative error ~1e-5).
    np.testing.assert_allclose(var.numpy(), 1.0 - 0.25 * np.sign(grad), rtol=2e-5)


def test_laprop_second_step_by_hand():
    # warmup 0, lr 1, no AGC, grads g1 = 1 then g2 = -1 on a scalar:
    # t=1: u1 = 1, mu = 0.1, mu_hat = 0.1 / 0.1 = 1 -> p = 0 - 1 = -1
    # t=2: nu = 0.999 * 0.001 + 0.001 = 0.001999, nu_hat = 0.001999 / (1 - 0.999^2) = 0.001999 / 0.001999 = 1
    #      u2 = -1; mu = 0.9 * 0.1 - 0.1 = -0.01; mu_hat = -0.01 / (1 - 0.81) = -0.0526316
    #      p = -1 + 0.0526316 = -0.9473684
    var = tf.Variable(0.0)
    opt = optim.LaProp([var], lr=1.0, agc=0.0, pmin=1e-3, beta1=0.9, beta2=0.999, eps=1e-20,
                       warmup=0)
    opt.apply([tf.constant(1.0)])
    np.testing.assert_allclose(var.numpy(), -1.0, rtol=2e-5)
    opt.apply([tf.constant(-1.0)])
    np.testing.assert_allclose(var.numpy(), -1.0 + 0.01 / 0.19, rtol=3e-5)


def test_laprop_warmup_schedule():
    opt = optim.LaProp([tf.Variable(0.0)], lr=4e-5, agc=0.3, pmin=1e-3, beta1=0.9, beta2=0.999,
                       eps=1e-20, warmup=4)
    # learning_rate(step) is the rate of update t = step + 1: lr * min(1, step / 4)
    for step, frac in [(0, 0.0), (1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0), (100, 1.0)]:
        np.testing.assert_allclose(opt.learning_rate(tf.constant(step, tf.int64)).numpy(),
                                   4e-5 * frac, rtol=1e-6, atol=0)
    nowarm = optim.LaProp([tf.Variable(0.0)], lr=4e-5, agc=0.3, pmin=1e-3, beta1=0.9, beta2=0.999,
                          eps=1e-20, warmup=0)
    np.testing.assert_allclose(nowarm.learning_rate(tf.constant(0, tf.int64)).numpy(), 4e-5)


def test_laprop_reports_clipped_norm_and_rejects_wrong_count():
    var = tf.Variable([2.0, 0.0])
    opt = optim.LaProp([var], lr=1e-3, agc=0.3, pmin=1e-3, beta1=0.9, beta2=0.999, eps=1e-20,
                       warmup=0)
    metrics = opt.apply([f32([6.0, 8.0])])
    np.testing.assert_allclose(metrics['grad_norm'].numpy(), 10.0, rtol=1e-6)
    np.testing.assert_allclose(metrics['grad_norm_clipped'].numpy(), 0.6, rtol=1e-6)
    with pytest.raises(ValueError):
        opt.apply([f32([1.0, 1.0]), f32([1.0])])


def test_module_optimizers_hold_a_laprop_group_until_its_start():
    # run.actor_after with LaProp (V3): one LaProp per module; the actor's makes no step and moves no
    # moment or step count before update 2, then its first step is a fresh LaProp's first step (bias
    # correction and warm-up from t = 1), as the Adams' test in test_versions.py. In a tf.function:
    # the held branch must give the same metrics as LaProp's.
    kw = dict(lr=0.25, agc=0.3, pmin=1e-3, beta1=0.9, beta2=0.999, eps=1e-20, warmup=0)
    a, b, ref_a, ref_b = (tf.Variable([x]) for x in (1.0, 3.0, 1.0, 3.0))
    opts = optim.ModuleOptimizers({'model': ([a], optim.LaProp([a], name='model', **kw)),
                                   'actor': ([b], optim.LaProp([b], name='actor', **kw))},
                                  start={'actor': 2})
    ref_model, ref_actor = optim.LaProp([ref_a], **kw), optim.LaProp([ref_b], **kw)
    apply, actor_opt = tf.function(opts.apply), opts.groups['actor'][1]
    grads = [f32([0.5]), f32([4.0])]
    for update in (1, 2, 3):
        metrics = apply(grads)
        ref_model.apply(grads[:1])
        np.testing.assert_array_equal(a.numpy(), ref_a.numpy())      # the model steps from update 1
        assert a.numpy()[0] != 1.0
        if update < 3:
            assert b.numpy()[0] == 3.0 and int(actor_opt.step.numpy()) == 0
            assert actor_opt.mu[0].numpy()[0] == 0.0 and actor_opt.nu[0].numpy()[0] == 0.0
            assert float(metrics['actor/lr']) == 0.0 and float(metrics['actor/grad_norm_clipped']) == 0.0
            np.testing.assert_allclose(metrics['actor/grad_norm'].numpy(), 4.0, rtol=1e-6)
    ref_actor.apply(grads[1:])
    np.testing.assert_array_equal(b.numpy(), ref_b.numpy())
    assert b.numpy()[0] != 3.0
    assert int(actor_opt.step.numpy()) == 1 and int(opts.groups['model'][1].step.numpy()) == 3
    assert int(opts.step.numpy()) == 3
    assert set(metrics) == {f'{g}/{k}' for g in ('model', 'actor') for k in optim.LaProp.metric_names}


# ---------------------------------------------------------------------------------------------
# Dynamic loss scale (float16)
# ---------------------------------------------------------------------------------------------

def test_dynamic_loss_scale_halves_on_overflow_and_doubles_after_a_period():
    from dreamer_tf.optim import DynamicLossScale
    ls = DynamicLossScale(initial=8.0, period=3)
    history = []
    for finite in [False, True, True, True, True, False, False, False, False]:
        ls.update(tf.constant(finite))
        history.append((float(ls.scale.numpy()), int(ls.finite_steps.numpy())))
    # 8 -> 4 (overflow); three finite updates double it to 8 and restart the count; one more
    # finite (count 1); then overflows halve 8 -> 4 -> 2 -> 1 and stay at the floor of 1.
    assert history == [(4.0, 0), (4.0, 1), (4.0, 2), (8.0, 0), (8.0, 1), (4.0, 0), (2.0, 0),
                       (1.0, 0), (1.0, 0)]
