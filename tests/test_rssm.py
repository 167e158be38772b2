"""RSSM with the debug sizes: shapes, resets, the imagination timeline, unimix and the KL losses."""

import numpy as np
import pytest
import tensorflow as tf

from dreamer_tf import config as configlib
from dreamer_tf.config import Config
from dreamer_tf.rssm import RSSM
from helpers import f32

CONFIG = configlib.load('dreamerv3', ['debug'])
ACT, EMBED = 3, 10
DETER, STOCH, CLASSES = CONFIG.rssm.deter, CONFIG.rssm.stoch, CONFIG.rssm.classes


def make_rssm():
    return RSSM(ACT, EMBED, **CONFIG.rssm)


def randomize_biases(rssm, rng):
    """Non-zero biases, so a state that should be reset cannot pass as zero by accident."""
    for var in rssm.weights:
        if var.path.endswith('bias'):
            var.assign(0.5 * rng.standard_normal(var.shape).astype(np.float32))


def sequence(rng, batch=2, length=6):
    embed = f32(rng.standard_normal((batch, length, EMBED)))
    action = f32(rng.uniform(-1, 1, (batch, length, ACT)))
    is_first = np.zeros((batch, length), bool)
    is_first[:, 0] = True
    return embed, action, is_first


def test_sizes_follow_the_debug_config():
    assert (DETER, STOCH, CLASSES) == (32, 4, 4)
    assert make_rssm().feat_dim == 32 + 4 * 4


def test_observe_shapes_and_one_hot_samples():
    rng = np.random.default_rng(0)
    rssm = make_rssm()
    embed, action, is_first = sequence(rng, batch=2, length=5)
    post, prior = rssm.observe(embed, action, tf.constant(is_first))
    for state in (post, prior):
        assert set(state) == {'deter', 'stoch', 'logit'}
        assert state['deter'].shape == (2, 5, DETER)
        assert state['stoch'].shape == (2, 5, STOCH, CLASSES)
        assert state['logit'].shape == (2, 5, STOCH, CLASSES)
        assert all(v.dtype == tf.float32 for v in state.values())
        stoch = state['stoch'].numpy()
        np.testing.assert_allclose(stoch.sum(-1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(stoch.max(-1), 1.0, rtol=1e-6)
    # The posterior shares the prior's deterministic state.
    np.testing.assert_array_equal(post['deter'].numpy(), prior['deter'].numpy())


def test_img_step_from_initial_state_with_zero_action():
    # All biases are zero at init: zero deter, stoch and action give zero projections, so the
    # GRU keeps deter = 0 (reset 0.5, cand tanh(0) = 0) and the prior logits are 0, a uniform
    # categorical: log-probabilities log(1 / classes) (unimix leaves uniform unchanged).
    rssm = make_rssm()
    state = rssm.img_step(rssm.initial(3), tf.zeros([3, ACT]))
    np.testing.assert_array_equal(state['deter'].numpy(), np.zeros((3, DETER)))
    np.testing.assert_allclose(state['logit'].numpy(), np.full((3, STOCH, CLASSES), np.log(0.25)),
                               rtol=1e-6)
    np.testing.assert_allclose(state['stoch'].numpy().sum(-1), 1.0, rtol=1e-6)


def test_initial_state_is_zero():
    init = make_rssm().initial(2)
    assert init['deter'].shape == (2, DETER)
    assert init['stoch'].shape == init['logit'].shape == (2, STOCH, CLASSES)
    for value in init.values():
        np.testing.assert_array_equal(value.numpy(), 0.0)


def test_is_first_resets_carry_and_previous_action():
    rng = np.random.default_rng(1)
    rssm = make_rssm()
    randomize_biases(rssm, rng)
    embed, action, is_first = sequence(rng, batch=2, length=6)
    k = 3
    is_first[0, k] = True                       # row 0 starts a new episode at step k, row 1 not
    action = action.numpy()
    action[:, k] = [5.0, -7.0, 3.0]             # must be ignored where is_first
    post, prior = rssm.observe(embed, f32(action), tf.constant(is_first))
    # The suffix from k observed on its own (is_first[0] = True there too).
    post_sfx, prior_sfx = rssm.observe(embed[:, k:], f32(action[:, k:]),
                                       tf.constant(is_first[:, k:]))
    # At step k the reset carry is the zero state and the previous action is zero, so deter_k is
    # deterministic: it must equal the suffix's first step and img_step(initial, zeros).
    reference = rssm.img_step(rssm.initial(2), tf.zeros([2, ACT]))
    deter_k = post['deter'][0, k].numpy()
    np.testing.assert_allclose(deter_k, post_sfx['deter'][0, 0].numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(deter_k, reference['deter'][0].numpy(), rtol=1e-6, atol=1e-6)
    # Prior and posterior logits at k depend only on deter_k (and embed_k): equal as well.
    np.testing.assert_allclose(prior['logit'][0, k].numpy(), prior_sfx['logit'][0, 0].numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(post['logit'][0, k].numpy(), post_sfx['logit'][0, 0].numpy(),
                               rtol=1e-5, atol=1e-6)
    # Row 1 was not reset: its carry (and the large action) changed deter_k.
    assert not np.allclose(post['deter'][1, k].numpy(), post_sfx['deter'][1, 0].numpy(), atol=1e-3)


def test_get_feat_concatenates_deter_and_flat_stoch():
    rng = np.random.default_rng(2)
    rssm = make_rssm()
    state = dict(deter=f32(rng.standard_normal((2, 3, DETER))),
                 stoch=f32(rng.standard_normal((2, 3, STOCH, CLASSES))),
                 logit=f32(np.zeros((2, 3, STOCH, CLASSES))))
    feat = rssm.get_feat(state).numpy()
    assert feat.shape == (2, 3, DETER + STOCH * CLASSES)
    np.testing.assert_array_equal(feat[..., :DETER], state['deter'].numpy())
    stoch = state['stoch'].numpy()
    for s in range(STOCH):
        for c in range(CLASSES):
            np.testing.assert_array_equal(feat[..., DETER + s * CLASSES + c], stoch[..., s, c])
    flat = rssm.get_feat({k: v[:, 0] for k, v in state.items()})
    assert flat.shape == (2, DETER + STOCH * CLASSES)


def test_imagine_timeline():
    rng = np.random.default_rng(3)
    rssm = make_rssm()
    randomize_biases(rssm, rng)
    embed, action, is_first = sequence(rng, batch=2, length=3)
    post, _ = rssm.observe(embed, action, tf.constant(is_first))
    start = {k: tf.reshape(v, [-1] + v.shape[2:].as_list()) for k, v in post.items()}   # N = 6
    weights = f32(rng.standard_normal((DETER, ACT)))

    def policy(state):
        return tf.tanh(tf.matmul(state['deter'], weights))         # deterministic in the state

    horizon = 4
    states, actions = rssm.imagine(policy, start, horizon)
    assert actions.shape == (6, horizon + 1, ACT)
    for key, value in states.items():
        assert value.shape == (6, horizon + 1) + tuple(start[key].shape[1:])
        np.testing.assert_array_equal(value[:, 0].numpy(), start[key].numpy())
    # actions[:, t] is the policy's action in states[:, t] ...
    for t in range(horizon + 1):
        step = {k: v[:, t] for k, v in states.items()}
        np.testing.assert_allclose(actions[:, t].numpy(), policy(step).numpy(), rtol=1e-5,
                                   atol=1e-6)
    # ... and states[:, t + 1] follows from (states[:, t], actions[:, t]); deter is deterministic.
    for t in range(horizon):
        step = {k: v[:, t] for k, v in states.items()}
        nxt = rssm.img_step(step, actions[:, t])
        np.testing.assert_allclose(states['deter'][:, t + 1].numpy(), nxt['deter'].numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_prior_and_posterior_are_unimixed():
    rng = np.random.default_rng(4)
    rssm = make_rssm()
    # Extreme output biases: without the 1% uniform mix most classes would get probability ~0.
    for layer in (rssm.prior_out, rssm.post_out):
        layer.bias.assign(np.tile([60.0, -60.0, 0.0, -30.0], STOCH).astype(np.float32))
    embed, action, is_first = sequence(rng, batch=2, length=4)
    post, prior = rssm.observe(embed, action, tf.constant(is_first))
    floor = 0.01 / CLASSES
    for state in (post, prior):
        probs = np.exp(state['logit'].numpy().astype(np.float64))
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
        assert probs.min() >= floor - 1e-7
        # The floor is reached (the mix is exactly 1%, not more).
        np.testing.assert_allclose(probs.min(), floor, rtol=1e-3)


def naive_kl(logit_p, logit_q):
    """sum over latents and classes of p * (log p - log q), from normalised log-probabilities."""
    p = np.exp(logit_p)
    return np.sum(p * (logit_p - logit_q), axis=(-2, -1))


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize('free', [1.0, 0.0])
def test_kl_loss_matches_numpy_and_respects_free_nats(free):
    rng = np.random.default_rng(5)
    rssm = make_rssm()
    post = log_softmax(rng.standard_normal((3, 5, STOCH, CLASSES)) * 2.0)
    prior = log_softmax(rng.standard_normal((3, 5, STOCH, CLASSES)) * 2.0)
    prior[0, 0] = post[0, 0]                                       # identical: KL = 0
    loss = Config({'kl_form': 'dyn_rep', 'free_nats': free})
    losses = rssm.kl_loss({'logit': f32(post)}, {'logit': f32(prior)}, loss)
    dyn, rep = losses['dyn'], losses['rep']
    assert dyn.shape == rep.shape == (3, 5)
    # dyn and rep have the same value (they differ only in where gradients flow).
    expected = np.maximum(naive_kl(post, prior), free)
    np.testing.assert_allclose(dyn.numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rep.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert dyn.numpy().min() >= free
    np.testing.assert_allclose(dyn.numpy()[0, 0], free, atol=1e-6)
    assert (naive_kl(post, prior) > 1.0).any()                      # some entries above the clip


@pytest.mark.parametrize('unroll', [1, 2, 3, 4, 7])
def test_unrolled_scan_equals_tf_scan(unroll):
    """ops.scan runs `unroll` steps per loop iteration (rounded down to a divisor of T = 6) and
    returns exactly what tf.scan does, nested carries included."""
    from dreamer_tf import ops
    rng = np.random.default_rng(unroll)
    xs = f32(rng.standard_normal((6, 3)))
    weights = f32(rng.standard_normal((3, 3)))

    def step(carry, x):
        h, count = carry
        return tf.tanh(tf.matmul(h, weights) + x), count + 1.0

    init = (f32(rng.standard_normal((2, 3))), tf.zeros([2]))
    elems = tf.tile(xs[:, None], [1, 2, 1])                      # [T, B, 3]
    want = tf.scan(step, elems, init)
    got = ops.scan(step, elems, init, unroll)
    for w, g in zip(want, got, strict=True):
        assert g.shape == w.shape
        np.testing.assert_array_equal(g.numpy(), w.numpy())
    np.testing.assert_array_equal(got[1][:, 0].numpy(), np.arange(1, 7))


def test_imagine_is_the_same_with_an_unrolled_loop():
    rng = np.random.default_rng(5)
    rssm = make_rssm()
    randomize_biases(rssm, rng)
    start = {k: v[:, 0] for k, v in rssm.observe(*sequence(rng, batch=3, length=2)[:2],
                                                 tf.constant([[True, False]] * 3))[0].items()}
    weights = f32(rng.standard_normal((DETER, ACT)))
    key = tf.constant([11, 12, 13], tf.int64)
    runs = []
    for unroll in (1, 2, 4):
        rssm.imag_unroll = unroll
        runs.append(rssm.imagine(lambda s, k: tf.tanh(tf.matmul(s['deter'], weights)), start, 4, key=key))
    for states, actions in runs[1:]:
        np.testing.assert_array_equal(actions.numpy(), runs[0][1].numpy())
        for k in states:
            np.testing.assert_array_equal(states[k].numpy(), runs[0][0][k].numpy())


def test_observe_prior_matches_per_step_obs_step():
    """observe computes the priors of all steps in one batch after its loop; they must equal the
    priors that obs_step gives step by step, keyed samples included."""
    from dreamer_tf import ops
    rng = np.random.default_rng(6)
    rssm = make_rssm()
    randomize_biases(rssm, rng)
    embed, action, is_first = sequence(rng, batch=2, length=4)
    key = tf.constant([7, 8], tf.int64)
    post, prior = rssm.observe(embed, action, tf.constant(is_first), key=key)
    state = rssm.initial(2)
    for t in range(4):
        k = ops.fold_in(key, tf.constant(t, tf.int64))
        state, step_prior = rssm.obs_step(state, action[:, t], embed[:, t], is_first[:, t], k)
        for name in ('deter', 'stoch', 'logit'):
            np.testing.assert_array_equal(post[name][:, t].numpy(), state[name].numpy())
        np.testing.assert_array_equal(prior['deter'][:, t].numpy(), step_prior['deter'].numpy())
        # A batched matmul may round differently in the last bit; the samples are the same classes
        # (the straight-through one-hot carries that rounding through its probabilities).
        np.testing.assert_array_equal(np.argmax(prior['stoch'][:, t], -1), np.argmax(step_prior['stoch'], -1))
        for name in ('stoch', 'logit'):
            np.testing.assert_allclose(prior[name][:, t].numpy(), step_prior[name].numpy(), atol=1e-6)


def test_observe_and_imagine_check_their_shapes():
    rng = np.random.default_rng(7)
    rssm = make_rssm()
    embed, action, is_first = sequence(rng, batch=2, length=4)
    with pytest.raises(ValueError, match=r'observe: expected leading dims \(2, 4\).*action \(2, 5, 3\)'):
        rssm.observe(embed, tf.concat([action, action[:, :1]], 1), tf.constant(is_first))
    with pytest.raises(ValueError, match=r'observe: expected leading dims \(2,\), got key \(1,\)'):
        rssm.observe(embed, action, tf.constant(is_first), key=tf.constant([7], tf.int64))
    # One key for two starts would broadcast: both rows would share their noise.
    start = {k: v[:, 0] for k, v in rssm.observe(embed, action, tf.constant(is_first))[0].items()}
    with pytest.raises(ValueError, match=r'imagine: expected leading dims \(2,\), got key \(1,\)'):
        rssm.imagine(lambda state, k: tf.zeros([2, ACT]), start, 3, key=tf.constant([7], tf.int64))
