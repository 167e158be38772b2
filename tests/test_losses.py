"""World-model KL terms and actor-critic losses against hand arithmetic and naive loops (SPEC.md)."""

import math
import types

import numpy as np
import pytest
import tensorflow as tf

from dreamer_tf import behavior, latents, rssm
from dreamer_tf import config as configlib
from dreamer_tf.envs import ActionSpec
from helpers import f32, naive_lambda_return, np_log_softmax


def is_zero_grad(grad):
    return grad is None or not np.any(tf.convert_to_tensor(grad).numpy())


# ---------------------------------------------------------------------------------------------
# Categorical KL and the DreamerV3 dyn / rep losses
# ---------------------------------------------------------------------------------------------

def naive_kl(logp, logq):
    """sum_s sum_c p log(p / q) for every [b, t], one latent and one class at a time."""
    logp, logq = np.asarray(logp, np.float64), np.asarray(logq, np.float64)
    batch, length, stoch, classes = logp.shape
    out = np.zeros((batch, length))
    for b in range(batch):
        for t in range(length):
            for s in range(stoch):
                for c in range(classes):
                    p = math.exp(logp[b, t, s, c])
                    out[b, t] += p * (logp[b, t, s, c] - logq[b, t, s, c])
    return out


# KL([0.9, 0.1] || [0.5, 0.5]) = 0.9 ln 1.8 + 0.1 ln 0.2
#                             = 0.9 * 0.5877866649 + 0.1 * (-1.6094379124) = 0.3680642072
KL_ONE = 0.9 * math.log(1.8) + 0.1 * math.log(0.2)
P = [0.9, 0.1]
U = [0.5, 0.5]


def test_kl_constant_is_right():
    np.testing.assert_allclose(KL_ONE, 0.3680642072, rtol=1e-9)


def test_kl_categorical_matches_naive():
    rng = np.random.default_rng(0)
    logp = np_log_softmax(rng.normal(size=(2, 3, 4, 5)) * 2).astype(np.float32)
    logq = np_log_softmax(rng.normal(size=(2, 3, 4, 5)) * 2).astype(np.float32)
    kl = latents.kl_categorical(f32(logp), f32(logq))
    assert kl.shape == (2, 3)
    np.testing.assert_allclose(kl.numpy(), naive_kl(logp, logq), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(latents.kl_categorical(f32(logp), f32(logp)).numpy(), 0.0, atol=1e-6)


def test_kl_categorical_by_hand_and_direction():
    logp = f32(np.log([[[P, P]]]))       # [1, 1, 2 latents, 2 classes]
    logq = f32(np.log([[[U, U]]]))
    # KL(p || q) = 2 * 0.3680642 = 0.7361284
    np.testing.assert_allclose(latents.kl_categorical(logp, logq).numpy(), [[2 * KL_ONE]], rtol=1e-5)
    # KL(q || p) = 2 * (0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1)) = 2 * 0.5108256 = 1.0216512
    reverse = 2 * (0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(5.0))
    np.testing.assert_allclose(latents.kl_categorical(logq, logp).numpy(), [[reverse]], rtol=1e-5)


def KL(p, q):
    """KL of two categorical latent states: the `kl` that rssm.kl_dyn_rep takes."""
    return latents.kl_categorical(p['logit'], q['logit'])


def _kl_case():
    """post / prior states of [B=1, T=3, S=4, C=2] log-probabilities.

    t=0: four latents each with KL 0.368 < 1, sum 1.472 > 1 -> 1.4722568 (per-latent clip would give 4)
    t=1: two such latents and two identical ones, sum 0.736 < 1 -> exactly 1.0
    t=2: identical everywhere, KL 0 -> exactly 1.0
    """
    post = np.log([[[P, P, P, P], [P, P, U, U], [U, U, U, U]]])
    prior = np.log([[[U, U, U, U], [U, U, U, U], [U, U, U, U]]])
    return {'logit': f32(post)}, {'logit': f32(prior)}


def test_kl_dyn_rep_free_nats_clip_after_summing_latents():
    post, prior = _kl_case()
    dyn, rep = rssm.kl_dyn_rep(KL, post, prior, 1.0)
    expected = [[4 * KL_ONE, 1.0, 1.0]]     # 4 * 0.3680642 = 1.4722568
    np.testing.assert_allclose(dyn.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(rep.numpy(), expected, rtol=1e-5)
    assert dyn.numpy()[0, 1] == 1.0 and rep.numpy()[0, 2] == 1.0
    # Direction: both are KL(post || prior); the reverse KL at t=0 would be 4 * 0.5108 = 2.043.
    assert abs(dyn.numpy()[0, 0] - 4 * 0.5108256) > 0.5
    # Without free nats nothing is clipped.
    dyn0, _ = rssm.kl_dyn_rep(KL, post, prior, 0.0)
    np.testing.assert_allclose(dyn0.numpy(), [[4 * KL_ONE, 2 * KL_ONE, 0.0]], rtol=1e-5, atol=1e-6)


def test_kl_dyn_rep_gradients_reach_one_side_each():
    post, prior = _kl_case()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([post['logit'], prior['logit']])
        dyn, rep = rssm.kl_dyn_rep(KL, post, prior, 1.0)
        dyn_sum, rep_sum = tf.reduce_sum(dyn), tf.reduce_sum(rep)
    assert is_zero_grad(tape.gradient(dyn_sum, post['logit']))
    assert is_zero_grad(tape.gradient(rep_sum, prior['logit']))
    g_prior = tape.gradient(dyn_sum, prior['logit']).numpy()
    g_post = tape.gradient(rep_sum, post['logit']).numpy()
    # dyn: d KL(p || softmax(l)) / d l_j = q_j - p_j, only where the KL is above the free nats
    # (t=0): q - p = [0.5 - 0.9, 0.5 - 0.1] = [-0.4, 0.4] for every latent at t=0, zero at the
    # clipped steps.
    expected_prior = np.zeros((1, 3, 4, 2))
    expected_prior[0, 0] = [-0.4, 0.4]
    np.testing.assert_allclose(g_prior, expected_prior, atol=1e-6)
    # rep: d KL(softmax(l) || q) / d l_j = p_j (ln p_j - ln q_j - KL_latent):
    #   class 0: 0.9 * (ln 1.8 - 0.3680642) = 0.9 * 0.2197225 = 0.1977502
    #   class 1: 0.1 * (ln 0.2 - 0.3680642) = 0.1 * -1.9775021 = -0.1977502
    expected_post = np.zeros((1, 3, 4, 2))
    expected_post[0, 0] = [0.9 * (math.log(1.8) - KL_ONE), 0.1 * (math.log(0.2) - KL_ONE)]
    np.testing.assert_allclose(g_post, expected_post, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# actor_loss / critic_loss / pad_last
# ---------------------------------------------------------------------------------------------

def naive_actor_loss(logpi, ent, ret, val, weight, scale, actent):
    n, h = np.asarray(ret).shape
    out = np.zeros((n, h))
    for i in range(n):
        for t in range(h):
            adv = (ret[i][t] - val[i][t]) / scale
            out[i, t] = -weight[i][t] * (logpi[i][t] * adv + actent * ent[i][t])
    return out


def naive_critic_loss(critic_logp, slow_logp, weight, slowreg):
    n, h1 = np.asarray(critic_logp).shape
    out = np.zeros((n, h1 - 1))
    for i in range(n):
        for t in range(h1 - 1):
            out[i, t] = -weight[i][t] * (critic_logp[i][t] + slowreg * slow_logp[i][t])
    return out


def test_actor_loss_by_hand():
    # H = 2 returns, 3 imagined states; the last column of logpi/ent/val/weight must be ignored.
    logpi = f32([[-1.0, -2.0, -9.0]])
    ent = f32([[0.5, 1.0, 9.0]])
    ret = f32([[3.0, 5.0]])
    val = f32([[1.0, 1.0, 99.0]])
    weight = f32([[1.0, 0.5, 99.0]])
    loss = behavior.actor_loss(logpi, ent, ret, val, weight, 2.0, 3e-4)
    # t=0: adv = (3 - 1) / 2 = 1 -> -1.0 * (-1 * 1 + 3e-4 * 0.5) = 1 - 0.00015 = 0.99985
    # t=1: adv = (5 - 1) / 2 = 2 -> -0.5 * (-2 * 2 + 3e-4 * 1.0) = 0.5 * 3.9997 = 1.99985
    np.testing.assert_allclose(loss.numpy(), [[0.99985, 1.99985]], rtol=1e-6)


def test_actor_loss_matches_naive_loop():
    rng = np.random.default_rng(1)
    n, h = 5, 7
    logpi = rng.normal(size=(n, h + 1))
    ent = rng.uniform(0, 2, size=(n, h + 1))
    ret = rng.normal(size=(n, h)) * 100
    val = rng.normal(size=(n, h + 1)) * 100
    weight = np.cumprod(rng.uniform(0.9, 1.0, size=(n, h + 1)), 1)
    scale = 37.5
    loss = behavior.actor_loss(f32(logpi), f32(ent), f32(ret), f32(val), f32(weight), scale, 3e-4)
    expected = naive_actor_loss(logpi, ent, ret, val, weight, scale, 3e-4)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_actor_loss_gradients_only_into_logpi_and_ent():
    rng = np.random.default_rng(2)
    n, h = 3, 4
    logpi, ent = f32(rng.normal(size=(n, h + 1))), f32(rng.uniform(size=(n, h + 1)))
    ret, val = f32(rng.normal(size=(n, h))), f32(rng.normal(size=(n, h + 1)))
    weight = f32(rng.uniform(0.5, 1.0, size=(n, h + 1)))
    scale = tf.constant(2.5)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([logpi, ent, ret, val, weight, scale])
        total = tf.reduce_sum(behavior.actor_loss(logpi, ent, ret, val, weight, scale, 3e-4))
    for x in (ret, val, weight, scale):
        assert is_zero_grad(tape.gradient(total, x))
    w, adv = weight.numpy()[:, :-1], (ret.numpy() - val.numpy()[:, :-1]) / 2.5
    # d/d logpi_t = -w_t * adv_t, d/d ent_t = -w_t * 3e-4; nothing for the last state.
    np.testing.assert_allclose(tape.gradient(total, logpi).numpy()[:, :-1], -w * adv, rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(total, ent).numpy()[:, :-1], -w * 3e-4, rtol=1e-5)
    assert not np.any(tape.gradient(total, logpi).numpy()[:, -1])
    assert not np.any(tape.gradient(total, ent).numpy()[:, -1])


def test_critic_loss_by_hand_and_naive():
    critic_logp = f32([[-1.0, -2.0, -50.0]])
    slow_logp = f32([[-0.5, -0.25, -50.0]])
    weight = f32([[1.0, 0.5, 99.0]])
    # t=0: -1.0 * (-1 + 1.0 * -0.5) = 1.5 ; t=1: -0.5 * (-2 + -0.25) = 1.125
    np.testing.assert_allclose(behavior.critic_loss(critic_logp, slow_logp, weight, 1.0).numpy(),
                               [[1.5, 1.125]], rtol=1e-6)
    # slowreg 0.3: t=0: -(-1 - 0.15) = 1.15 ; t=1: -0.5 * (-2 - 0.075) = 1.0375
    np.testing.assert_allclose(behavior.critic_loss(critic_logp, slow_logp, weight, 0.3).numpy(),
                               [[1.15, 1.0375]], rtol=1e-6)
    rng = np.random.default_rng(3)
    c, s = -rng.uniform(size=(4, 6)), -rng.uniform(size=(4, 6))
    w = rng.uniform(size=(4, 6))
    np.testing.assert_allclose(behavior.critic_loss(f32(c), f32(s), f32(w), 1.0).numpy(),
                               naive_critic_loss(c, s, w, 1.0), rtol=1e-5)


def test_critic_loss_gradients():
    rng = np.random.default_rng(4)
    c, s = f32(-rng.uniform(size=(2, 4))), f32(-rng.uniform(size=(2, 4)))
    w = f32(rng.uniform(size=(2, 4)))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([c, s, w])
        total = tf.reduce_sum(behavior.critic_loss(c, s, w, 1.0))
    assert is_zero_grad(tape.gradient(total, w))
    expected = np.concatenate([-w.numpy()[:, :-1], np.zeros((2, 1))], 1)
    np.testing.assert_allclose(tape.gradient(total, c).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(total, s).numpy(), expected, rtol=1e-6)


def test_pad_last():
    out = behavior.pad_last(f32([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(out.numpy(), [[1.0, 2.0, 0.0], [3.0, 4.0, 0.0]])


# ---------------------------------------------------------------------------------------------
# ActorCritic.loss / replay_loss wiring, with stand-in networks and naive expectations
# ---------------------------------------------------------------------------------------------

class SquareDist:
    """Stand-in head output: mean() = m, log_prob(x) = -(x - m)^2."""

    def __init__(self, m):
        self.m = m

    def mean(self):
        return self.m

    def log_prob(self, x):
        return -tf.square(x - self.m)


class FakeActorDist:
    """log_prob(a) = feat[..., 4] * a[..., 0], entropy() = feat[..., 5]."""

    def __init__(self, feat):
        self.feat = feat

    def log_prob(self, action):
        return self.feat[..., 4] * action[..., 0]

    def entropy(self):
        return self.feat[..., 5]


def column_actor_critic(config, imag_feat, imag_act, rho=None):
    """A real ActorCritic whose networks read columns of feat, and a world model imagining `imag_feat`.

    feat columns: 0 reward, 1 continue (gamma inside), 2 critic mean, 3 slow critic mean,
    4 logpi factor, 5 entropy. rho: the actor gradient's mix, when not the config's.
    """
    ac = behavior.ActorCritic(config, 6, ActionSpec(discrete=False, size=1))
    ac.critic = lambda feat: SquareDist(feat[..., 2])
    ac.slow_critic = lambda feat: SquareDist(feat[..., 3])
    ac.actor = FakeActorDist
    ac.policy_sample = lambda feat, key=None: tf.zeros(feat.shape[:-1] + [1])
    ac.imag_length = imag_feat.shape[1] - 1
    ac.rho = ac.rho if rho is None else rho

    def imagine(policy, start, length, key=None):
        assert length == ac.imag_length and key is None
        policy(start)
        return {'f': imag_feat}, imag_act

    wm = types.SimpleNamespace(
        rssm=types.SimpleNamespace(imagine=imagine, get_feat=lambda state: state['f']),
        reward=lambda feat: SquareDist(feat[..., 0]),
        imagined_discount=lambda feat: feat[..., 1])
    return ac, wm


V3 = configlib.load('dreamerv3', ['debug'])     # lam 0.95, horizon 333, actent 3e-4, slowreg 1, replay 0.3


def test_replay_loss_by_hand():
    # B=1, T=4; is_last on step 2; disc = 1 - 1/333, lam = 0.95; critic mean 0, slow mean 0.
    feat = np.zeros((1, 4, 6), np.float32)
    data = {'reward': f32([[0.0, 1.0, 2.0, 3.0]]), 'is_last': f32([[0, 0, 1, 0]]),
            'is_terminal': f32([[0, 0, 0, 0]])}
    boot = f32([[10.0, 20.0, 30.0, 40.0]])
    ac, _ = column_actor_critic(V3, f32(np.zeros((1, 2, 6))), f32(np.zeros((1, 2, 1))))
    loss, ret = ac.replay_loss(f32(feat), data, boot)
    d, lam = 1.0 - 1.0 / 333.0, 0.95
    # R2 = r3 + d * ((1 - lam) * 40 + lam * 40) = 3 + 40 d
    r2 = 3.0 + d * 40.0
    # R1 = r2 + d * boot_2 (is_last at 2 cuts the recursion: c_2 = 0) = 2 + 30 d
    r1 = 2.0 + d * 30.0
    # R0 = r1 + d * ((1 - lam) * 20 + lam * R1)
    r0 = 1.0 + d * ((1.0 - lam) * 20.0 + lam * r1)
    np.testing.assert_allclose(ret.numpy(), [[r0, r1, r2]], rtol=1e-6)
    # loss_t = -(1 - last_t) * (-(R_t - 0)^2 + -(0 - 0)^2) = (1 - last_t) R_t^2; step 2 is masked.
    np.testing.assert_allclose(loss.numpy(), [[r0 ** 2, r1 ** 2, 0.0]], rtol=1e-5)


def test_actor_critic_loss_wiring_matches_naive():
    rng = np.random.default_rng(5)
    b, t, h, nf = 2, 3, 4, 6
    n = b * t
    post_feat = rng.normal(size=(b, t, nf)).astype(np.float32)
    imag = rng.normal(size=(n, h + 1, nf))
    imag[..., 0] = rng.normal(size=(n, h + 1)) * 3          # rewards
    imag[..., 1] = rng.uniform(0.5, 1.0, size=(n, h + 1))   # continues (discount folded in)
    imag[..., 2] = rng.normal(size=(n, h + 1)) * 10         # critic
    imag[..., 5] = rng.uniform(0.0, 2.0, size=(n, h + 1))   # entropy
    imag[:, 0] = post_feat.reshape(n, nf)
    imag = imag.astype(np.float32)
    act = rng.normal(size=(n, h + 1, 1)).astype(np.float32)
    data = {'reward': f32(rng.normal(size=(b, t))),
            'is_last': f32([[0, 1, 0], [0, 0, 1]]), 'is_terminal': f32([[0, 1, 0], [0, 0, 0]])}
    ac, wm = column_actor_critic(V3, f32(imag), f32(act))
    ac.retnorm.lo.assign(-100.0)
    ac.retnorm.hi.assign(400.0)
    post = {'f': f32(post_feat)}
    losses, metrics = ac.loss(wm, post, data)

    im = imag.astype(np.float64)
    rew, con, val, slow, ent = im[..., 0], im[..., 1], im[..., 2], im[..., 3], im[..., 5]
    logpi = im[..., 4] * act[..., 0]
    # Imagination: no is_last, term = 1 - con, disc 1 (already inside con), bootstrap on the critic.
    ret = naive_lambda_return(np.zeros_like(con), 1.0 - con, rew, val, 1.0, 0.95)
    lo = 0.01 * np.percentile(ret, 5) + 0.99 * -100.0
    hi = 0.01 * np.percentile(ret, 95) + 0.99 * 400.0
    scale = max(1.0, hi - lo)
    weight = np.cumprod(con, 1)
    np.testing.assert_allclose(metrics['ret_scale'].numpy(), scale, rtol=1e-5)
    np.testing.assert_allclose(losses['actor'].numpy(),
                               naive_actor_loss(logpi, ent, ret, val, weight, scale, 3e-4),
                               rtol=1e-4, atol=1e-5)
    critic_logp = -(np.concatenate([ret, np.zeros((n, 1))], 1) - val) ** 2
    slow_logp = -(slow - val) ** 2
    np.testing.assert_allclose(losses['critic'].numpy(),
                               naive_critic_loss(critic_logp, slow_logp, weight, 1.0),
                               rtol=1e-4, atol=1e-3)
    # Replay: bootstrapped at every step with the imagination return from that step's posterior.
    boot = ret[:, 0].reshape(b, t)
    last, term = data['is_last'].numpy(), data['is_terminal'].numpy()
    rret = naive_lambda_return(last, term, data['reward'].numpy(), boot, 1.0 - 1.0 / 333.0, 0.95)
    pv, ps = post_feat[..., 2].astype(np.float64), post_feat[..., 3].astype(np.float64)
    rcrit = -(np.concatenate([rret, np.zeros((b, 1))], 1) - pv) ** 2
    rslow = -(ps - pv) ** 2
    np.testing.assert_allclose(losses['replay_critic'].numpy(),
                               naive_critic_loss(rcrit, rslow, 1.0 - last, 1.0),
                               rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(metrics['replay_ret'].numpy(), rret.mean(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# imag_loss / repl_loss / next_returns as pure functions, against loops over single entries
# ---------------------------------------------------------------------------------------------

def naive_next_returns(rew, con, val, lam):
    """R_t = r_{t+1} + con_{t+1} ((1 - lam) v_{t+1} + lam R_{t+1}), R_H = v_H, one row at a time."""
    n, h1 = np.shape(rew)
    out = np.zeros((n, h1 - 1))
    for i in range(n):
        nxt = val[i][h1 - 1]
        for t in range(h1 - 2, -1, -1):
            nxt = rew[i][t + 1] + con[i][t + 1] * ((1.0 - lam) * val[i][t + 1] + lam * nxt)
            out[i, t] = nxt
    return out


def test_next_returns_match_naive_loop():
    rng = np.random.default_rng(8)
    rew, val = rng.normal(size=(2, 4, 7))
    con = rng.uniform(0.0, 1.0, size=(4, 7))
    out = behavior.next_returns(f32(rew), f32(con), f32(val), 0.9).numpy()
    np.testing.assert_allclose(out, naive_next_returns(rew, con, val, 0.9), rtol=1e-5, atol=1e-5)


def naive_imag_loss(mean, slow, logpi, ent, ret, base, con, scale, rho, actent, slowreg, form):
    """Per entry: the weight of state t is the product of con over [first, t] (exclusive: [first, t)).
    'current' scores the action in s_t by t_{t+1}; the critic trains on states first .. H-1."""
    return_form, exclusive, critic_start = form
    n, h1 = con.shape
    shift, first = int(return_form == 'current'), int(not critic_start)

    def weight(i, t, start):
        return np.prod(con[i, start:t if exclusive else t + 1])

    actor, adv = np.zeros((n, h1 - 1 - shift)), np.zeros((n, h1 - 1 - shift))
    critic = np.zeros((n, h1 - 1 - first))
    for i in range(n):
        for t in range(h1 - 1 - shift):
            target = ret[i, t + shift]
            adv[i, t] = target - base[i, t]
            objective = rho * logpi[i, t] * adv[i, t] / scale + (1.0 - rho) * target / scale
            actor[i, t] = -weight(i, t, 0) * (objective + actent * ent[i, t])
        for t in range(first, h1 - 1):
            logp = -(ret[i, t] - mean[i, t]) ** 2 + slowreg * -(slow[i, t] - mean[i, t]) ** 2
            critic[i, t - first] = -weight(i, t, first) * logp
    return actor, critic, adv


FORMS = [('next', False, True), ('current', True, True), ('current', True, False), ('next', True, False)]


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('rho', [1.0, 0.0, 0.3])
def test_imag_loss_matches_naive_loops(form, rho):
    rng = np.random.default_rng(9)
    n, h = 3, 5
    mean, slow, logpi, base = rng.normal(size=(4, n, h + 1))
    ent, con = rng.uniform(0.0, 2.0, size=(n, h + 1)), rng.uniform(0.5, 1.0, size=(n, h + 1))
    ret = rng.normal(size=(n, h))
    losses, adv = behavior.imag_loss(
        SquareDist(f32(mean)), f32(slow), f32(logpi), f32(ent), f32(ret), f32(base), f32(con), 2.5,
        rho=rho, actent=0.1, slowreg=0.7, return_form=form[0], exclusive=form[1], critic_start=form[2])
    naive = naive_imag_loss(mean, slow, logpi, ent, ret, base, con, 2.5, rho, 0.1, 0.7, form)
    actor, critic, naive_adv = naive
    np.testing.assert_allclose(losses['actor'].numpy(), actor, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses['critic'].numpy(), critic, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(adv.numpy(), naive_adv, rtol=1e-5, atol=1e-6)


def test_imag_loss_rejects_returns_of_the_wrong_length():
    ones = tf.ones([3, 6])
    with pytest.raises(ValueError, match=r'imag_loss.*ret \(3, 6\)'):
        behavior.imag_loss(SquareDist(ones), ones, ones, ones, ones, ones, ones, 1.0, rho=1.0, actent=0.0,
                           slowreg=0.0)


def test_repl_loss_matches_naive_loops():
    rng = np.random.default_rng(10)
    b, t = 3, 6
    mean, slow, rew, boot = rng.normal(size=(4, b, t))
    last = (rng.uniform(size=(b, t)) < 0.2).astype(np.float64)
    term = last * (rng.uniform(size=(b, t)) < 0.5)
    loss, ret = behavior.repl_loss(SquareDist(f32(mean)), f32(slow), f32(last), f32(term), f32(rew),
                                   f32(boot), 0.97, 0.9, 0.5)
    naive_ret = naive_lambda_return(last, term, rew, boot, 0.97, 0.9)
    naive = np.zeros((b, t - 1))
    for i in range(b):
        for k in range(t - 1):
            logp = -(naive_ret[i, k] - mean[i, k]) ** 2 + 0.5 * -(slow[i, k] - mean[i, k]) ** 2
            naive[i, k] = -(1.0 - last[i, k]) * logp
    np.testing.assert_allclose(ret.numpy(), naive_ret, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss.numpy(), naive, rtol=1e-5, atol=1e-4)


def test_first_discounts_and_gate():
    con = f32([[0.8, 0.7], [0.6, 0.5]])
    term = tf.constant([[True, False]])                             # B=1, T=2 -> 2 starts
    model = behavior.FIRST_DISCOUNTS['model'](con, term, 0.9)
    np.testing.assert_array_equal(model.numpy(), con.numpy())
    replay = behavior.FIRST_DISCOUNTS['replay'](con, term, 0.9)
    np.testing.assert_allclose(replay.numpy(), [[0.0, 0.7], [0.9, 0.5]], rtol=1e-7)
    x = tf.constant(2.0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        flows, stops = behavior.gate(x * x, True), behavior.gate(x * x, False)
    assert tape.gradient(flows, x).numpy() == 4.0 and tape.gradient(stops, x) is None
