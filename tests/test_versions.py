"""DreamerV1 / V2 specifics (and the 2023 V3 preset) against hand arithmetic, naive numpy and closed forms.

Gaussian KL with free nats (V1), KL balancing (V2), dynamics-backprop and mixed actor gradients, the
tanh-Normal (V1) and truncated-Normal (V2) actors, the V2 slow critic, the per-module Adam and the
version configs of SPEC.md.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces

from dreamer_tf import behavior, dists, latents, ops, optim, rssm
from dreamer_tf import config as configlib
from dreamer_tf.agent import Agent
from dreamer_tf.config import Config
from dreamer_tf.envs import ActionSpec
from dreamer_tf.rssm import RSSM
from test_losses import column_actor_critic
from helpers import f32, np_log_softmax

VECTOR = 5
OBS_SPACE = {'vector': spaces.Box(-np.inf, np.inf, (VECTOR,), np.float32)}
ACT_SPACE = ActionSpec(discrete=False, size=2)


def is_zero_grad(grad):
    return grad is None or not np.any(tf.convert_to_tensor(grad).numpy())


def norm_pdf(x):
    return np.exp(-0.5 * np.square(x)) / math.sqrt(2.0 * math.pi)


def norm_cdf(x):
    return 0.5 * (1.0 + np.vectorize(math.erf)(np.asarray(x, np.float64) / math.sqrt(2.0)))


def make_batch(batch=2, length=5, seed=0):
    """A random vector / continuous-action replay batch [B, T] with per-sequence keys."""
    rng = np.random.default_rng(seed)
    shape = (batch, length)
    is_first = np.zeros(shape, bool)
    is_first[:, 0] = True
    data = {'vector': rng.standard_normal(shape + (VECTOR,)).astype(np.float32),
            'action': rng.uniform(-1, 1, shape + (ACT_SPACE.size,)).astype(np.float32),
            'reward': rng.standard_normal(shape).astype(np.float32),
            'is_first': is_first, 'is_last': np.zeros(shape, bool), 'is_terminal': np.zeros(shape, bool)}
    data = {k: tf.constant(v) for k, v in data.items()}
    data['key'] = tf.constant([11, 12345][:batch], tf.int64)
    return data


@pytest.fixture(scope='module')
def v1_agent():
    return Agent(configlib.load('dreamerv1', ['dmc_proprio', 'debug']), OBS_SPACE, ACT_SPACE)


# ---------------------------------------------------------------------------------------------
# 1. DreamerV1: Gaussian KL and max(mean KL, free nats)
# ---------------------------------------------------------------------------------------------

def naive_gauss_kl(m1, s1, m2, s2):
    """KL(N(m1, s1) || N(m2, s2)) summed over the last axis, float64 closed form."""
    m1, s1, m2, s2 = (np.asarray(a, np.float64) for a in (m1, s1, m2, s2))
    return np.sum(np.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5, -1)


def gaussian_rssm():
    return RSSM(2, 3, deter=8, hidden=8, stoch=2, latent='gaussian', core='gru')


# B=1, T=2, stoch=2. Prior means 0.
POST_M, POST_S = [[[0.0, 1.0], [2.0, -1.0]]], [[[1.0, 0.5], [2.0, 1.0]]]
PRIOR_M, PRIOR_S = [[[0.0, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [1.0, 0.5]]]
# t=0: dim0 log(1/1) + (1 + 0) / 2 - 1/2 = 0
#      dim1 log(1/0.5) + (0.25 + 1) / 2 - 1/2 = 0.6931472 + 0.625 - 0.5 = 0.8181472
# t=1: dim0 log(1/2) + (4 + 4) / 2 - 1/2 = -0.6931472 + 4 - 0.5 = 2.8068528
#      dim1 log(0.5/1) + (1 + 1) / (2 * 0.25) - 1/2 = -0.6931472 + 4 - 0.5 = 2.8068528
KL_T0 = math.log(2.0) + 0.125
KL_T1 = 2 * (3.5 - math.log(2.0))
KL_MEAN = (KL_T0 + KL_T1) / 2          # 3.2159263 > 3 free nats


def test_gaussian_kl_matches_closed_form():
    model = gaussian_rssm()
    post = {'mean': f32(POST_M), 'std': f32(POST_S)}
    prior = {'mean': f32(PRIOR_M), 'std': f32(PRIOR_S)}
    kl = model.kl(post, prior).numpy()
    np.testing.assert_allclose(kl, [[KL_T0, KL_T1]], rtol=1e-5)
    np.testing.assert_allclose(kl, naive_gauss_kl(POST_M, POST_S, PRIOR_M, PRIOR_S), rtol=1e-5)
    # Random [3, 4, 5] states against the closed form (direction: KL(post || prior)).
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=(2, 3, 4, 5))
    s1, s2 = rng.uniform(0.1, 2.0, size=(2, 3, 4, 5))
    kl = model.kl({'mean': f32(m1), 'std': f32(s1)}, {'mean': f32(m2), 'std': f32(s2)}).numpy()
    np.testing.assert_allclose(kl, naive_gauss_kl(m1, s1, m2, s2), rtol=1e-4, atol=1e-5)
    assert np.abs(kl - naive_gauss_kl(m2, s2, m1, s1)).max() > 0.1     # the reverse KL differs


def test_kl_loss_v1_free_nats_of_the_mean_and_gradient():
    model = gaussian_rssm()
    mean = tf.Variable(np.asarray(POST_M, np.float32))
    prior = {'mean': f32(PRIOR_M), 'std': f32(PRIOR_S)}
    with tf.GradientTape(persistent=True) as tape:
        kl = model.kl({'mean': mean, 'std': f32(POST_S)}, prior)
        above = rssm.kl_loss_v1(kl, 3.0)           # mean 3.2159 > 3: the mean itself
        below = rssm.kl_loss_v1(kl, 4.0)           # mean 3.2159 < 4: exactly 4
    np.testing.assert_allclose(above.numpy(), KL_MEAN, rtol=1e-5)
    assert below.numpy() == 4.0
    # d mean(KL) / d m1 = (m1 - m2) / s2^2 / (B * T): t0 [0, 1/1/2] ; t1 [2/1/2, -1/0.25/2]
    np.testing.assert_allclose(tape.gradient(above, mean).numpy(), [[[0.0, 0.5], [1.0, -2.0]]],
                               rtol=1e-5, atol=1e-7)
    assert is_zero_grad(tape.gradient(below, mean))
    # RSSM.kl_loss with kl_form v1 is the same scalar.
    loss = Config({'kl_form': 'v1', 'free_nats': 3.0})
    out = model.kl_loss({'mean': f32(POST_M), 'std': f32(POST_S)}, prior, loss)
    assert set(out) == {'kl'}
    np.testing.assert_allclose(out['kl'].numpy(), KL_MEAN, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# 2. DreamerV2: KL balancing
# ---------------------------------------------------------------------------------------------

def test_kl_balance_value_and_gradient_split():
    rng = np.random.default_rng(1)
    post = tf.Variable(rng.normal(size=(2, 3, 4, 5)).astype(np.float32))
    prior = tf.Variable(rng.normal(size=(2, 3, 4, 5)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        lhs = latents.kl_categorical(tf.stop_gradient(post), prior)
        rhs = latents.kl_categorical(post, tf.stop_gradient(prior))
        bal = rssm.kl_balance(lhs, rhs, 0.8, 0.0, False)                  # [B, T]
        bal_sum = tf.reduce_sum(bal)
        plain_sum = tf.reduce_sum(latents.kl_categorical(post, prior))
    logp, logq = np_log_softmax(post.numpy()), np_log_softmax(prior.numpy())
    p, q = np.exp(logp), np.exp(logq)
    kl_latent = np.sum(p * (logp - logq), -1, keepdims=True)               # [B, T, S, 1]
    # Value: 0.8 KL + 0.2 KL = KL(post || prior), summed over the 4 latents.
    np.testing.assert_allclose(bal.numpy(), kl_latent[..., 0].sum(-1), rtol=1e-5)
    g_prior, g_post = tape.gradient(bal_sum, prior).numpy(), tape.gradient(bal_sum, post).numpy()
    # Plain KL gradients: d/d prior_j = q_j - p_j ; d/d post_j = p_j (log p_j - log q_j - KL_latent).
    plain_prior, plain_post = q - p, p * (logp - logq - kl_latent)
    np.testing.assert_allclose(tape.gradient(plain_sum, prior).numpy(), plain_prior, atol=1e-6)
    np.testing.assert_allclose(tape.gradient(plain_sum, post).numpy(), plain_post, atol=1e-6)
    np.testing.assert_allclose(g_prior, 0.8 * plain_prior, atol=1e-6)
    np.testing.assert_allclose(g_post, 0.2 * plain_post, atol=1e-6)
    np.testing.assert_allclose(g_prior, 0.8 * tape.gradient(plain_sum, prior).numpy(), atol=1e-6)
    np.testing.assert_allclose(g_post, 0.2 * tape.gradient(plain_sum, post).numpy(), atol=1e-6)
    assert np.abs(g_post).max() > 1e-2 and np.abs(g_prior).max() > 1e-2


def test_kl_balance_free_nats_clip_the_mean():
    kl = f32([[0.5, 2.5]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(kl)
        mean_clip = rssm.kl_balance(kl, kl, 0.8, 1.0, True)
        step_clip = rssm.kl_balance(kl, kl, 0.8, 1.0, False)
        low = rssm.kl_balance(0.2 * kl, 0.2 * kl, 0.8, 1.0, True)
    # average: 0.8 max(1.5, 1) + 0.2 max(1.5, 1) = 1.5 (per step would give mean(1, 2.5) = 1.75)
    assert mean_clip.shape == ()
    np.testing.assert_allclose(mean_clip.numpy(), 1.5, rtol=1e-6)
    np.testing.assert_allclose(step_clip.numpy(), [[1.0, 2.5]], rtol=1e-6)
    # mean 0.2 * 1.5 = 0.3 < 1: exactly 1 and no gradient.
    assert low.numpy() == pytest.approx(1.0, abs=1e-7)
    assert is_zero_grad(tape.gradient(low, kl))
    # Above the free nats every step gets d/d kl_t = (0.8 + 0.2) / T = 0.5.
    np.testing.assert_allclose(tape.gradient(mean_clip, kl).numpy(), [[0.5, 0.5]], rtol=1e-6)


def test_rssm_kl_loss_balance_form_is_mean_kl():
    rng = np.random.default_rng(2)
    post, prior = rng.normal(size=(2, 3, 4, 5, 3)).astype(np.float32)
    model = RSSM(2, 3, deter=8, hidden=8, stoch=5, classes=3, core='norm_gru')
    for free, expected_fn in ((0.0, lambda m: m), (100.0, lambda m: 100.0)):
        loss = Config({'kl_form': 'balance', 'kl_balance': 0.8, 'free_nats': free, 'free_avg': True})
        out = model.kl_loss({'logit': f32(post)}, {'logit': f32(prior)}, loss)
        logp, logq = np_log_softmax(post), np_log_softmax(prior)
        mean_kl = np.sum(np.exp(logp) * (logp - logq), (-1, -2)).mean()
        np.testing.assert_allclose(out['kl'].numpy(), expected_fn(mean_kl), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# 3 / 4. Actor gradients: dynamics backprop (rho 0), REINFORCE (rho 1) and their mix
# ---------------------------------------------------------------------------------------------

# H = 2 returns, 3 imagined states; the last column of logpi / ent / val / weight is ignored.
LOGPI, ENT = [[-1.0, -2.0, -9.0]], [[0.5, 1.0, 9.0]]
RET, VAL, WEIGHT = [[3.0, 5.0]], [[1.0, 1.0, 99.0]], [[1.0, 0.5, 99.0]]
SCALE, ACTENT = 2.0, 0.1


def actor_terms(rho, actent=ACTENT):
    logpi, ent, ret, val, weight = (f32(x) for x in (LOGPI, ENT, RET, VAL, WEIGHT))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([logpi, ent, ret, val, weight])
        loss = behavior.actor_loss(logpi, ent, ret, val, weight, SCALE, actent, rho=rho)
        total = tf.reduce_sum(loss)
    grads = {name: tape.gradient(total, x) for name, x in
             (('logpi', logpi), ('ent', ent), ('ret', ret), ('val', val), ('weight', weight))}
    return loss.numpy(), grads


def test_actor_loss_dynamics_backprop_by_hand():
    loss, grads = actor_terms(0.0)
    # loss_t = -w_t (R_t / S + actent H_t): t0 -(3/2 + 0.1 * 0.5) = -1.55 ; t1 -0.5 (5/2 + 0.1) = -1.3
    np.testing.assert_allclose(loss, [[-1.55, -1.3]], rtol=1e-6)
    # The return's gradient flows: d/d R_t = -w_t / S = [-0.5, -0.25].
    np.testing.assert_allclose(grads['ret'].numpy(), [[-0.5, -0.25]], rtol=1e-6)
    for name in ('logpi', 'val', 'weight'):
        assert is_zero_grad(grads[name]), name
    # REINFORCE (rho 1): the return is only an advantage under stop-gradient.
    _, grads1 = actor_terms(1.0)
    assert is_zero_grad(grads1['ret'])
    assert not is_zero_grad(grads1['logpi'])


def test_actor_loss_mixed_gradient_by_hand():
    rho = 0.3
    loss, grads = actor_terms(rho)
    # adv = (R - v) / S = [(3 - 1) / 2, (5 - 1) / 2] = [1, 2]; REINFORCE logpi * adv = [-1, -4];
    # dynamics R / S = [1.5, 2.5]; entropy 0.1 H = [0.05, 0.1].
    # t0: -1.0 (0.3 * -1 + 0.7 * 1.5 + 0.05) = -(-0.3 + 1.05 + 0.05) = -0.8
    # t1: -0.5 (0.3 * -4 + 0.7 * 2.5 + 0.1) = -0.5 (-1.2 + 1.75 + 0.1) = -0.325
    np.testing.assert_allclose(loss, [[-0.8, -0.325]], rtol=1e-6)
    reinforce, _ = actor_terms(1.0, actent=0.0)
    dynamics, _ = actor_terms(0.0, actent=0.0)
    np.testing.assert_allclose(reinforce, [[1.0, 2.0]], rtol=1e-6)    # -w logpi adv = [1, 0.5 * 4]
    np.testing.assert_allclose(loss, rho * reinforce + (1 - rho) * dynamics
                               - np.array([[1.0 * 0.05, 0.5 * 0.1]]), rtol=1e-6)
    # d/d logpi_t = -w_t rho adv_t = [-0.3, -0.5 * 0.3 * 2] = [-0.3, -0.3], last column 0
    np.testing.assert_allclose(grads['logpi'].numpy(), [[-0.3, -0.3, 0.0]], rtol=1e-6)
    # d/d R_t = -w_t (1 - rho) / S = [-0.35, -0.175]
    np.testing.assert_allclose(grads['ret'].numpy(), [[-0.35, -0.175]], rtol=1e-6)
    assert is_zero_grad(grads['val'])


def _grads(tape, target, variables):
    return [None if g is None else g.numpy() for g in tape.gradient(target, variables)]


def test_v1_actor_gradient_flows_through_imagination_but_not_into_the_model_update(v1_agent):
    agent, config = v1_agent, v1_agent.config
    assert agent.ac.rho == 0.0 and agent.per_module
    data = make_batch()
    wm = agent.wm
    with tf.GradientTape(persistent=True) as tape:
        _, metrics, _ = agent.loss_terms(data)
        actor_loss = metrics['loss/actor'] * config.loss.actor
        # The model-only loss, rebuilt from the world model with the agent's key stream 1.
        plain = dict(data)
        key = plain.pop('key')
        wm_losses, _, _ = wm.loss(plain, key=ops.fold_in(key, 1))
        scales = {'kl': config.loss.kl, 'vector': config.loss.rec, 'rew': config.loss.rew}
        assert set(wm_losses) == set(scales)
        model_loss = sum(scales[k] * tf.reduce_mean(v) for k, v in wm_losses.items())
    # The actor loss reaches the actor's weights and, through the imagined states and rewards, the
    # RSSM's transition and the reward head, but not the encoder or decoder (starts are sg(post)).
    assert any(not is_zero_grad(g) for g in _grads(tape, actor_loss, agent.ac.actor.trainable_variables))
    for part in (wm.rssm.core, wm.reward):
        grads = _grads(tape, actor_loss, part.trainable_variables)
        assert any(g is not None and np.abs(g).max() > 1e-7 for g in grads), part.name
    for part in (wm.encoder, wm.decoder):
        assert all(is_zero_grad(g) for g in _grads(tape, actor_loss, part.trainable_variables))
    # The agent's per-module gradients: model <- model loss only, actor <- actor loss only.
    grads, _ = agent.compute_gradients(data)
    n_model, n_actor = len(wm.trainable_variables), len(agent.ac.actor.trainable_variables)
    expected_model = _grads(tape, model_loss, wm.trainable_variables)
    expected_actor = _grads(tape, actor_loss, agent.ac.actor.trainable_variables)
    actor_on_model = _grads(tape, actor_loss, wm.trainable_variables)
    for got, want in zip(grads[:n_model], expected_model, strict=True):
        want = np.zeros(got.shape) if want is None else want
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-6)
    for got, want in zip(grads[n_model:n_model + n_actor], expected_actor, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-7)
    # Had the actor loss leaked into the model update (the gradient of model + actor loss), the
    # model's gradients would differ by the actor loss's own, well beyond the tolerance above.
    caught = [np.any(np.abs(a) > 1e-3 * np.abs(m) + 1e-5)
              for a, m in zip(actor_on_model, expected_model) if a is not None and m is not None]
    assert sum(caught) >= 2, caught


# ---------------------------------------------------------------------------------------------
# 5. DreamerV1's tanh-Normal actor
# ---------------------------------------------------------------------------------------------

def naive_log_det(x):
    """log(1 - tanh(x)^2) = log 4 - 2|x| - 2 log(1 + exp(-2|x|)), finite for any x."""
    x = np.abs(x)
    return np.log(4.0) - 2.0 * x - 2.0 * np.log1p(np.exp(-2.0 * x))


def test_tanh_normal_log_prob_matches_naive():
    mean = np.array([[0.3, -1.0, 2.0], [0.0, 0.5, -0.2]])
    std = np.array([[0.5, 1.5, 0.2], [5.0, 0.1, 1.0]])
    actions = np.array([[0.1, -0.9, 0.95], [-0.5, 0.45, 0.0]])
    dist = dists.TanhNormal(f32(mean), f32(std))
    x = np.arctanh(actions)
    # log N(atanh a; m, s) - log(1 - a^2), summed over the 3 dims
    logn = -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    expected = np.sum(logn - np.log(1.0 - actions ** 2), -1)
    np.testing.assert_allclose(dist.log_prob(f32(actions)).numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('mean, std', [(0.3, 0.5), (-1.0, 1.5), (2.0, 0.2), (0.0, 5.0001)])
def test_tanh_normal_entropy_against_quadrature_and_monte_carlo(mean, std):
    ent = float(dists.TanhNormal(f32([[mean]]), f32([[std]])).entropy().numpy()[0])
    # H = E_x[-log N(x; m, s) + log(1 - tanh(x)^2)], x ~ N(m, s): trapezoid rule over +-12 std.
    x = np.linspace(mean - 12 * std, mean + 12 * std, 200001)
    logn = -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    f = np.exp(logn) * (naive_log_det(x) - logn)
    quad = np.sum((f[1:] + f[:-1]) / 2) * (x[1] - x[0])
    # 100 normal quantiles stand in for DreamerV1's 100 samples: 0.015 off at std 5.
    assert abs(ent - quad) < 0.02
    xs = np.random.default_rng(0).normal(mean, std, 200000)
    lognx = -0.5 * ((xs - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    terms = naive_log_det(xs) - lognx
    assert abs(ent - terms.mean()) < 0.02 + 3 * terms.std() / np.sqrt(len(xs))


def test_tanh_normal_head_initial_std_and_mean_scale():
    dist = dists.tanh_normal(tf.zeros([1, 2]), tf.zeros([1, 2]))
    # softplus(log(expm1(5))) = log(1 + e^5 - 1) = 5, plus min_std 1e-4
    np.testing.assert_allclose(dist.std.numpy(), 5.0 + 1e-4, rtol=1e-6)
    np.testing.assert_array_equal(dist.mean.numpy(), 0.0)
    # mean 5 tanh(m / 5): m = 10 -> 5 tanh(2) = 4.8201379 ; m = -1 -> 5 tanh(-0.2) = -0.9868766
    dist = dists.tanh_normal(f32([[10.0, -1.0]]), f32([[0.0, -20.0]]))
    np.testing.assert_allclose(dist.mean.numpy(), [[5 * math.tanh(2.0), 5 * math.tanh(-0.2)]], rtol=1e-6)
    # std_raw -20: softplus(-20 + 4.9932) = exp(-15.0068) ~ 3e-7, plus min_std 1e-4
    tiny = 1e-4 + math.log1p(math.exp(-20 + math.log(math.expm1(5))))
    np.testing.assert_allclose(dist.std.numpy()[0, 1], tiny, rtol=1e-4)


def test_tanh_normal_mode():
    means = np.array([[0.5], [-0.3], [0.0], [1.2]])     # one dim per row
    std = 0.05
    mode = dists.TanhNormal(f32(means), f32(np.full_like(means, std))).mode().numpy()
    assert np.all(np.abs(mode) < 1.0)
    # The density of a = tanh(x) peaks where d/dx [log N(x) - log(1 - tanh^2 x)] = 0:
    # x = m + 2 s^2 tanh(x) (fixed point; 2 s^2 = 0.005 here, so tanh(x*) is near tanh(m)).
    x = means.copy()
    for _ in range(50):
        x = means + 2 * std ** 2 * np.tanh(x)
    np.testing.assert_allclose(mode, np.tanh(x), atol=2e-3)
    np.testing.assert_allclose(mode, np.tanh(means), atol=1e-2)
    # Even for a wide distribution the mode is a valid action (std 5 saturates tanh in float32 to
    # exactly +-1, so the bound is closed).
    wide = dists.TanhNormal(f32([[0.0], [-1.0]]), f32([[5.0], [1.5]])).mode().numpy()
    assert np.all(np.abs(wide) <= 1.0)


def naive_tanh_normal_mode(mean, std):
    """Per dimension, tanh of the argmax over a fine x grid of log N(x; m, s) - log(1 - tanh(x)^2)."""
    out = []
    for m, s in zip(np.ravel(mean), np.ravel(std)):
        x = np.linspace(m - 6 * s, m + 6 * s, 200001)
        out.append(np.tanh(x[np.argmax(-0.5 * ((x - m) / s) ** 2 - naive_log_det(x))]))
    return np.reshape(out, np.shape(mean))


@pytest.mark.parametrize('mean, std, atol', [([[0.5]], [[0.05]], 1e-3), ([[-0.3]], [[0.05]], 1e-3),
                                             ([[2.0]], [[1.0]], 1e-3), ([[-2.0]], [[1.0]], 1e-3),
                                             ([[0.3]], [[0.5]], 6e-3)])
def test_tanh_normal_mode_one_dim_matches_naive(mean, std, atol):
    mode = dists.TanhNormal(f32(mean), f32(std)).mode().numpy()
    # e.g. m = 0.3, s = 0.5: x* = 0.3 + 0.5 tanh(x*) = 0.550, mode tanh(0.550) = 0.5005, not
    # tanh(0.3) = 0.291. atol: half the spacing of the 100 quantiles, 0.5 * 0.028 * s * (1 - a^2)
    # = 0.0053 there (the grid gives 0.504).
    np.testing.assert_allclose(mode, naive_tanh_normal_mode(mean, std), atol=atol)


def test_tanh_normal_mode_is_the_mode_of_every_dimension():
    # Dims are independent, so the mode of the joint density is the mode of each dim:
    # m = 2, s = 1 -> x* ~ 4, a ~ +0.999 ; m = -2, s = 1 -> a ~ -0.999 ; m = 0.5, s = 0.05 -> ~0.464.
    mean, std = [[2.0, -2.0, 0.5]], [[1.0, 1.0, 0.05]]
    mode = dists.TanhNormal(f32(mean), f32(std)).mode().numpy()
    np.testing.assert_allclose(mode, naive_tanh_normal_mode(mean, std), atol=3e-3)


def test_tanh_normal_keyed_sample_reproducible_and_reparameterised():
    mean = tf.Variable(f32([[0.2, -0.4]] * 3))
    std = f32([[0.5, 1.0]] * 3)
    keys = tf.constant([1, 2, 1], tf.int64)
    with tf.GradientTape() as tape:
        sample = dists.keyed_sample(dists.TanhNormal(mean, std), keys)
        total = tf.reduce_sum(sample)
    a = sample.numpy()
    np.testing.assert_array_equal(a[0], a[2])                       # equal keys, equal samples
    assert not np.array_equal(a[0], a[1])
    again = dists.keyed_sample(dists.TanhNormal(mean, std), keys).numpy()
    np.testing.assert_array_equal(again, a)
    # a = tanh(m + s eps): d a / d m = 1 - a^2
    np.testing.assert_allclose(tape.gradient(total, mean).numpy(), 1.0 - a.astype(np.float64) ** 2,
                               rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# 6. DreamerV2's truncated Normal actor
# ---------------------------------------------------------------------------------------------

def trunc_normal_mean(m, s, low=-1.0, high=1.0):
    """m + s (phi(alpha) - phi(beta)) / (Phi(beta) - Phi(alpha)), alpha/beta the standardised bounds."""
    a, b = (low - m) / s, (high - m) / s
    return m + s * (norm_pdf(a) - norm_pdf(b)) / (norm_cdf(b) - norm_cdf(a))


def test_trunc_normal_keyed_samples_bounds_and_mean():
    n = 20000
    mean = np.array([0.4, -0.9, 1.5])
    std = np.array([0.7, 0.3, 0.5])
    dist = dists.TruncNormal(tf.tile(f32(mean[None]), [n, 1]), tf.tile(f32(std[None]), [n, 1]))
    x = dists.keyed_sample(dist, tf.range(n, dtype=tf.int64)).numpy()
    assert x.shape == (n, 3)
    assert x.min() >= -1.0 and x.max() <= 1.0
    expected = trunc_normal_mean(mean, std)
    # Standard error below 0.6 / sqrt(20000) = 0.004.
    np.testing.assert_allclose(x.mean(0), expected, atol=0.015)
    assert abs(expected[2] - 1.5) > 0.5       # the truncation matters for the mean outside [-1, 1]
    # Naive rejection sampling agrees with the closed form (a check of the reference itself).
    raw = np.random.default_rng(0).normal(mean, std, size=(200000, 3))
    naive = [raw[:, i][np.abs(raw[:, i]) <= 1.0].mean() for i in range(3)]
    np.testing.assert_allclose(naive, expected, atol=0.01)


def test_trunc_normal_log_prob_closed_form_and_head():
    mean, std = np.array([[0.4, -0.9]]), np.array([[0.7, 0.3]])
    dist = dists.TruncNormal(f32(mean), f32(std))
    for action in ([[0.0, 0.0]], [[0.9, -0.99]], [[-0.5, 0.3]]):
        a = np.asarray(action)
        z = (a - mean) / std
        # log phi(z) - log s - log(Phi(beta) - Phi(alpha)), summed over the 2 dims
        norm = norm_cdf((1 - mean) / std) - norm_cdf((-1 - mean) / std)
        expected = np.sum(np.log(norm_pdf(z)) - np.log(std) - np.log(norm), -1)
        np.testing.assert_allclose(dist.log_prob(f32(a)).numpy(), expected, rtol=1e-5, atol=1e-5)
    # Head: mean tanh(m), std 2 sigmoid(s / 2) + 0.1: raw (0, 0) -> mean 0, std 2 * 0.5 + 0.1 = 1.1
    head = dists.trunc_normal(tf.zeros([1, 2]), tf.zeros([1, 2]))
    np.testing.assert_allclose(head.mean.numpy(), 0.0)
    np.testing.assert_allclose(head.std.numpy(), 1.1, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# 7. Slow target critic
# ---------------------------------------------------------------------------------------------

def _perturb(variables, seed):
    rng = np.random.default_rng(seed)
    for var in variables:
        var.assign(var + 0.1 + 0.1 * rng.standard_normal(var.shape).astype(np.float32))


def _snap(variables):
    return [v.numpy().copy() for v in variables]


def test_v2_slow_critic_is_copied_every_100_updates():
    agent = Agent(configlib.load('dreamerv2', ['dmc_proprio', 'debug']), OBS_SPACE, ACT_SPACE)
    ac = agent.ac
    before = _snap(ac.slow_critic.weights)
    _perturb(ac.critic.weights, 0)
    ac.update_slow_critic(tf.constant(99, tf.int64))            # 99 % 100 != 0: rate 0
    for slow, old in zip(_snap(ac.slow_critic.weights), before, strict=True):
        np.testing.assert_array_equal(slow, old)
    assert any(not np.array_equal(c, s) for c, s in zip(_snap(ac.critic.weights), before))
    ac.update_slow_critic(tf.constant(100, tf.int64))           # 100 % 100 == 0: rate 1, a copy
    for slow, critic in zip(_snap(ac.slow_critic.weights), _snap(ac.critic.weights), strict=True):
        np.testing.assert_array_equal(slow, critic)


def test_v1_has_no_slow_critic_updates(v1_agent):
    ac = v1_agent.ac
    before = _snap(ac.slow_critic.weights)
    _perturb(ac.critic.weights, 1)
    assert v1_agent.config.behavior.slow_critic_every == 0
    for k in (0, 1, 100):
        ac.update_slow_critic(tf.constant(k, tf.int64))
        for slow, old in zip(_snap(ac.slow_critic.weights), before, strict=True):
            np.testing.assert_array_equal(slow, old)


# ---------------------------------------------------------------------------------------------
# 8. Adam and the per-module optimisers
# ---------------------------------------------------------------------------------------------

def naive_adam(params, grads_per_step, lr, eps, clip, wd, b1=0.9, b2=0.999):
    """Float64 Adam, one loop per variable: global-norm clip, p *= 1 - wd on every variable (the V2
    release's decoupled decay, applied before the step), TF's form."""
    params = [np.asarray(p, np.float64).copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_per_step, start=1):
        grads = [np.asarray(g, np.float64) for g in grads]
        norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
        if clip and norm > clip:
            grads = [g * clip / norm for g in grads]
        for i, g in enumerate(grads):
            if wd:
                params[i] = params[i] * (1 - wd)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            params[i] = params[i] - lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m[i] / (np.sqrt(v[i]) + eps)
    return params


def test_adam_matches_naive_with_clip_and_weight_decay():
    rng = np.random.default_rng(3)
    w0, b0 = rng.normal(size=(3, 2)), np.array([2.0, -1.5])
    grads = [[rng.normal(size=(3, 2)) * scale, rng.normal(size=(2,)) * scale] for scale in (3.0, 0.1, 2.0)]
    w, b = tf.Variable(f32(w0)), tf.Variable(f32(b0))
    opt = optim.Adam([w, b], lr=0.01, eps=1e-5, clip=1.0, wd=0.1)
    norms = []
    for step in grads:
        norms.append(float(opt.apply([f32(g) for g in step])['grad_norm'].numpy()))
    want_w, want_b = naive_adam([w0, b0], grads, 0.01, 1e-5, 1.0, 0.1)
    np.testing.assert_allclose(w.numpy(), want_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.numpy(), want_b, rtol=1e-5, atol=1e-6)
    # The decay reaches the bias too: without it the bias would end about 3 steps * wd * |b| = 0.45 away.
    undecayed_b = naive_adam([w0, b0], grads, 0.01, 1e-5, 1.0, 0.0)[1]
    assert np.abs(undecayed_b - want_b).max() > 0.1
    # The reported norm is the one before clipping.
    np.testing.assert_allclose(norms, [math.sqrt(sum(float(np.sum(np.square(g))) for g in s)) for s in grads],
                               rtol=1e-5)
    assert int(opt.step.numpy()) == 3


def test_module_optimizers_give_each_group_its_own_slice():
    a, b = tf.Variable([1.0, 2.0]), tf.Variable([[3.0]])
    opts = optim.ModuleOptimizers({'model': ([a], optim.Adam([a], lr=0.1, eps=1e-7)),
                                   'actor': ([b], optim.Adam([b], lr=0.001, eps=1e-7))})
    metrics = opts.apply([f32([0.5, -2.0]), f32([[4.0]])])
    # First Adam step: m = 0.1 g, v = 0.001 g^2, alpha = lr sqrt(0.001) / 0.1
    #   -> step = lr g / (|g| + eps / sqrt(0.001)) ~ lr sign(g)
    step = lambda g, lr: lr * g / (abs(g) + 1e-7 / math.sqrt(0.001))  # noqa: E731
    np.testing.assert_allclose(a.numpy(), [1.0 - step(0.5, 0.1), 2.0 - step(-2.0, 0.1)], rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), [[3.0 - step(4.0, 0.001)]], rtol=1e-6)
    assert set(metrics) == {'model/grad_norm', 'model/lr', 'actor/grad_norm', 'actor/lr'}
    np.testing.assert_allclose(metrics['model/grad_norm'].numpy(), math.sqrt(0.25 + 4.0), rtol=1e-6)
    np.testing.assert_allclose(metrics['actor/lr'].numpy(), 0.001, rtol=1e-6)
    assert int(opts.step.numpy()) == 1
    with pytest.raises(ValueError):
        opts.apply([f32([0.5, -2.0])])


def test_module_optimizers_hold_a_group_until_its_start():
    # run.actor_after: the actor's Adam makes no step before update 2, then its first step is a fresh
    # Adam's first step (bias correction at t = 1), not one corrected for the held updates.
    a, b = tf.Variable([1.0]), tf.Variable([3.0])
    opts = optim.ModuleOptimizers({'model': ([a], optim.Adam([a], lr=0.1, eps=1e-7)),
                                   'actor': ([b], optim.Adam([b], lr=0.001, eps=1e-7))},
                                  start={'actor': 2})
    actor_opt = opts.groups['actor'][1]
    for _ in range(2):
        metrics = opts.apply([f32([0.5]), f32([4.0])])
        assert b.numpy()[0] == 3.0 and int(actor_opt.step.numpy()) == 0
        assert float(actor_opt.m[0].numpy()[0]) == 0.0 and float(metrics['actor/lr'].numpy()) == 0.0
        np.testing.assert_allclose(metrics['actor/grad_norm'].numpy(), 4.0, rtol=1e-6)
    opts.apply([f32([0.5]), f32([4.0])])
    step = 0.001 * 4.0 / (4.0 + 1e-7 / math.sqrt(0.001))          # lr g / (|g| + eps / sqrt(1 - beta2))
    np.testing.assert_allclose(b.numpy(), [3.0 - step], rtol=1e-7)
    assert int(actor_opt.step.numpy()) == 1 and int(opts.groups['model'][1].step.numpy()) == 3


def test_v1_agent_uses_three_adams_with_spec_rates(v1_agent):
    opt = v1_agent.opt
    assert isinstance(opt, optim.ModuleOptimizers)
    lrs = {name: group_opt.lr for name, (_, group_opt) in opt.groups.items()}
    assert lrs == pytest.approx({'model': 6e-4, 'actor': 8e-5, 'critic': 8e-5})
    assert all(isinstance(o, optim.Adam) and o.eps == pytest.approx(1e-7) and o.clip == 100.0
               for _, o in opt.groups.values())


# ---------------------------------------------------------------------------------------------
# 9. Cumulative weights
# ---------------------------------------------------------------------------------------------

def test_cumulative_weight_exclusive_and_inclusive_by_hand():
    con = f32([[0.9, 0.8, 0.5, 1.0]])
    # exclusive: 1, 0.9, 0.9 * 0.8 = 0.72, 0.72 * 0.5 = 0.36
    np.testing.assert_allclose(ops.cumulative_weight(con, exclusive=True).numpy(),
                               [[1.0, 0.9, 0.72, 0.36]], rtol=1e-6)
    # inclusive: 0.9, 0.72, 0.36, 0.36
    np.testing.assert_allclose(ops.cumulative_weight(con, exclusive=False).numpy(),
                               [[0.9, 0.72, 0.36, 0.36]], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# 10. Version configs against SPEC.md
# ---------------------------------------------------------------------------------------------

def test_dreamerv1_defaults_follow_spec():
    c = configlib.load('dreamerv1')
    assert (c.batch_size, c.batch_length) == (50, 50)
    assert (c.rssm.latent, c.rssm.stoch, c.rssm.deter, c.rssm.min_std) == ('gaussian', 30, 200, 0.1)
    assert (c.loss.kl_form, c.loss.free_nats, c.loss.kl) == ('v1', 3.0, 1.0)
    assert {k: (c.opt[k].lr, c.opt[k].eps, c.opt[k].clip) for k in ('model', 'actor', 'critic')} == \
        pytest.approx({'model': (6e-4, 1e-7, 100.0), 'actor': (8e-5, 1e-7, 100.0),
                       'critic': (8e-5, 1e-7, 100.0)})
    assert c.behavior.expl_noise == 0.3 and c.env.action_repeat == 2
    assert (c.behavior.discount, c.behavior.return_lambda, c.behavior.imag_length) == (0.99, 0.95, 15)
    assert c.behavior.actor_grad_cont == 0.0 and c.behavior.slow_critic_every == 0
    assert (c.actor.dist_cont, c.actor.init_std, c.actor.mean_scale) == ('tanh_normal', 5.0, 5.0)
    # 100 updates of 50 x 50 every 1000 env steps = 500 policy steps at action repeat 2.
    assert c.run.train_every * c.env.action_repeat == 1000
    assert c.run.train_ratio * c.run.train_every / (c.batch_size * c.batch_length) == 100
    assert c.run.prefill == 5000


def test_dreamerv2_defaults_and_dmc_overlay_follow_spec():
    c = configlib.load('dreamerv2')
    assert (c.rssm.latent, c.rssm.stoch, c.rssm.classes) == ('categorical', 32, 32)
    assert (c.loss.kl_form, c.loss.kl_balance, c.loss.kl, c.loss.free_nats) == ('balance', 0.8, 0.1, 0.0)
    assert c.loss.free_avg is True and c.loss.con == 5.0
    assert (c.behavior.slow_critic_every, c.behavior.slow_critic_rate) == (100, 1.0)
    assert c.behavior.return_critic == 'slow' and c.behavior.actor_grad_disc == 1.0
    for name in ('model', 'actor', 'critic'):
        assert (c.opt[name].eps, c.opt[name].clip, c.opt[name].wd) == pytest.approx((1e-5, 100.0, 1e-6))
    assert {k: c.opt[k].lr for k in ('model', 'actor', 'critic')} == \
        pytest.approx({'model': 2e-4, 'actor': 4e-5, 'critic': 1e-4})
    assert (c.batch_size, c.batch_length) == (16, 50)
    assert (c.behavior.discount, c.behavior.actent) == (0.999, 1e-3)
    dmc = configlib.load('dreamerv2', ['dmc_proprio'])
    assert (dmc.loss.kl, dmc.loss.free_nats) == (1.0, 1.0)
    assert (dmc.rssm.deter, dmc.env.action_repeat, dmc.behavior.discount) == (200, 2, 0.99)
    assert dmc.behavior.actor_grad_cont == 0.0
    assert {k: dmc.opt[k].lr for k in ('model', 'actor', 'critic')} == \
        pytest.approx({'model': 3e-4, 'actor': 8e-5, 'critic': 8e-5})


def test_dreamerv3_2023_follows_spec():
    c = configlib.load('dreamerv3_2023')
    assert (c.loss.kl_form, c.loss.dyn, c.loss.rep) == ('dyn_rep', 0.5, 0.1)
    assert {k: c.opt[k].lr for k in ('model', 'actor', 'critic')} == \
        pytest.approx({'model': 1e-4, 'actor': 3e-5, 'critic': 3e-5})
    assert (c.opt.model.eps, c.opt.model.clip) == pytest.approx((1e-8, 1000.0))
    assert (c.opt.actor.eps, c.opt.actor.clip, c.opt.critic.eps, c.opt.critic.clip) == \
        pytest.approx((1e-5, 100.0, 1e-5, 100.0))
    assert (c.rssm.stoch, c.rssm.classes, c.rssm.core) == (32, 32, 'norm_gru')
    norms = {k: v for k, v in c.flat().items() if k.endswith('.norm')}
    assert norms and set(norms.values()) == {'layer'}, norms
    assert c.env.action_repeat == 1
    assert configlib.load('dreamerv3_2023', ['dmc_proprio']).env.action_repeat == 2


@pytest.mark.parametrize('version', ['dreamerv1', 'dreamerv2', 'dreamerv3_2023'])
def test_summary_counts_every_trainable_weight_of_each_version(version):
    # V1 and V2-on-DMC have no continue head; the summary must skip it and still add up.
    config = configlib.load(version, ['dmc_proprio', 'debug'])
    agent = Agent(config, OBS_SPACE, ACT_SPACE)
    counts = agent.summary()
    assert ('cont' in counts) == (version == 'dreamerv3_2023')
    expected = sum(int(np.prod(v.shape)) for v in agent.train_vars)
    assert counts['total'] == expected


# ---------------------------------------------------------------------------------------------
# 11. The V1 / V2 releases, line by line (issue 18)
# ---------------------------------------------------------------------------------------------


def test_trunc_normal_clip_passes_the_gradient_straight_through():
    # mean 1, std 1e-6, u = 0.9: alpha = -2e6, beta = 0, so P = 0.5 u = 0.45, z = Phi^-1(0.45) and
    # x = 1 + 1e-6 z = 1 - 1.26e-7 lies above the clip at 1 - 1e-6: the value is clipped.
    # d x / d mean = 1 - ((1 - u) phi(alpha) + u phi(beta)) / phi(z) = 1 - 0.9 phi(0) / phi(z).
    mean = tf.Variable([[1.0]])
    with tf.GradientTape() as tape:
        x = dists.TruncNormal(mean, f32([[1e-6]])).sample_from_uniform(f32([[0.9]]))
    z = -0.12566134685507402                                  # Phi^-1(0.45)
    expected = 1.0 - 0.9 * norm_pdf(0.0) / norm_pdf(z)        # 0.0929
    assert x.numpy()[0, 0] == np.float32(1.0 - 1e-6)
    np.testing.assert_allclose(tape.gradient(x, mean).numpy(), [[expected]], rtol=2e-3)
    assert abs(expected) > 0.05                               # a hard clip would give exactly 0
    np.testing.assert_allclose(norm_cdf(z), 0.45, rtol=1e-9)


def test_v2_crafter_is_the_releases_crafter_setting():
    # dreamerv2/configs.yaml: defaults + `crafter:` (not the Atari overlay).
    c = configlib.load('dreamerv2', ['crafter'])
    assert (c.rssm.deter, c.rssm.hidden, c.rssm.stoch, c.rssm.classes) == (1024, 1024, 32, 32)
    norms = {k: v for k, v in c.flat().items() if k.endswith('.norm')}
    assert len(norms) == 7 and set(norms.values()) == {'layer'}, norms
    loss = c.loss
    assert (loss.kl, loss.con, loss.rew, loss.free_nats, loss.kl_balance) == (1.0, 1.0, 1.0, 0.0, 0.8)
    assert c.loss.reward_transform == 'tanh'
    assert (c.behavior.discount, c.behavior.actent, c.behavior.actor_grad_disc) == (0.999, 3e-3, 1.0)
    assert {k: c.opt[k].lr for k in ('model', 'actor', 'critic')} == pytest.approx(
        {'model': 1e-4, 'actor': 1e-4, 'critic': 1e-4})
    assert (c.batch_size, c.batch_length, c.env.action_repeat, c.run.prefill) == (16, 50, 1, 10000)
    # One update of 16 x 50 every 5 env steps.
    assert c.run.train_ratio * c.run.train_every / (c.batch_size * c.batch_length) == 1


def test_v2_dmc_prefill_counts_the_releases_policy_steps():
    # The release's prefill (1000) counts policy steps; ours counts env steps.
    for overlay in ('dmc_vision', 'dmc_proprio'):
        c = configlib.load('dreamerv2', [overlay])
        assert c.run.prefill // c.env.action_repeat == 1000, overlay
    atari = configlib.load('dreamerv2')
    assert atari.run.prefill // atari.env.action_repeat == 50000


def test_v2_prioritize_ends_where_the_release_has_it():
    # dreamerv2/configs.yaml: replay.prioritize_ends True in defaults (Atari, Crafter), False on DMC.
    on = [configlib.load('dreamerv2', o).replay.prioritize_ends
          for o in ([], ['atari'], ['crafter'], ['dmc_vision'], ['dmc_proprio'], ['gym'])]
    assert on == [True, True, True, False, False, False]
    assert configlib.load('dreamerv1').replay.prioritize_ends is False

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def test_v2_reward_vector_and_critic_losses_are_the_releases_unit_normal():
    # The release's `dist: mse` is Normal(mean, 1): -log p = 0.5 (x - mean)^2 + 0.5 log(2 pi).
    config = configlib.load('dreamerv2', ['dmc_proprio', 'debug'])
    agent = Agent(config, OBS_SPACE, ACT_SPACE)
    data = make_batch()
    data['reward'] = f32([[0.0, 1.0, -2.0, 3.5, 0.25], [10.0, 0.0, 0.0, -1.0, 2.0]])
    plain = dict(data)
    key = plain.pop('key')
    losses, post, _ = agent.wm.loss(plain, key=key)
    feat = agent.wm.rssm.get_feat(post)
    mean = agent.wm.reward(feat).mean().numpy().astype(np.float64)           # [B, T]
    expected = 0.5 * (data['reward'].numpy() - mean) ** 2 + HALF_LOG_2PI
    np.testing.assert_allclose(losses['rew'].numpy(), expected, rtol=1e-5, atol=1e-6)
    # The full squared error (the old MSEDist) would be 2 (expected - 0.5 log 2 pi): far off.
    assert np.abs(2 * (expected - HALF_LOG_2PI) - losses['rew'].numpy()).max() > 1.0
    # Vectors: the same per dimension, summed over the 5 dims.
    pred = agent.wm.decoder(feat)['vector'].mean().numpy().astype(np.float64)
    vec = 0.5 * np.sum((data['vector'].numpy() - pred) ** 2, -1) + VECTOR * HALF_LOG_2PI
    np.testing.assert_allclose(losses['vector'].numpy(), vec, rtol=1e-5, atol=1e-5)
    # The critic and its slow copy score returns the same way.
    dist = agent.ac.critic(feat)
    target = f32(np.full((2, 5), 3.0))
    crit = 0.5 * (3.0 - dist.mean().numpy().astype(np.float64)) ** 2 + HALF_LOG_2PI
    np.testing.assert_allclose(-dist.log_prob(target).numpy(), crit, rtol=1e-5, atol=1e-6)
    for name in ('reward_head', 'critic'):
        assert config[name].dist == 'unit_normal'
    assert config.decoder.vector_dist == 'normal'


def naive_current_returns(rew, con, val, lam):
    """t_k = r_k + d_k ((1 - lam) v_{k+1} + lam t_{k+1}), t_H = v_H: the releases' lambda_return
    fed reward[:-1], value[:-1], discount[:-1] and bootstrap value[-1], one row at a time."""
    n, h1 = np.shape(rew)
    out = np.zeros((n, h1 - 1))
    for i in range(n):
        nxt = val[i][h1 - 1]
        for k in range(h1 - 2, -1, -1):
            nxt = rew[i][k] + con[i][k] * ((1.0 - lam) * val[i][k + 1] + lam * nxt)
            out[i, k] = nxt
    return out


def test_current_returns_by_hand_and_naive():
    # H = 2: t1 = r1 + d1 v2 (lam drops out: t2 = v2); t0 = r0 + d0 ((1 - lam) v1 + lam t1).
    rew, con, val = [[1.0, 2.0, 99.0]], [[0.5, 0.9, 99.0]], [[99.0, 10.0, 20.0]]
    t1 = 2.0 + 0.9 * 20.0                                   # 20
    t0 = 1.0 + 0.5 * (0.05 * 10.0 + 0.95 * t1)              # 1 + 0.5 * (0.5 + 19) = 10.75
    out = behavior.current_returns(f32(rew), f32(con), f32(val), 0.95).numpy()
    np.testing.assert_allclose(out, [[t0, t1]], rtol=1e-6)
    rng = np.random.default_rng(7)
    rew, val = rng.normal(size=(2, 3, 6))
    con = rng.uniform(0.0, 1.0, size=(3, 6))
    out = behavior.current_returns(f32(rew), f32(con), f32(val), 0.9).numpy()
    np.testing.assert_allclose(out, naive_current_returns(rew, con, val, 0.9), rtol=1e-5, atol=1e-5)


def release_fake(version, imag, act, rho):
    """ActorCritic with the version's settings and its networks replaced by feat columns:
    0 reward, 1 discount (gamma inside), 2 critic, 3 slow critic, 4 logpi factor, 5 entropy."""
    return column_actor_critic(configlib.load(version, ['dmc_proprio', 'debug']), f32(imag), f32(act), rho)


def fake_imagination(b, t, h, seed):
    rng = np.random.default_rng(seed)
    n = b * t
    imag = rng.normal(size=(n, h + 1, 6))
    imag[..., 1] = rng.uniform(0.5, 1.0, size=(n, h + 1))
    imag[..., 5] = rng.uniform(0.0, 2.0, size=(n, h + 1))
    act = rng.normal(size=(n, h + 1, 1))
    post = {'f': f32(imag[:, 0].reshape(b, t, 6))}
    return imag, act, post


def check_v2_release_indexing():
    # Release (dreamerv2/agent.py, ActorCritic.actor_loss / critic_loss / target, imagine):
    #   disc_k from the head (disc_0: see behavior.first_discount, the V2 config pins it);
    #   t_k = r_k + disc_k ((1 - lam) v_{k+1} + lam t_{k+1}), t_H = v_H, v = the slow critic;
    #   w_k = prod_{j<k} disc_j; actor: k = 0 .. H-2, -w_k (logpi_k sg(t_{k+1} - v_k) + eta ent_k);
    #   critic: k = 0 .. H-1, -w_k log p_critic(s_k)(t_k).
    b, t, h = 2, 2, 4
    imag, act, post = fake_imagination(b, t, h, 3)
    term = tf.constant([[False, True], [False, False]])
    data = {'is_terminal': term, 'reward': tf.zeros([b, t])}
    ac, wm = release_fake('dreamerv2', imag, act, rho=1.0)
    losses, metrics = ac.loss(wm, post, data)
    gamma, lam, eta = 0.99, 0.95, ac.config.behavior.actent
    rew, con, crit, slow = imag[..., 0], imag[..., 1].copy(), imag[..., 2], imag[..., 3]
    if ac.first_discount == 'replay':
        con[:, 0] = gamma * (1.0 - term.numpy().reshape(-1))
    logpi, ent = imag[..., 4] * act[..., 0], imag[..., 5]
    n = b * t
    actor, critic = np.zeros((n, h - 1)), np.zeros((n, h))
    for i in range(n):
        targets = naive_current_returns(rew[i:i + 1], con[i:i + 1], slow[i:i + 1], lam)[0]
        w = [np.prod(con[i, :k]) for k in range(h + 1)]
        for k in range(h - 1):
            actor[i, k] = -w[k] * (logpi[i, k] * (targets[k + 1] - slow[i, k]) + eta * ent[i, k])
        for k in range(h):
            critic[i, k] = w[k] * (targets[k] - crit[i, k]) ** 2
    np.testing.assert_allclose(losses['actor'].numpy(), actor, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(losses['critic'].numpy(), critic, rtol=1e-4, atol=1e-4)
    return imag, con


def test_v2_actor_and_critic_losses_follow_the_release_indexing():
    check_v2_release_indexing()


def test_v2_release_forms_in_the_config():
    c = configlib.load('dreamerv2').behavior
    assert c.return_form == 'current'
    with pytest.raises(ValueError, match='return_form'):
        Agent(configlib.load('dreamerv2', ['dmc_proprio', 'debug'], {'behavior.return_form': 'x'}),
              OBS_SPACE, ACT_SPACE)


def test_replay_first_discount_by_hand():
    con = f32([[0.8, 0.7, 0.6], [0.8, 0.7, 0.6], [0.8, 0.7, 0.6], [0.8, 0.7, 0.6]])
    term = tf.constant([[False, True], [False, False]])       # B=2, T=2 -> 4 starts, (0, 1) terminal
    out = behavior.replay_first_discount(con, term, 0.99).numpy()
    np.testing.assert_allclose(out[:, 0], [0.99, 0.0, 0.99, 0.99], rtol=1e-7)
    np.testing.assert_array_equal(out[:, 1:], con.numpy()[:, 1:])


def test_v2_first_discount_comes_from_the_replay():
    assert configlib.load('dreamerv2').behavior.first_discount == 'replay'
    imag, con = check_v2_release_indexing()
    # Start (0, 1) is terminal: its discount is 0, so nothing after it counts; the head said 0.5 to 1.
    assert con[1, 0] == 0.0 and imag[1, 0, 1] > 0.4


def test_v2_discount_head_learns_gamma_times_continue():
    # dreamerv2/agent.py preprocess: discount = gamma (1 - is_terminal) is the head's Bernoulli
    # target; imagine() reads the head's mean without another gamma.
    config = configlib.load('dreamerv2', ['gym', 'debug'])
    agent = Agent(config, OBS_SPACE, ActionSpec(discrete=True, size=2))
    data = make_batch()
    data['action'] = tf.one_hot(tf.zeros([2, 5], tf.int32), 2)
    data['is_terminal'] = tf.constant([[False] * 4 + [True], [False] * 5])
    plain = dict(data)
    key = plain.pop('key')
    losses, post, _ = agent.wm.loss(plain, key=key)
    feat = agent.wm.rssm.get_feat(post)
    p = agent.wm.cont(feat).mean().numpy().astype(np.float64)
    y = 0.99 * (1.0 - data['is_terminal'].numpy())           # gym overlay: gamma 0.99
    expected = -(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))
    np.testing.assert_allclose(losses['con'].numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(agent.wm.imagined_discount(feat).numpy(), p, rtol=1e-6)


def test_v1_actor_and_critic_losses_follow_the_release_indexing():
    # Release (dreamer/dreamer.py, _train / _imagine_ahead): 15 imagined states s_1 .. s_H after the
    # start, pcont = gamma, t_k = r_k + gamma ((1 - lam) v_{k+1} + lam t_{k+1}) for k = 1 .. H-1 on the
    # online critic; discount = [1, gamma, ..., gamma^(H-2)]; actor -mean(discount * t_{1..H-1});
    # critic on s_1 .. s_{H-1} only, -mean(discount * log p(s_k)(t_k)).
    b, t, h = 1, 3, 4
    imag, act, post = fake_imagination(b, t, h, 4)
    gamma, lam = 0.99, 0.95
    imag[..., 1] = gamma
    data = {'is_terminal': tf.zeros([b, t], tf.bool), 'reward': tf.zeros([b, t])}
    ac, wm = release_fake('dreamerv1', imag, act, rho=0.0)
    losses, _ = ac.loss(wm, post, data)
    rew, crit = imag[..., 0], imag[..., 2]
    n = b * t
    actor, critic = np.zeros((n, h - 1)), np.zeros((n, h - 1))
    for i in range(n):
        targets = naive_current_returns(rew[i:i + 1, 1:], imag[i:i + 1, 1:, 1], crit[i:i + 1, 1:], lam)[0]
        for j in range(h - 1):                       # targets[j] = t_{j+1}, discount[j] = gamma^j
            actor[i, j] = -gamma ** j * targets[j]
            critic[i, j] = gamma ** j * (targets[j] - crit[i, j + 1]) ** 2
    np.testing.assert_allclose(losses['actor'].numpy(), actor, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(losses['critic'].numpy(), critic, rtol=1e-4, atol=1e-4)


def test_v1_release_forms_in_the_config():
    c = configlib.load('dreamerv1').behavior
    assert (c.return_form, c.first_discount, c.critic_start) == ('current', 'model', False)


def test_v1_logs_the_raw_kl_beside_the_clipped_loss(v1_agent):
    wm = v1_agent.wm
    data = make_batch()
    plain = dict(data)
    key = plain.pop('key')
    losses, _, metrics = wm.loss(plain, key=key)
    # The same keyed filtering again gives the posterior and prior that the loss saw.
    post, prior = wm.rssm.observe(wm.encoder(plain), plain['action'], plain['is_first'], key=key)
    naive = naive_gauss_kl(post['mean'].numpy(), post['std'].numpy(), prior['mean'].numpy(),
                           prior['std'].numpy()).mean()
    np.testing.assert_allclose(metrics['kl_raw'].numpy(), naive, rtol=1e-5)
    # The loss is max(mean KL, 3 free nats): it can sit at exactly 3 while the raw KL is below it.
    np.testing.assert_allclose(losses['kl'].numpy(), max(naive, 3.0), rtol=1e-5)
    assert 'kl_raw' not in Agent(configlib.load('dreamerv3_2023', ['dmc_proprio', 'debug']), OBS_SPACE,
                                 ACT_SPACE).wm.loss(plain, key=key)[2]
