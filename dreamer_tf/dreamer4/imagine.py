"""Dreamer 4's RL in imagination: rollouts of the frozen world model, lambda-returns, the value head.

Index timeline of a rollout of H steps from the last context frame (step 0):

    features   h_0, h_1, ..., h_H          [B, H + 1, D]   (h_k reads frame k and the actions up to a_k)
    actions    a_1, ..., a_H               [B, H, A]       (a_{k+1} ~ pi(. | h_k) leads to frame k + 1)
    rewards    r_1, ..., r_H               [B, H]          (r_{k+1} comes with frame k + 1, shift 0)
    values     v_0, ..., v_H               [B, H + 1]

Also the small pure helpers of the pipeline: the action discretisation and the PSNR of frames.
"""

import keras
import numpy as np
import tensorflow as tf

from dreamer_tf import dists, ops
from dreamer_tf.dreamer4.agent import categorical_kl, pmpo_loss
from dreamer_tf.layers import MLP, Linear


def action_values(actions):
    """The `actions` evenly spaced force levels in [-1, 1]: [A] float32 (-1, -0.5, 0, 0.5, 1 for A = 5)."""
    return np.linspace(-1.0, 1.0, actions).astype(np.float32)


def discretise(force, actions):
    """The index of the nearest level of action_values: force [...] in [-1, 1] -> int64 [...]."""
    scaled = (np.clip(force, -1.0, 1.0) + 1.0) / 2.0 * (actions - 1)    # [0, A - 1]
    return np.round(scaled).astype(np.int64)


def psnr(pred, target):
    """Per-frame PSNR in dB of images in [0, 1]: 10 log10(1 / mse); [..., H, W, C] -> [...]."""
    mse = tf.reduce_mean(tf.square(tf.cast(pred, tf.float32) - tf.cast(target, tf.float32)), [-3, -2, -1])
    return 10.0 * tf.math.log(1.0 / tf.maximum(mse, 1e-10)) / tf.math.log(10.0)


def lambda_returns(rewards, values, gamma, lam):
    """TD(lambda) returns, R_H = v_H and, backwards for k = H - 1, ..., 0,

        R_k = r_{k+1} + gamma ((1 - lam) v_{k+1} + lam R_{k+1})

    rewards [B, H] (r_1..r_H), values [B, H + 1] (v_0..v_H) -> returns [B, H] (R_0..R_{H-1}).
    """
    # index:    0    1    2  ...  H
    # values:   v0   v1   v2 ...  vH
    # rewards:       r1   r2 ...  rH        (padded at 0: ops' layout puts r_t beside s_t)
    # returns:  R0   R1  ... R_{H-1}        (R_H = v_H seeds the recursion)
    padded = tf.pad(rewards, [[0, 0], [1, 0]])
    none = tf.zeros_like(padded)           # no episode ends inside an imagined rollout
    return ops.lambda_return(none, none, padded, values, values, gamma, lam)


def value_loss(dist, returns):
    """-mean log p(sg R_k | h_k): the two-hot cross-entropy of the value head; dist over [B, H]."""
    return -tf.reduce_mean(dist.log_prob(tf.stop_gradient(returns)))


def sample_onehot(logits, seed):
    """One action per row from categorical logits [B, A] -> one-hot float32 [B, A] (stateless)."""
    index = tf.random.stateless_categorical(logits, 1, seed)[:, 0]
    return tf.one_hot(index, logits.shape[-1])


class ValueHead(keras.layers.Layer):
    """Symexp two-hot value of one agent feature, trained only in imagination."""

    def __init__(self, dim, layers, units, bins, **kw):
        super().__init__(**kw)
        self.bins = dists.symexp_bins(bins)
        self.mlp = MLP(dim, layers, units, name='mlp')
        self.out = Linear(self.mlp.out_dim, bins, outscale=0.0, name='out')

    def call(self, feat):
        """feat [..., D] -> SymexpTwoHot over [...]."""
        return dists.SymexpTwoHot(tf.cast(self.out(self.mlp(feat)), tf.float32), self.bins)


def next_action_logits(heads, feat):
    """The policy's first MTP output, the logits of the next action: feat [B, D] -> [B, A]."""
    return heads.policy_logits(feat[:, None])[:, 0, 0]


def rollout(dynamics, heads, latents, actions, mask, horizon, steps, seed):
    """Imagine `horizon` steps from the context latents [B, C, L, Db] with its actions [B, C, A] and
    action mask [B, C], sampling actions from the policy and frames with `steps` shortcut steps.

    Returns (features [B, H + 1, D], actions [B, H, A], rewards [B, H]) after the module docstring's
    timeline; nothing here is differentiated (the world model is frozen).
    """
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 2 * horizon))
    feats, taken, rewards = [dynamics.features(latents, actions, mask)[:, -1]], [], []
    for k in range(horizon):
        act = sample_onehot(next_action_logits(heads, feats[-1]), seeds[2 * k])
        actions = tf.concat([actions, act[:, None]], 1)
        mask = tf.concat([mask, tf.ones_like(mask[:, :1])], 1)
        frame = dynamics.generate(latents, actions, steps, seeds[2 * k + 1], mask)
        latents = tf.concat([latents, frame[:, None]], 1)
        feat = dynamics.features(latents, actions, mask)[:, -1]
        rewards.append(heads.reward_dist(feat[:, None]).mean()[:, 0, 0])   # r_{k+1} from h_{k+1}
        feats.append(feat)
        taken.append(act)
    return tf.stop_gradient(tf.stack(feats, 1)), tf.stack(taken, 1), tf.stop_gradient(tf.stack(rewards, 1))


def imagination_losses(heads, prior, value, feats, actions, rewards, gamma, lam, alpha, beta):
    """PMPO policy loss (KL to the frozen BC prior) and value loss on one rollout.

    feats [B, H + 1, D], actions [B, H, A], rewards [B, H] -> (policy loss, value loss, metrics).
    """
    values = value(feats).mean()                                                   # [B, H + 1]
    returns = lambda_returns(rewards, tf.stop_gradient(values), gamma, lam)        # [B, H]
    advantage = returns - tf.stop_gradient(values[:, :-1])
    logits = heads.policy_logits(feats[:, :-1])[:, :, 0]                           # [B, H, A]
    logp = tf.reduce_sum(actions * tf.nn.log_softmax(logits, -1), -1)              # [B, H]
    kl = categorical_kl(logits, tf.stop_gradient(prior.policy_logits(feats[:, :-1])[:, :, 0]))
    flat = [tf.reshape(x, [-1]) for x in (logp, advantage, kl)]
    policy = pmpo_loss(*flat, alpha=alpha, beta=beta)
    critic = value_loss(value(feats[:, :-1]), returns)
    metrics = {'return': tf.reduce_mean(returns), 'reward': tf.reduce_mean(rewards), 'kl': tf.reduce_mean(kl),
               'positive': tf.reduce_mean(tf.cast(advantage >= 0, tf.float32))}
    return policy, critic, metrics
