"""The RSSM's latents (categorical and Gaussian) against numpy loops, and the shape checks."""

import math

import numpy as np
import pytest
import tensorflow as tf

from dreamer_tf import latents, ops
from dreamer_tf.rssm import assert_lead
from helpers import f32, np_log_softmax

INTERFACE = ('raw_dim', 'flat_dim', 'zeros', 'from_raw', 'flat', 'dist', 'kl')


def make(kind):
    return latents.make_latent(kind, stoch=3, classes=4, unimix=0.01, min_std=0.1)


@pytest.mark.parametrize('kind', ['categorical', 'gaussian'])
def test_both_latents_have_the_interface_and_no_variables(kind):
    latent = make(kind)
    for name in INTERFACE:
        assert hasattr(latent, name), name
    assert not isinstance(latent, tf.Module) and not hasattr(latent, 'variables')
    zeros = latent.zeros(2)
    assert all(not np.any(v.numpy()) for v in zeros.values())
    raw = f32(np.random.default_rng(0).normal(size=(2, latent.raw_dim)))
    state = latent.from_raw(raw, tf.constant([1, 2], tf.int64))
    assert set(state) == set(zeros)
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in zeros.items()}
    assert latent.flat(state['stoch']).shape == (2, latent.flat_dim)


def test_unknown_latent_is_named():
    with pytest.raises(ValueError, match="rssm.latent 'beta'"):
        latents.make_latent('beta', 3, 4, 0.01, 0.1)


def test_categorical_from_raw_matches_numpy():
    latent = make('categorical')
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(5, 12)) * 3
    state = latent.from_raw(f32(raw), tf.constant(np.arange(5), tf.int64))
    probs = np.zeros((5, 3, 4))
    for n in range(5):
        for s in range(3):
            logits = raw[n, 4 * s: 4 * s + 4]
            soft = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            probs[n, s] = 0.99 * soft + 0.01 / 4
    np.testing.assert_allclose(np.exp(state['logit'].numpy()), probs, rtol=1e-5)
    stoch = state['stoch'].numpy()
    np.testing.assert_allclose(stoch.sum(-1), 1.0, rtol=1e-6)       # one-hot (plus p - sg(p) = 0)
    np.testing.assert_allclose(stoch.max(-1), 1.0, rtol=1e-6)
    flat = latent.flat(state['stoch']).numpy()
    for s in range(3):
        for c in range(4):
            np.testing.assert_array_equal(flat[:, 4 * s + c], stoch[:, s, c])


def test_categorical_kl_and_entropy_match_numpy():
    latent = make('categorical')
    rng = np.random.default_rng(2)
    logp, logq = np_log_softmax(rng.normal(size=(2, 2, 5, 3, 4)))
    kl = latent.kl({'logit': f32(logp)}, {'logit': f32(logq)}).numpy()
    ent = latent.dist({'logit': f32(logp)}).entropy().numpy()
    naive_kl, naive_ent = np.zeros((2, 5)), np.zeros((2, 5))
    for b in range(2):
        for t in range(5):
            for s in range(3):
                for c in range(4):
                    p = math.exp(logp[b, t, s, c])
                    naive_kl[b, t] += p * (logp[b, t, s, c] - logq[b, t, s, c])
                    naive_ent[b, t] -= p * logp[b, t, s, c]
    np.testing.assert_allclose(kl, naive_kl, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ent, naive_ent, rtol=1e-5)


def test_gaussian_from_raw_matches_numpy_and_the_noise_is_the_keys():
    latent = make('gaussian')
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(4, 6)) * 2
    key = tf.constant([5, 6, 7, 8], tf.int64)
    state = latent.from_raw(f32(raw), key)
    np.testing.assert_allclose(state['mean'].numpy(), raw[:, :3], rtol=1e-6)
    std = np.log1p(np.exp(raw[:, 3:])) + 0.1
    np.testing.assert_allclose(state['std'].numpy(), std, rtol=1e-5)
    # The standardised sample depends on the keys only: other raw outputs, the same noise.
    other = latent.from_raw(f32(rng.normal(size=(4, 6))), key)
    noise = (state['stoch'] - state['mean']) / state['std']
    np.testing.assert_allclose(noise.numpy(), ((other['stoch'] - other['mean']) / other['std']).numpy(),
                               rtol=1e-4, atol=1e-5)
    u = ops.keyed_uniform(key, [3]).numpy().astype(np.float64)
    np.testing.assert_allclose(noise.numpy(), [[math.sqrt(2) * _erfinv(2 * x - 1) for x in row] for row in u],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(latent.flat(state['stoch']).numpy(), state['stoch'].numpy())


def _erfinv(y):
    """Inverse error function by bisection on math.erf (the standard normal quantile is sqrt 2 erfinv)."""
    lo, hi = -6.0, 6.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if math.erf(mid) < y else (lo, mid)
    return 0.5 * (lo + hi)


def test_assert_lead_passes_unknown_dims_and_prints_every_shape():
    a, b = tf.zeros([2, 3, 4]), tf.zeros([2, 3])
    assert_lead((2, 3), 'here', a=a, b=b)
    assert_lead((None, 3), 'here', a=a, b=b)
    message = r'here: expected leading dims \(2, 4\), got a \(2, 3, 4\), b \(2, 3\)'
    with pytest.raises(ValueError, match=message):
        assert_lead((2, 4), 'here', a=a, b=b)

    @tf.function(input_signature=[tf.TensorSpec([None, None])])
    def traced(x):
        assert_lead((None, 3), 'traced', x=x)        # unknown dims match anything, at trace time only
        return x

    assert traced(tf.zeros([1, 5])).shape == (1, 5)
