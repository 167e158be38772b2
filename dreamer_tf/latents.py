"""The RSSM's stochastic latent z_t: categorical (V2, V3) or Gaussian (V1), behind one interface.

A latent is a plain strategy object without variables (the RSSM owns every layer):
    raw_dim              width of the raw output a prior or posterior layer emits
    flat_dim             width of z_t flattened into the feature
    zeros(batch)         the all-zero latent part of a state
    from_raw(raw, key)   sample and distribution parameters from a raw output [N, raw_dim]
    flat(stoch)          z_t [..., *shape] -> [..., flat_dim]
    dist(state)          the distribution of z_t, batch shape [...]
    kl(p, q)             KL(p || q) between two states' latents, summed over the latent: [...]
"""

import tensorflow as tf
import tensorflow_probability as tfp

from dreamer_tf import dists
from dreamer_tf.layers import choose


def kl_categorical(logit_p, logit_q):
    """KL(p || q) of categoricals given log-probabilities, summed over latents: [B, T, S, C] -> [B, T]."""
    kl = tfp.distributions.kl_divergence(dists.OneHotDist(logit_p), dists.OneHotDist(logit_q))
    return tf.reduce_sum(kl, -1)


class CategoricalLatent:
    """`stoch` one-hot categoricals of `classes` classes with straight-through samples and unimix.

    State keys: stoch [..., stoch, classes] (the sample) and logit (its log-probabilities, unimixed).
    """

    def __init__(self, stoch, classes, unimix):
        self.shape, self.unimix = (stoch, classes), unimix
        self.raw_dim = self.flat_dim = stoch * classes

    def zeros(self, batch_size):
        return dict(stoch=tf.zeros([batch_size, *self.shape]), logit=tf.zeros([batch_size, *self.shape]))

    def from_raw(self, raw, key=None):
        dist = dists.OneHotDist(tf.reshape(raw, [-1, *self.shape]), self.unimix)
        return dict(stoch=dists.keyed_sample(dist, key), logit=dist.logits)

    def flat(self, stoch):
        return tf.reshape(stoch, tf.concat([tf.shape(stoch)[:-2], [self.flat_dim]], 0))

    def dist(self, state):
        return tfp.distributions.Independent(dists.OneHotDist(state['logit']), 1)

    def kl(self, p, q):
        return kl_categorical(p['logit'], q['logit'])


class GaussianLatent:
    """A diagonal Gaussian of `stoch` dims with std = softplus(raw) + min_std.

    State keys: stoch [..., stoch] (the sample), mean and std.
    """

    def __init__(self, stoch, min_std):
        self.stoch, self.min_std = stoch, min_std
        self.flat_dim, self.raw_dim = stoch, 2 * stoch      # raw: (mean, std before softplus)

    def zeros(self, batch_size):
        zeros = tf.zeros([batch_size, self.stoch])
        return dict(stoch=zeros, mean=zeros, std=zeros)

    def from_raw(self, raw, key=None):
        mean, std = tf.split(raw, 2, -1)
        std = tf.nn.softplus(std) + self.min_std
        return dict(stoch=dists.keyed_sample(dists.gaussian_latent(mean, std), key), mean=mean, std=std)

    def flat(self, stoch):
        return stoch

    def dist(self, state):
        return dists.gaussian_latent(state['mean'], state['std'])

    def kl(self, p, q):
        return tfp.distributions.kl_divergence(self.dist(p), self.dist(q))


def make_latent(latent, stoch, classes, unimix, min_std):
    """The latent that `rssm.latent` names."""
    table = {'categorical': lambda: CategoricalLatent(stoch, classes, unimix),
             'gaussian': lambda: GaussianLatent(stoch, min_std)}
    return choose(table, latent, 'rssm.latent')()
