"""Dreamer 4 (dreamer_tf/dreamer4): every equation against hand arithmetic or a naive numpy loop, the
causality of the tokenizer and the dynamics, and one gradient step of each at the debug size."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from dreamer_tf import config as configlib
from dreamer_tf import dreamer4
from dreamer_tf.dreamer4 import agent, shortcut, tokenizer, transformer
from helpers import f32, np_log_softmax

SEED = tf.constant([3, 4])


@pytest.fixture(scope='module')
def config():
    return configlib.load('dreamer4', ['debug'])


@pytest.fixture(scope='module')
def model(config):
    keras.utils.set_random_seed(0)
    return dreamer4.build(config)


def frames_of(config, seed=0):
    rng = np.random.default_rng(seed)
    return f32(rng.uniform(size=(config.batch_size, config.batch_length, *config.tokenizer.image, 3)))


def actions_of(config, seed=0):
    rng = np.random.default_rng(seed)
    index = rng.integers(config.actions, size=(config.batch_size, config.batch_length))
    return tf.one_hot(index, config.actions)


# Config ---------------------------------------------------------------------------------------------------

def test_config_loads_with_its_own_schema_and_leaves_the_other_versions_alone(config):
    default = configlib.load('dreamer4')
    assert default.dynamics.k_max == 64 and default.tokenizer.image == (64, 64)
    assert config.tokenizer.dim < default.tokenizer.dim and config.version == 'dreamer4'
    assert 'dreamer4' not in configlib.available_versions()
    with pytest.raises(configlib.ConfigError):
        configlib.load('dreamer4', overrides={'rssm.deter': 8})   # a V3 key is not a Dreamer 4 key


# Tokenizer: patch masking and the bottleneck --------------------------------------------------------------

def test_patchify_round_trip_and_patch_order():
    frames = f32(np.arange(2 * 1 * 4 * 4 * 3).reshape(2, 1, 4, 4, 3))
    patches = tokenizer.patchify(frames, 2)
    assert patches.shape == (2, 1, 4, 12)
    # Patch 1 (row 0, column 1) holds pixels (0, 2), (0, 3), (1, 2), (1, 3), channels innermost.
    expected = np.concatenate([frames.numpy()[0, 0, h, w] for h in (0, 1) for w in (2, 3)])
    np.testing.assert_array_equal(patches.numpy()[0, 0, 1], expected)
    np.testing.assert_array_equal(tokenizer.unpatchify(patches, 2, 4, 4).numpy(), frames.numpy())


def test_drop_mask_fraction_count_and_replacement():
    mask = tokenizer.drop_mask([4, 50, 100], 0.3, tf.constant([5, 6]))
    assert abs(float(tf.reduce_mean(tf.cast(mask, tf.float32))) - 0.3) < 0.015   # 20000 draws, sd 0.003
    # A fixed seed gives the count of its uniform draws below the rate, counted here by a loop.
    draws = tf.random.stateless_uniform([4, 50, 100], tf.constant([5, 6])).numpy()
    count = sum(1 for u in draws.ravel() if u < 0.3)
    assert int(tf.reduce_sum(tf.cast(mask, tf.int32))) == count
    # Per-frame rates [B, T, 1]: a frame with rate 0 keeps every patch, one with rate 1 drops them all.
    rates = f32([[[0.0], [1.0]]])
    mask = tokenizer.drop_mask([1, 2, 16], rates, SEED).numpy()
    assert not mask[0, 0].any() and mask[0, 1].all()
    tokens = f32(np.random.default_rng(0).normal(size=(1, 2, 16, 5)))
    mask = tokenizer.drop_mask([1, 2, 16], 0.5, SEED)
    token = f32([9.0, 8.0, 7.0, 6.0, 5.0])
    out = tokenizer.mask_patches(tokens, mask, token).numpy()
    for t in range(2):
        for p in range(16):
            want = token.numpy() if mask.numpy()[0, t, p] else tokens.numpy()[0, t, p]
            np.testing.assert_array_equal(out[0, t, p], want)


def test_bottleneck_stays_inside_the_open_unit_interval_even_for_huge_inputs(model, config):
    z = tokenizer.bottleneck(f32([-1e30, -1e4, -20.0, -9.5, 0.0, 0.3, 9.5, 20.0, 1e4, 1e30])).numpy()
    assert np.all(np.abs(z) < 1.0)
    np.testing.assert_allclose(z[5], math.tanh(0.3), rtol=1e-6)
    z = model.tokenizer.encode(frames_of(config) * 1e6).numpy()
    assert np.all(np.abs(z) < 1.0) and np.all(np.isfinite(z))


def naive_pool2(x):
    """2x2 average pooling of [B, T, H, W, C], one output pixel at a time."""
    out = np.zeros((x.shape[0], x.shape[1], x.shape[2] // 2, x.shape[3] // 2, x.shape[4]))
    for index in np.ndindex(out.shape):
        b, t, h, w, c = index
        out[index] = x[b, t, 2 * h:2 * h + 2, 2 * w:2 * w + 2, c].mean()
    return out


def test_structural_loss_against_a_loop():
    rng = np.random.default_rng(1)
    pred, target = rng.uniform(size=(2, 1, 2, 4, 4, 3)).astype(np.float32)
    expected = 0.0
    for scale in range(2):
        p, q = pred, target
        if scale:
            p, q = naive_pool2(p), naive_pool2(q)
        size = p.shape[2]
        dx = [abs((p[..., h, w + 1, c] - p[..., h, w, c]) - (q[..., h, w + 1, c] - q[..., h, w, c]))
              for h in range(size) for w in range(size - 1) for c in range(3)]
        dy = [abs((p[..., h + 1, w, c] - p[..., h, w, c]) - (q[..., h + 1, w, c] - q[..., h, w, c]))
              for h in range(size - 1) for w in range(size) for c in range(3)]
        expected += np.mean(dx) + np.mean(dy)
    got = tokenizer.structural_loss(f32(pred), f32(target), scales=2)
    np.testing.assert_allclose(float(got), expected / 2, rtol=1e-5)
    shifted = tokenizer.structural_loss(f32(pred), f32(pred + 0.5), scales=2)  # blind to a constant shift
    np.testing.assert_allclose(float(shifted), 0.0, atol=1e-6)


# Block-causal masks and causality -------------------------------------------------------------------------

def test_masks_against_naive_loops():
    length, tokens, hidden = 3, 4, 1
    causal = transformer.causal_mask(length).numpy()
    assert all(causal[t, s] == (s <= t) for t in range(length) for s in range(length))
    spatial = transformer.spatial_mask(tokens, hidden).numpy()
    for n in range(tokens):
        for m in range(tokens):
            n_hidden, m_hidden = n >= tokens - hidden, m >= tokens - hidden
            assert spatial[n, m] == (n_hidden or not m_hidden), (n, m)
    full = transformer.block_causal_mask(length, tokens, hidden).numpy()
    assert full.shape == (length * tokens, length * tokens)
    for i in range(length * tokens):
        for j in range(length * tokens):
            (t, n), (s, m) = divmod(i, tokens), divmod(j, tokens)
            assert full[i, j] == (s <= t and (n >= tokens - hidden or m < tokens - hidden)), (i, j)
    assert [transformer.is_temporal(i, 4) for i in range(8)] == [False, False, False, True] * 2


def test_a_future_frame_moves_no_earlier_tokenizer_output(model, config):
    frames = frames_of(config).numpy()
    changed = frames.copy()
    changed[:, -1] = 1.0 - changed[:, -1]
    z, z_changed = (model.tokenizer.encode(f32(x)).numpy() for x in (frames, changed))
    np.testing.assert_array_equal(z[:, :-1], z_changed[:, :-1])
    assert np.abs(z[:, -1] - z_changed[:, -1]).max() > 1e-4
    recon, recon_changed = (model.tokenizer.decode(f32(x)).numpy() for x in (z, z_changed))
    np.testing.assert_array_equal(recon[:, :-1], recon_changed[:, :-1])
    assert np.abs(recon[:, -1] - recon_changed[:, -1]).max() > 1e-4
    # Frame by frame equals all at once: frame 0 alone gives what it gave in the sequence.
    np.testing.assert_array_equal(model.tokenizer.encode(f32(frames[:, :1])).numpy(), z[:, :1])


def test_a_future_step_moves_no_earlier_dynamics_output(model, config):
    rng = np.random.default_rng(2)
    b, t = config.batch_size, config.batch_length
    z = rng.uniform(-1, 1, size=(b, t, config.tokenizer.latents, config.tokenizer.bottleneck))
    tau, d = np.full((b, t), 0.5, np.float32), np.full((b, t), 0.25, np.float32)
    actions = actions_of(config).numpy()
    x, feat = (y.numpy() for y in model.dynamics(f32(z), f32(tau), f32(d), f32(actions)))
    z[:, -1] += 0.5
    tau[:, -1], d[:, -1], actions[:, -1] = 0.0, 1.0, 1.0 - actions[:, -1]
    x2, feat2 = (y.numpy() for y in model.dynamics(f32(z), f32(tau), f32(d), f32(actions)))
    np.testing.assert_array_equal(x[:, :-1], x2[:, :-1])
    np.testing.assert_array_equal(feat[:, :-1], feat2[:, :-1])
    assert np.abs(x[:, -1] - x2[:, -1]).max() > 1e-5


def test_no_world_model_output_reads_the_agent_token(config):
    keras.utils.set_random_seed(1)
    net = dreamer4.build(config).dynamics
    args = (f32(np.full((2, 3, config.tokenizer.latents, config.tokenizer.bottleneck), 0.3)),
            tf.ones([2, 3]) * 0.5, tf.ones([2, 3]) * 0.5, actions_of(config)[:2])
    x, feat = net(*args)
    net.agent_token.assign(net.agent_token + 3.0)
    x2, feat2 = net(*args)
    np.testing.assert_array_equal(x.numpy(), x2.numpy())
    assert np.abs(feat.numpy() - feat2.numpy()).max() > 1e-4


# Shortcut forcing -----------------------------------------------------------------------------------------

def test_corruption_convention_and_sampled_levels():
    x, noise = f32(np.full((1, 3, 1, 1), 2.0)), f32(np.full((1, 3, 1, 1), -4.0))
    z = shortcut.corrupt(x, noise, f32([[0.0, 0.25, 1.0]])).numpy().ravel()
    np.testing.assert_allclose(z, [-4.0, 0.75 * -4.0 + 0.25 * 2.0, 2.0])  # tau = 1 is clean
    d = shortcut.sample_step_sizes([64, 16], 64, SEED).numpy()
    assert set(np.unique(d)) == {2.0 ** -k for k in range(7)}
    tau = shortcut.sample_signal_levels(f32(d), tf.constant([7, 8])).numpy()
    steps = tau / d
    np.testing.assert_array_equal(steps, np.round(steps))          # on the grid of the frame's own d
    assert tau.min() == 0.0 and np.all(tau + d <= 1.0)
    np.testing.assert_allclose(shortcut.ramp_weight(f32([0.0, 0.5, 1.0])).numpy(), [0.1, 0.55, 1.0])


def test_bootstrap_target_by_hand():
    # f(z, tau, d) = 2 z + tau + d at z = 0.5, tau = 0.25, d = 0.5 (two half steps of 0.25):
    #   f1 = 1 + 0.25 + 0.25 = 1.5,        b'  = (1.5 - 0.5) / 0.75 = 4/3
    #   z' = 0.5 + 0.25 * 4/3 = 5/6,       f2  = 5/3 + 0.5 + 0.25 = 29/12
    #   b'' = (29/12 - 10/12) / 0.5 = 19/6, target = (4/3 + 19/6) / 2 = 9/4
    scale = tf.Variable(2.0)

    def denoise(z, tau, d):
        return scale * z + tau[..., None, None] + d[..., None, None]
    with tf.GradientTape() as tape:
        target = shortcut.bootstrap_target(denoise, f32(np.full((1, 1, 1, 1), 0.5)), f32([[0.25]]),
                                           f32([[0.5]]))
    np.testing.assert_allclose(target.numpy().ravel(), [9 / 4], rtol=1e-6)
    assert tape.gradient(target, scale) is None                      # a stop-gradient target
    # A network that always predicts the same x* is an exact flow: two half steps make one full step.
    x_star, z, tau = 0.7, 0.1, 0.5
    target = shortcut.bootstrap_target(lambda z_, tau_, d_: tf.fill(tf.shape(z_), x_star),
                                       f32(np.full((1, 1, 1, 1), z)), f32([[tau]]), f32([[0.25]]))
    np.testing.assert_allclose(target.numpy().ravel(), [(x_star - z) / (1 - tau)], rtol=1e-6)


def test_shortcut_loss_against_a_loop():
    rng = np.random.default_rng(3)
    b, t, n, c, d_min = 2, 4, 3, 2, 1 / 64
    x_pred, x, z, v = rng.normal(size=(4, b, t, n, c)).astype(np.float32)
    d = np.array([[d_min, 0.5, 0.25, d_min], [1.0, d_min, 0.125, 0.5]], np.float32)
    tau = np.array([[0.0, 0.5, 0.75, 63 / 64], [0.0, 0.5, 0.25, 0.0]], np.float32)
    got = shortcut.shortcut_loss(*(f32(a) for a in (x_pred, x, z, tau, d, v)), d_min).numpy()
    for i in range(b):
        for j in range(t):
            total = 0.0
            for m in range(n):
                for k in range(c):
                    if d[i, j] == d_min:
                        total += (x_pred[i, j, m, k] - x[i, j, m, k]) ** 2
                    else:
                        vel = (x_pred[i, j, m, k] - z[i, j, m, k]) / (1 - tau[i, j])
                        total += (1 - tau[i, j]) ** 2 * (vel - v[i, j, m, k]) ** 2
            np.testing.assert_allclose(got[i, j], total / (n * c), rtol=1e-5)


def test_sampler_reaches_a_constant_prediction_for_every_step_count():
    noise = f32(np.random.default_rng(4).normal(size=(2, 3, 2)))
    for steps in (1, 4, 64):
        out = shortcut.sample(lambda z, tau, d: tf.fill(tf.shape(z), 0.3), noise, steps)
        np.testing.assert_allclose(out.numpy(), 0.3, atol=1e-5)


@pytest.mark.parametrize('steps', [4, 64])
def test_dynamics_generates_the_next_latent(model, config, steps):
    z = model.tokenizer.encode(frames_of(config))
    actions = actions_of(config)
    context = z[:, :-1]
    out = model.dynamics.generate(context, actions, steps, SEED)
    assert out.shape == (config.batch_size, config.tokenizer.latents, config.tokenizer.bottleneck)
    assert np.all(np.isfinite(out.numpy()))
    with pytest.raises(ValueError, match='power of two'):
        model.dynamics.generate(context, actions, 3, SEED)


# Agent objectives -----------------------------------------------------------------------------------------

def naive_pmpo(logp, adv, kl, alpha, beta):
    pos = [lp for lp, a in zip(logp, adv) if a >= 0]
    neg = [lp for lp, a in zip(logp, adv) if a < 0]
    loss = 0.0
    if neg:
        loss += (1 - alpha) * sum(neg) / len(neg)
    if pos:
        loss -= alpha * sum(pos) / len(pos)
    return loss + beta * sum(kl) / len(kl)


@pytest.mark.parametrize('case', ['mixed', 'all_positive', 'all_negative'])
def test_pmpo_against_a_loop(case):
    rng = np.random.default_rng(5)
    logp, kl = -rng.uniform(0.1, 3, size=7), rng.uniform(0, 1, size=7)
    adv = {'mixed': np.array([0.5, -1.0, 0.0, 2.0, -0.1, -3.0, 1e-3]),
           'all_positive': rng.uniform(0, 1, 7), 'all_negative': -rng.uniform(0.1, 1, 7)}[case]
    got = float(agent.pmpo_loss(f32(logp), f32(adv), f32(kl), 0.5, 0.3))
    np.testing.assert_allclose(got, naive_pmpo(logp, adv, kl, 0.5, 0.3), rtol=1e-5)
    # Only the sign counts: scaling the advantages changes nothing.
    np.testing.assert_allclose(float(agent.pmpo_loss(f32(logp), f32(adv * 100), f32(kl), 0.5, 0.3)), got)
    if case == 'mixed':  # by hand: D+ = {0, 2, 3, 6}, D- = {1, 4, 5}
        by_hand = (0.5 * np.mean(logp[[1, 4, 5]]) - 0.5 * np.mean(logp[[0, 2, 3, 6]]) + 0.3 * kl.mean())
        np.testing.assert_allclose(got, by_hand, rtol=1e-5)


def test_categorical_kl_is_the_reverse_one():
    rng = np.random.default_rng(6)
    logits, prior = rng.normal(size=(2, 3, 4))
    got = agent.categorical_kl(f32(logits), f32(prior)).numpy()
    logp, logq = np_log_softmax(logits), np_log_softmax(prior)
    for i in range(3):
        want = sum(math.exp(logp[i, a]) * (logp[i, a] - logq[i, a]) for a in range(4))
        np.testing.assert_allclose(got[i], want, rtol=1e-5)


def test_multi_token_bc_loss_with_its_action_mask():
    rng = np.random.default_rng(7)
    b, t, horizon, num = 2, 5, 3, 4
    logits = rng.normal(size=(b, t, horizon, num)).astype(np.float32)
    index = rng.integers(num, size=(b, t))
    mask = np.array([[1, 1, 0, 1, 1], [0, 0, 0, 1, 0]], np.float32)
    total, count = 0.0, 0
    for i in range(b):
        for j in range(t):
            for n in range(horizon):
                k = j + 1 + n        # a_{t+1+n}: the step's own action was taken before its frame
                if k < t and mask[i, k]:
                    total -= np_log_softmax(logits[i, j, n])[index[i, k]]
                    count += 1
    actions = tf.one_hot(index, num)
    got = float(agent.mtp_bc_loss(f32(logits), actions, f32(mask)))
    np.testing.assert_allclose(got, total / count, rtol=1e-5)
    # Changing an unlabelled action changes nothing; a batch without labels gives 0, not NaN.
    other = index.copy()
    other[1, 0] = (other[1, 0] + 1) % num
    np.testing.assert_allclose(float(agent.mtp_bc_loss(f32(logits), tf.one_hot(other, num), f32(mask))), got)
    assert float(agent.mtp_bc_loss(f32(logits), actions, tf.zeros([b, t]))) == 0.0


def test_mtp_targets_against_a_loop():
    x = f32(np.arange(10).reshape(2, 5))
    targets, valid = agent.mtp_targets(x, 3, 1)
    for j in range(5):
        for n in range(3):
            k = j + 1 + n
            assert valid.numpy()[j, n] == (k < 5)
            assert targets.numpy()[1, j, n] == (x.numpy()[1, k] if k < 5 else 0.0)


# Shapes and one gradient step -----------------------------------------------------------------------------

def test_forward_shapes_at_the_debug_size(model, config):
    b, t, tok = config.batch_size, config.batch_length, config.tokenizer
    frames = frames_of(config)
    z = model.tokenizer.encode(frames)
    assert z.shape == (b, t, tok.latents, tok.bottleneck)
    assert model.tokenizer.decode(z).shape == frames.shape
    x, feat = model.dynamics(z, tf.ones([b, t]), tf.ones([b, t]) / 64, actions_of(config))
    assert x.shape == z.shape and feat.shape == (b, t, config.dynamics.dim)
    assert model.heads.policy_logits(feat).shape == (b, t, config.heads.horizon, config.actions)
    assert model.heads.reward_dist(feat).mean().shape == (b, t, config.heads.horizon)


def one_step_lowers(loss_fn, variables):
    """The loss before and after one Adam step on the same batch and seed."""
    optimizer = keras.optimizers.Adam(1e-3)
    with tf.GradientTape() as tape:
        before = loss_fn()
    pairs = [(g, v) for g, v in zip(tape.gradient(before, variables), variables) if g is not None]
    # Unread here: the agent token and the no-action token (every action is labelled).
    assert len(variables) - len(pairs) <= 2, [v.path for v in variables]
    optimizer.apply_gradients(pairs)
    return float(before), float(loss_fn())


def test_one_gradient_step_lowers_each_loss(config):
    keras.utils.set_random_seed(2)
    net = dreamer4.build(config)
    frames, actions = frames_of(config, 1), actions_of(config, 1)
    before, after = one_step_lowers(lambda: net.tokenizer.loss(frames, SEED)[0],
                                    net.tokenizer.trainable_variables)
    assert after < before, (before, after)
    z = net.tokenizer.encode(frames)
    before, after = one_step_lowers(lambda: net.dynamics.loss(z, actions, SEED)[0],
                                    net.dynamics.trainable_variables)
    assert after < before, (before, after)
    feat = net.dynamics.features(z, actions)
    rewards = f32(np.random.default_rng(8).normal(size=feat.shape[:2]))
    mask = tf.ones(feat.shape[:2])

    def heads_loss():
        return net.heads.bc_loss(feat, actions, mask) + net.heads.reward_loss(feat, rewards)
    before, after = one_step_lowers(heads_loss, net.heads.trainable_variables)
    assert after < before, (before, after)


def test_a_seed_repeats_the_losses_and_none_draws_a_fresh_one(model, config):
    frames, actions = frames_of(config), actions_of(config)
    z = model.tokenizer.encode(frames)
    losses = (lambda s: model.tokenizer.loss(frames, s)[0], lambda s: model.dynamics.loss(z, actions, s)[0])
    for loss in losses:
        assert float(loss(SEED)) == float(loss(SEED))
        assert float(loss(None)) != float(loss(None))
