"""Dreamer 4's interactive dynamics: a block-causal transformer trained by shortcut forcing.

Each time step t is one block of tokens, in this order:

    [action a_t] [signal level tau_t] [step size d_t] [latent token 1 .. L] [agent token]

`actions[:, t]` is the action taken just before frame t (it led to frame t), so with the causal mask the
prediction of frame t reads the frames before it and every action up to the one that produced it. A step
whose action is unlabelled (`action_mask` 0, e.g. video without actions) gets a learned no-action token.
The agent token reads its whole step but no other token reads it (transformer.spatial_mask), so the
policy and reward heads on its output never change the world model's predictions.
"""

import math

import keras
import tensorflow as tf

from dreamer_tf.dreamer4 import shortcut
from dreamer_tf.dreamer4.tokenizer import stateless_seed
from dreamer_tf.dreamer4.transformer import Transformer
from dreamer_tf.layers import Linear

FIXED_TOKENS = 3  # action, tau, d


class Dynamics(keras.layers.Layer):
    """x-prediction network f(z_tau, tau, d, a) over [B, T] steps; `loss` is the shortcut forcing step."""

    def __init__(self, latents, bottleneck, actions, dim, layers, heads, temporal_every, k_max, **kw):
        super().__init__(**kw)
        self.latents, self.k_max = latents, k_max
        self.d_levels = int(round(math.log2(k_max))) + 1
        if 2 ** (self.d_levels - 1) != k_max:
            raise ValueError(f'k_max must be a power of two, got {k_max}')
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.action_in = Linear(actions, dim, name='action_in')
        self.no_action = self.add_weight((dim,), init, name='no_action')
        self.tau_embed = self.add_weight((k_max + 1, dim), init, name='tau_embed')   # tau = i / K_max
        self.d_embed = self.add_weight((self.d_levels, dim), init, name='d_embed')   # d = 2^-i
        self.latent_in = Linear(bottleneck, dim, name='latent_in')
        self.latent_pos = self.add_weight((latents, dim), init, name='latent_pos')
        self.agent_token = self.add_weight((dim,), init, name='agent_token')
        self.transformer = Transformer(dim, layers, heads, temporal_every, name='transformer')
        self.x_out = Linear(dim, bottleneck, name='x_out')

    def _level_tokens(self, tau, d):
        """tau, d [B, T] -> tokens [B, T, 2, D]; levels off the training grid (a half step below d_min
        inside the bootstrap target) take the nearest embedding."""
        tau_index = tf.clip_by_value(tf.cast(tf.round(tau * self.k_max), tf.int32), 0, self.k_max)
        d_index = tf.cast(tf.round(-tf.math.log(d) / math.log(2.0)), tf.int32)
        d_index = tf.clip_by_value(d_index, 0, self.d_levels - 1)
        return tf.stack([tf.gather(self.tau_embed, tau_index), tf.gather(self.d_embed, d_index)], 2)

    def _action_tokens(self, actions, action_mask):
        """actions [B, T, A] -> [B, T, 1, D]; unlabelled steps get the no-action token."""
        tokens = self.action_in(tf.cast(actions, tf.float32))
        if action_mask is not None:
            tokens = tf.where(tf.cast(action_mask, tf.bool)[..., None], tokens, self.no_action)
        return tokens[:, :, None]

    def call(self, z, tau, d, actions, action_mask=None):
        """z [B, T, L, Db] at levels tau [B, T] -> (x_hat [B, T, L, Db], agent features [B, T, D])."""
        latent = self.latent_in(z) + self.latent_pos
        agent = tf.zeros_like(latent[:, :, :1]) + self.agent_token
        tokens = tf.concat([self._action_tokens(actions, action_mask), self._level_tokens(tau, d),
                            latent, agent], 2)                                # [B, T, 3 + L + 1, D]
        x = self.transformer(tokens, hidden=1)
        return self.x_out(x[:, :, FIXED_TOKENS:-1]), x[:, :, -1]

    def loss(self, latents, actions, seed=None, action_mask=None):
        """Shortcut forcing on clean tokenizer latents [B, T, L, Db] and actions [B, T, A].

        Returns (scalar loss, metrics, agent features [B, T, D] of the noisy forward pass).
        """
        x = sg_float(latents)
        seeds = tf.random.experimental.stateless_split(stateless_seed(seed), 3)
        d_seed, tau_seed, noise_seed = tf.unstack(seeds)
        d = shortcut.sample_step_sizes(tf.shape(x)[:2], self.k_max, d_seed)
        tau = shortcut.sample_signal_levels(d, tau_seed)
        z = shortcut.corrupt(x, tf.random.stateless_normal(tf.shape(x), noise_seed), tau)
        x_pred, agent = self(z, tau, d, actions, action_mask)

        # The bootstrap reruns every frame at half steps; the flow frames' (d = d_min) results are
        # discarded by shortcut_loss, but they stay the causal context of the frames after them.
        def denoise(z_, tau_, d_):
            return self(z_, tau_, d_, actions, action_mask)[0]
        target = shortcut.bootstrap_target(denoise, z, tau, d)
        per_frame = shortcut.shortcut_loss(x_pred, x, z, tau, d, target, 1.0 / self.k_max)
        loss = tf.reduce_mean(shortcut.ramp_weight(tau) * per_frame)
        flow = tf.cast(d <= 1.0 / self.k_max, tf.float32)
        metrics = {'loss': loss, 'flow_frac': tf.reduce_mean(flow),
                   'flow_loss': tf.reduce_sum(flow * per_frame) / tf.maximum(tf.reduce_sum(flow), 1.0)}
        return loss, metrics, agent

    def features(self, latents, actions, action_mask=None):
        """Agent features [B, T, D] of clean latents (tau = 1, d = d_min), e.g. for the heads' losses."""
        ones = tf.ones(tf.shape(latents)[:2])
        return self(latents, ones, ones / self.k_max, actions, action_mask)[1]

    def generate(self, context, actions, steps, seed=None, action_mask=None):
        """The next frame's latent [B, L, Db] from clean context [B, T, L, Db] and actions [B, T + 1, A]
        (the last one leads to the new frame), in `steps` shortcut steps (a power of two <= K_max).

        Every step reruns the whole context (no key/value cache yet): simple, and cheap at laptop sizes.
        """
        if steps > self.k_max or self.k_max % steps:
            raise ValueError(f'steps must be a power of two <= {self.k_max}, got {steps}')
        context = tf.cast(context, tf.float32)
        shape = tf.shape(context)
        noise = tf.random.stateless_normal([shape[0], 1, shape[2], context.shape[3]], stateless_seed(seed))
        ones = tf.ones([shape[0], context.shape[1]])

        def denoise(z, tau, d):
            seq = tf.concat([context, z], 1)
            taus = tf.concat([ones, tf.fill([shape[0], 1], tau)], 1)
            x_pred, _ = self(seq, taus, tf.fill(tf.shape(taus), d), actions, action_mask)
            return x_pred[:, -1:]
        return shortcut.sample(denoise, noise, steps)[:, 0]


def sg_float(x):
    """Clean latents are targets only: float32, no gradient into the tokenizer."""
    return tf.stop_gradient(tf.cast(x, tf.float32))
