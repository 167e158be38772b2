"""Dreamer 4's agent objectives on the dynamics' agent-token features [B, T, D]: pure losses and heads.

Multi-token prediction (MTP): from step t the heads predict the next `horizon` (L) targets at once.
Index timeline, with `actions[:, t]` the action that led to frame t (dynamics.py):

    step t features read:  frame t, actions up to a_t
    policy targets:        actions[:, t + 1], ..., actions[:, t + L]     (shift 1: not yet taken)
    reward targets:        rewards[:, t], ..., rewards[:, t + L - 1]     (shift 0: r_t comes with frame t)

Targets past the end of the sequence are masked out, and so are unlabelled actions (video without
actions), so behaviour cloning only learns from action-labelled steps.
"""

import keras
import numpy as np
import tensorflow as tf

from dreamer_tf import dists
from dreamer_tf.layers import MLP, Linear


def mtp_targets(x, horizon, shift):
    """target[b, t, n] = x[b, t + shift + n], valid[t, n] = (t + shift + n < T).

    x [B, T, ...] -> (targets [B, T, L, ...] (zeros where invalid), valid [T, L] float32).
    """
    length = x.shape[1]
    pad = tf.zeros_like(x[:, :1])
    padded = tf.concat([x] + [pad] * (shift + horizon), 1)                  # [B, T + shift + L, ...]
    targets = tf.stack([padded[:, shift + n: shift + n + length] for n in range(horizon)], 2)
    index = np.arange(length)[:, None] + shift + np.arange(horizon)[None]
    return targets, tf.constant(index < length, tf.float32)


def masked_mean(x, mask):
    """sum(mask * x) / max(sum(mask), 1): the mean over the masked-in entries, 0 when there are none."""
    return tf.reduce_sum(mask * x) / tf.maximum(tf.reduce_sum(mask), 1.0)


def bc_loss(logp, valid, labelled):
    """Behaviour cloning with MTP: -mean log pi(a_{t+1+n} | h_t) over valid, action-labelled targets.

    logp [B, T, L] log-probabilities of the target actions, valid [T, L] (inside the sequence), labelled
    [B, T, L] (the target action is known) -> scalar.
    """
    return -masked_mean(logp, valid[None] * labelled)


def mtp_bc_loss(logits, actions, action_mask):
    """Multi-token BC: logits [B, T, L, A] of a_{t+1..t+L}, one-hot actions [B, T, A], action_mask [B, T]
    (1: the action is labelled) -> scalar mean of -log pi over the labelled targets inside the sequence."""
    horizon = logits.shape[2]
    targets, valid = mtp_targets(tf.cast(actions, tf.float32), horizon, 1)    # [B, T, L, A]
    labelled, _ = mtp_targets(tf.cast(action_mask, tf.float32), horizon, 1)  # [B, T, L]
    logp = tf.reduce_sum(targets * tf.nn.log_softmax(tf.cast(logits, tf.float32), -1), -1)
    return bc_loss(logp, valid, labelled)


def pmpo_loss(logp, advantage, kl, alpha=0.5, beta=0.3):
    """PMPO (Dreamer 4): the sign of the advantage splits states into D+ (A >= 0) and D- (A < 0),

        L = (1 - alpha) / |D-| sum_{D-} ln pi(a|s) - alpha / |D+| sum_{D+} ln pi(a|s)
            + beta / N sum_i KL[pi(.|s_i) || pi_prior(.|s_i)]

    Only the sign of A counts, so no return normalisation is needed; an empty set adds 0. The KL is the
    reverse one (policy first) to the frozen behaviour-cloning prior. logp, advantage, kl [N] -> scalar.
    """
    positive = tf.cast(advantage >= 0.0, tf.float32)   # [N]
    negative = 1.0 - positive
    return ((1.0 - alpha) * masked_mean(logp, negative) - alpha * masked_mean(logp, positive)
            + beta * tf.reduce_mean(kl))


def categorical_kl(logits, prior_logits):
    """KL[pi || pi_prior] = sum_a pi(a) (ln pi(a) - ln pi_prior(a)): [..., A] x [..., A] -> [...]."""
    logp, logq = tf.nn.log_softmax(logits, -1), tf.nn.log_softmax(prior_logits, -1)
    return tf.reduce_sum(tf.exp(logp) * (logp - logq), -1)


class AgentHeads(keras.layers.Layer):
    """Policy (categorical over `actions`) and symexp two-hot reward heads, each predicting `horizon`
    steps from one agent feature."""

    def __init__(self, dim, actions, horizon, layers, units, bins, **kw):
        super().__init__(**kw)
        self.actions, self.horizon = actions, horizon
        self.bins = dists.symexp_bins(bins)
        self.policy_mlp = MLP(dim, layers, units, name='policy_mlp')
        self.policy_out = Linear(self.policy_mlp.out_dim, horizon * actions, outscale=0.01, name='policy_out')
        self.reward_mlp = MLP(dim, layers, units, name='reward_mlp')
        self.reward_out = Linear(self.reward_mlp.out_dim, horizon * bins, outscale=0.0, name='reward_out')

    def policy_logits(self, feat):
        """feat [B, T, D] -> logits [B, T, L, A] of a_{t+1}, ..., a_{t+L}."""
        logits = self.policy_out(self.policy_mlp(feat))
        return tf.reshape(tf.cast(logits, tf.float32), [-1, feat.shape[1], self.horizon, self.actions])

    def reward_dist(self, feat):
        """feat [B, T, D] -> SymexpTwoHot over [B, T, L] rewards r_t, ..., r_{t+L-1}."""
        logits = self.reward_out(self.reward_mlp(feat))
        logits = tf.reshape(tf.cast(logits, tf.float32), [-1, feat.shape[1], self.horizon, len(self.bins)])
        return dists.SymexpTwoHot(logits, self.bins)

    def bc_loss(self, feat, actions, action_mask):
        """feat [B, T, D], one-hot actions [B, T, A], action_mask [B, T] (1: labelled) -> scalar."""
        return mtp_bc_loss(self.policy_logits(feat), actions, action_mask)

    def reward_loss(self, feat, rewards):
        """-mean log p(r_{t+n} | h_t) over targets inside the sequence: feat [B, T, D], rewards [B, T]."""
        targets, valid = mtp_targets(tf.cast(rewards, tf.float32), self.horizon, 0)    # [B, T, L]
        logp = self.reward_dist(feat).log_prob(targets)
        return -masked_mean(logp, valid[None] * tf.ones_like(logp))
