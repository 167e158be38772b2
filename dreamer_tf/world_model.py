"""World model of every version: encoder + RSSM + decoder, reward and continue heads, and its loss.

Version differences are config values: `encoder.style` / `decoder.style` (v3: the Nature conv stack;
strided / transposed: the V1/V2 stride-2 convs), `reward_head.dist`, `loss.kl_form` (rssm.KL_FORMS)
and `behavior.pred_discount` (without a continue head imagination discounts by the constant gamma).
"""

import inspect

import keras
import tensorflow as tf

from dreamer_tf import nets
from dreamer_tf.layers import choose
from dreamer_tf.rssm import RSSM, assert_lead


class WorldModel(keras.layers.Layer):

    def __init__(self, config, obs_space, act_dim, **kw):
        super().__init__(**kw)
        self.config = config
        self.obs_keys = [k for k in ('vector', 'image') if k in obs_space]
        self.encoder = build(ENCODERS, 'encoder', config.encoder, obs_space)
        self.rssm = RSSM(act_dim, self.encoder.out_dim, **config.rssm, name='rssm')
        feat = self.rssm.feat_dim
        # The block projection (decoder.bspace) splits feat into deter | stoch.
        self.decoder = build(DECODERS, 'decoder', config.decoder, obs_space, feat, deter=self.rssm.deter)
        reward = dict(config.reward_head)
        self.reward = nets.Head(reward.pop('dist'), feat, **reward, name='reward')
        b = config.behavior
        self.cont = nets.Head('binary', feat, **config.cont_head, name='cont') if b.pred_discount else None
        self.discount = discount_factor(b)
        # V3 folds gamma into the continue target, so the head predicts the discount itself; V2 predicts
        # 1 - terminal and imagination multiplies by gamma.
        self.fold_discount = b.fold_discount
        transform = config.loss.reward_transform
        self.reward_transform = choose(REWARD_TRANSFORMS, transform, 'loss.reward_transform')

    def loss(self, data, state=None, key=None):
        """World-model losses for a replayed batch.

        data: dict of [B, C + T, ...] tensors, where the first C = replay_context steps only seed
        the RSSM carry and receive no loss; key: [B] int64 keys of the latent samples, or None.
        Returns (losses dict of [B, T] tensors, post states [B, T, ...], metrics dict).
        """
        # A window mostly starts mid-episode: the carry starts at zero but the real previous action
        # a_{-1} stays (true data about the step into x_0; only is_first zeroes it).
        post, prior = self.rssm.observe(self.encoder(data), data['action'], data['is_first'], state, key)
        # steps:  [c_0 ... c_{C-1}]  x_0 ... x_{T-1}     the context steps get no loss
        post, prior, data = (drop_context(x, self.config.replay_context) for x in (post, prior, data))
        losses = self.rssm.kl_loss(post, prior, self.config.loss)
        feat = self.rssm.get_feat(post)
        for name, dist in self.decoder(feat).items():
            losses[name] = -dist.log_prob(observation_target(name, data[name]))      # [B, T]
        losses['rew'] = -self.reward(feat).log_prob(self.transform_reward(data['reward']))  # [B, T]
        if self.cont is not None:
            con = 1.0 - tf.cast(data['is_terminal'], tf.float32)
            con = con * self.discount if self.fold_discount else con
            losses['con'] = -self.cont(feat).log_prob(con)            # [B, T]
        per_step = {k: v for k, v in losses.items() if v.shape.rank}          # V1's KL is one scalar
        assert_lead(data['reward'].shape, 'WorldModel.loss', **per_step)
        return losses, post, self._latent_metrics(post, prior)

    def transform_reward(self, reward):
        """The reward the model learns and imagination maximises: tanh(r) for DreamerV2 on Atari."""
        return self.reward_transform(tf.cast(reward, tf.float32))

    def imagined_discount(self, feat):
        """gamma * P(continue) of imagined states [N, H+1]: the continue head's (gamma inside it
        when folded), or the constant gamma without a continue head (V1)."""
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
        if self.config.loss.kl_form != 'dyn_rep':
            # V1/V2 log max(mean KL, free nats), which hides whether the clip holds (and the prior
            # gets no gradient); the raw mean KL(post || prior) shows it.
            metrics['kl_raw'] = tf.reduce_mean(self.rssm.kl(post, prior))
        return metrics


ENCODERS = {'v3': nets.Encoder, 'strided': nets.StridedEncoder}
DECODERS = {'v3': nets.Decoder, 'transposed': nets.TransposedDecoder}
REWARD_TRANSFORMS = {'none': tf.identity, 'tanh': tf.tanh}


def build(table, what, section, *args, **extra):
    """The class `<what>.style` names, given the keys of `section` and `extra` that it takes."""
    cls = choose(table, section.style, f'{what}.style')
    takes = inspect.signature(cls).parameters
    return cls(*args, **{k: v for k, v in {**section, **extra}.items() if k in takes}, name=what)


def drop_context(tensors, context):
    """The steps after the first `context` of every [B, C + T, ...] tensor in a dict."""
    return {k: v[:, context:] for k, v in tensors.items()}


def observation_target(name, value):
    """What the decoder predicts of an observation: images in [0, 1], vectors as float32."""
    value = tf.cast(value, tf.float32)
    return value / 255.0 if name == 'image' else value


def discount_factor(behavior):
    """gamma: `behavior.discount` (V1, V2) or 1 - 1/horizon (V3)."""
    if behavior.gamma_from == 'discount':
        return behavior.discount
    return 1.0 - 1.0 / behavior.horizon
