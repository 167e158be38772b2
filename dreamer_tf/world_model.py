"""World model of every version: encoder + RSSM + decoder, reward and continue heads, and its loss.

Version differences are config values: `encoder.style` / `decoder.style` (v3: the Nature conv stack;
strided: the V1/V2 stride-2 convs), `reward_head.dist`, the `loss.kl_form` of rssm.kl_loss, and
whether a `cont_head` section exists (DreamerV1 has no continue head: its imagination discounts
by the constant gamma).
"""

import keras
import tensorflow as tf

from dreamer_tf import nets
from dreamer_tf.rssm import RSSM


class WorldModel(keras.layers.Layer):

    def __init__(self, config, obs_space, act_dim, **kw):
        super().__init__(**kw)
        self.config = config
        self.obs_keys = [k for k in ('vector', 'image') if k in obs_space]
        encoder, decoder = dict(config.encoder), dict(config.decoder)
        self.encoder = _pick(ENCODERS, 'encoder', encoder)(obs_space, **encoder, name='encoder')
        self.rssm = RSSM(act_dim, self.encoder.out_dim, **config.rssm, name='rssm')
        feat = self.rssm.feat_dim
        if decoder.get('bspace'):
            decoder['deter'] = self.rssm.deter      # the block projection splits feat into deter | stoch
        self.decoder = _pick(DECODERS, 'decoder', decoder)(obs_space, feat, **decoder, name='decoder')
        reward = dict(config.reward_head)
        self.reward = nets.Head(reward.pop('dist', 'twohot'), feat, **reward, name='reward')
        # Without a continue head (V1; V2 on DMC: `pred_discount: false`) imagination discounts by
        # the constant gamma and never terminates.
        predict = 'cont_head' in config and config.behavior.get('pred_discount', True)
        self.cont = nets.Head('binary', feat, **config.cont_head, name='cont') if predict else None
        self.discount = discount_factor(config.behavior)
        # V3 folds gamma into the continue target, (1 - terminal) * gamma, so that the head predicts
        # the discount itself; V2 predicts 1 - terminal and imagination multiplies by gamma.
        self.fold_discount = config.behavior.get('fold_discount', True)
        self.reward_transform = config.loss.get('reward_transform', 'none')
        if self.reward_transform not in ('none', 'tanh'):
            raise ValueError(f"loss.reward_transform '{self.reward_transform}' is not one of "
                             "['none', 'tanh']")

    def loss(self, data, state=None, key=None):
        """World-model losses for a replayed batch.

        data: dict of [B, C + T, ...] tensors, where the first C = replay_context steps only seed
        the RSSM carry and receive no loss; key: [B] int64 keys of the latent samples, or None.
        Returns (losses dict of [B, T] tensors, post states [B, T, ...], metrics dict).
        """
        ctx = self.config.replay_context
        embed = self.encoder(data)
        # A window mostly starts mid-episode: without context steps the carry starts at zero, but the
        # real previous action a_{-1} is kept. The V2 release flags every window start is_first, which
        # zeroes it; keeping it is right because it is true data about the step into x_0 (the V1
        # release keeps it too) and a window start is not an episode start (V3 carries the state).
        post, prior = self.rssm.observe(embed, data['action'], data['is_first'], state, key)
        post = {k: v[:, ctx:] for k, v in post.items()}
        prior = {k: v[:, ctx:] for k, v in prior.items()}
        data = {k: v[:, ctx:] for k, v in data.items()}
        losses = self.rssm.kl_loss(post, prior, self.config.loss)
        feat = self.rssm.get_feat(post)
        for key, dist in self.decoder(feat).items():
            target = tf.cast(data[key], tf.float32)
            if key == 'image':
                target = target / 255.0
            losses[key] = -dist.log_prob(target)                      # [B, T]
        losses['rew'] = -self.reward(feat).log_prob(self.transform_reward(data['reward']))  # [B, T]
        if self.cont is not None:
            con = 1.0 - tf.cast(data['is_terminal'], tf.float32)
            con = con * self.discount if self.fold_discount else con
            losses['con'] = -self.cont(feat).log_prob(con)            # [B, T]
        metrics = self._latent_metrics(post, prior)
        return losses, post, metrics

    def transform_reward(self, reward):
        """The reward the model learns and imagination maximises: tanh(r) for DreamerV2 on Atari."""
        reward = tf.cast(reward, tf.float32)
        return tf.tanh(reward) if self.reward_transform == 'tanh' else reward

    def imagined_discount(self, feat):
        """gamma * P(continue) of imagined states [N, H+1]: the predicted continue (V3 has gamma
        inside it already), or the constant gamma without a continue head (V1)."""
        if self.cont is None:
            return tf.fill(tf.shape(feat)[:-1], self.discount)
        con = self.cont(feat).mean()
        return con if self.fold_discount else con * self.discount

    def loss_scale(self, name):
        """Scale of each world-model loss term; reconstruction keys share the `rec` scale."""
        return self.config.loss.rec if name in self.obs_keys else self.config.loss[name]

    def _latent_metrics(self, post, prior):
        metrics = {'post_ent': tf.reduce_mean(self.rssm.get_dist(post).entropy()),
                   'prior_ent': tf.reduce_mean(self.rssm.get_dist(prior).entropy())}
        if self.config.loss.get('kl_form', 'dyn_rep') != 'dyn_rep':
            # V1/V2 log max(mean KL, free nats), which hides whether the clip holds (and the prior
            # gets no gradient); the raw mean KL(post || prior) shows it.
            metrics['kl_raw'] = tf.reduce_mean(self.rssm.kl(post, prior))
        return metrics


ENCODERS = {'v3': nets.Encoder, 'strided': nets.StridedEncoder}
DECODERS = {'v3': nets.Decoder, 'transposed': nets.TransposedDecoder}


def _pick(table, section, values):
    """The class that `<section>.style` names (popped from `values`); v3 when the key is absent."""
    style = values.pop('style', 'v3')
    if style not in table:
        raise ValueError(f"{section}.style '{style}' is not one of {sorted(table)}")
    return table[style]


def discount_factor(behavior):
    """gamma: `behavior.discount` (V1, V2) or 1 - 1/horizon (V3)."""
    return behavior.discount if 'discount' in behavior else 1.0 - 1.0 / behavior.horizon
