"""The heads' distributions, all in float32, so every loss reads `-dist.log_prob(target)`."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from dreamer_tf import ops

tfd = tfp.distributions
sg = tf.stop_gradient


def unimix_logits(logits, unimix):
    """log((1 - unimix) softmax(logits) + unimix / K): every probability >= unimix / K bounds the KL."""
    logits = tf.cast(logits, tf.float32)
    if not unimix:
        return logits
    probs = tf.nn.softmax(logits, -1)
    probs = (1.0 - unimix) * probs + unimix / logits.shape[-1]
    return tf.math.log(probs)


class OneHotDist(tfd.OneHotCategorical):
    """One-hot categorical whose samples carry straight-through gradients: sample + p - sg(p)."""

    def __init__(self, logits, unimix=0.0, name='OneHotDist'):
        mixed = unimix_logits(logits, unimix)
        super().__init__(logits=mixed, dtype=tf.float32, name=name)
        # Copies and slices call __init__ again: they must not mix twice.
        self._parameters = dict(logits=mixed, unimix=0.0, name=name)

    @property
    def uniform_shape(self):
        """The shape of a row's uniform numbers in `sample_from_uniform`: one per categorical."""
        return list(self.logits.shape[1:-1]) + [1]

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict(logits=tfp.util.ParameterProperties(event_ndims=1))

    def sample(self, sample_shape=(), seed=None, name='sample'):
        """By inverse CDF: 10x cheaper than tf.random.categorical under XLA on the CPU."""
        probs = self.probs_parameter()
        lead = tf.reshape(tf.cast(sample_shape, tf.int32), [-1])
        shape = tf.concat([lead, tf.shape(probs)[:-1], [1]], 0)
        if seed is None:
            u = tf.random.uniform(shape)
        else:
            u = tf.random.stateless_uniform(shape, tfp.random.sanitize_seed(seed))
        return self.sample_from_uniform(u)

    def sample_from_uniform(self, u):
        """Straight-through one-hot sample + p - sg(p) picked by u [..., 1]."""
        probs = self.probs_parameter()
        cdf = tf.math.cumsum(probs, -1)
        k = probs.shape[-1]
        index = tf.minimum(tf.reduce_sum(tf.cast(cdf < u, tf.int32), -1), k - 1)
        sample = tf.one_hot(index, k, dtype=tf.float32)
        return sample + probs - sg(probs)

    def mode(self, name='mode'):
        mode = tf.one_hot(tf.argmax(self.logits, -1), self.logits.shape[-1], dtype=tf.float32)
        probs = self.probs_parameter()
        return mode + probs - sg(probs)


def symexp_bins(num_bins=255, low=-20.0, high=20.0):
    """symexp(linspace(low, high, n)), one half mirrored so uniform probabilities predict exactly 0."""
    if num_bins % 2 == 1 and low == -high:
        half = np.linspace(low, 0.0, (num_bins - 1) // 2 + 1, dtype=np.float64)
        half = np.sign(half) * np.expm1(np.abs(half))
        return np.concatenate([half, -half[:-1][::-1]]).astype(np.float32)
    lin = np.linspace(low, high, num_bins, dtype=np.float64)
    return (np.sign(lin) * np.expm1(np.abs(lin))).astype(np.float32)


def twohot_encode(x, bins):
    """x [...] split linearly between its two neighbouring bins [K] -> [..., K]; end bins take the rest."""
    bins = tf.convert_to_tensor(bins, tf.float32)
    x = tf.cast(x, tf.float32)[..., None]
    k = bins.shape[-1]
    below = tf.reduce_sum(tf.cast(bins <= x, tf.int32), -1) - 1
    above = k - tf.reduce_sum(tf.cast(bins > x, tf.int32), -1)
    below = tf.clip_by_value(below, 0, k - 1)
    above = tf.clip_by_value(above, 0, k - 1)
    equal = tf.equal(below, above)
    x = x[..., 0]
    dist_below = tf.where(equal, 1.0, tf.abs(tf.gather(bins, below) - x))
    dist_above = tf.where(equal, 1.0, tf.abs(tf.gather(bins, above) - x))
    total = dist_below + dist_above
    weight_below = dist_above / total
    weight_above = dist_below / total
    return (tf.one_hot(below, k) * weight_below[..., None] +
            tf.one_hot(above, k) * weight_above[..., None])


def twohot_mean(probs, bins):
    """sum_k p_k b_k [..., K] -> [...], as sum_i (p_{m+i} - p_{m-i}) b_{m+i} for mirrored bins.

    Each difference is exactly 0 for equal probabilities, whatever order XLA sums in.
    """
    k = bins.shape[-1]
    mirrored = k % 2 == 1 and np.array_equal(np.asarray(bins), -np.asarray(bins)[::-1])
    if not mirrored:
        return tf.reduce_sum(probs * bins, -1)
    m = (k - 1) // 2
    bins = tf.convert_to_tensor(bins, tf.float32)
    diff = probs[..., m + 1:] - tf.reverse(probs[..., :m], [-1])
    return tf.reduce_sum(diff * bins[m + 1:], -1) + probs[..., m] * bins[m]


class SymexpTwoHot(tfd.Distribution):
    """DreamerV3's reward and value: softmax over symexp bins; log_prob is the two-hot cross-entropy."""

    def __init__(self, logits, bins, name='SymexpTwoHot'):
        self.logits = tf.cast(logits, tf.float32)
        self.bins = np.asarray(bins, np.float32)
        super().__init__(dtype=tf.float32, reparameterization_type=tfd.NOT_REPARAMETERIZED,
                         validate_args=False, allow_nan_stats=True, parameters=dict(locals()),
                         name=name)

    def _batch_shape(self):
        return self.logits.shape[:-1]

    def _event_shape(self):
        return tf.TensorShape([])

    def _mean(self):
        return twohot_mean(tf.nn.softmax(self.logits, -1), self.bins)

    def _mode(self):
        return self._mean()

    def _log_prob(self, target):
        target = sg(tf.cast(target, tf.float32))
        log_pred = tf.nn.log_softmax(self.logits, -1)
        return tf.reduce_sum(twohot_encode(target, self.bins) * log_pred, -1)


def _identity(x):
    return x


# transform: (into the prediction's space, out of it)
MSE_TRANSFORMS = {None: (_identity, _identity), 'symlog': (ops.symlog, ops.symexp)}


class MSEDist(tfd.Distribution):
    """A prediction scored by -sum of squared errors over `dims` event dims, in symlog space if asked."""

    def __init__(self, pred, dims, transform=None, name='MSEDist'):
        self.pred = tf.cast(pred, tf.float32)
        self.dims = int(dims)
        self.transform = transform
        self.forward, self.inverse = MSE_TRANSFORMS[transform]
        super().__init__(dtype=tf.float32, reparameterization_type=tfd.FULLY_REPARAMETERIZED,
                         validate_args=False, allow_nan_stats=True, parameters=dict(locals()),
                         name=name)

    def _batch_shape(self):
        return self.pred.shape[:len(self.pred.shape) - self.dims]

    def _event_shape(self):
        return self.pred.shape[len(self.pred.shape) - self.dims:]

    def _mode(self):
        return self.inverse(self.pred)

    def _mean(self):
        return self._mode()

    def _log_prob(self, value):
        value = self.forward(tf.cast(value, tf.float32))
        axes = list(range(-self.dims, 0))
        return -tf.reduce_sum(tf.square(self.pred - value), axes)


def bounded_normal(mean, std_raw, minstd=0.1, maxstd=1.0):
    """DreamerV3 continuous actor: Normal(tanh(m), (max - min) * sigmoid(s + 2) + min), summed dims."""
    mean = tf.tanh(tf.cast(mean, tf.float32))
    std = (maxstd - minstd) * tf.sigmoid(tf.cast(std_raw, tf.float32) + 2.0) + minstd
    return tfd.Independent(tfd.Normal(mean, std), 1)


def bernoulli(logits):
    """The continue flag; soft targets such as (1 - terminal) * gamma score by cross-entropy."""
    return tfd.Independent(tfd.Bernoulli(logits=tf.cast(logits, tf.float32), dtype=tf.float32), 0)


def keyed_sample(dist, key):
    """A sample of `dist` whose noise is a pure function of per-row keys [N] (ops.keyed_uniform).

    Inverse CDFs for distributions with `sample_from_uniform`, loc + scale * Phi^-1(u) for Normals;
    key=None samples from TensorFlow's stateful generator (acting).
    """
    if key is None:
        return dist.sample()
    if hasattr(dist, 'sample_from_uniform'):
        return dist.sample_from_uniform(ops.keyed_uniform(key, dist.uniform_shape))
    if isinstance(dist, tfd.Independent) and isinstance(dist.distribution, tfd.Normal):
        normal = dist.distribution
        u = ops.keyed_uniform(key, normal.loc.shape[1:])
        return normal.loc + normal.scale * tf.math.ndtri(u)
    raise TypeError('keyed_sample supports OneHotDist, TanhNormal, TruncNormal and Independent(Normal), '
                    f'got {type(dist).__name__}')


def unit_normal(mean, dims):
    """Normal(mean, 1) over the last `dims` axes, V1/V2: -log_prob = 0.5 * squared error + const."""
    mean = tf.cast(mean, tf.float32)
    return tfd.Independent(tfd.Normal(mean, tf.ones_like(mean)), dims)


def gaussian_latent(mean, std):
    """The DreamerV1 latent: a diagonal Gaussian over the last axis."""
    return tfd.Independent(tfd.Normal(mean, std), 1)


def _normal_quantiles(n):
    """Phi^-1((i + 0.5) / n): DreamerV1's 100 random draws, stratified (less variance, no state)."""
    return tf.math.ndtri((tf.range(n, dtype=tf.float32) + 0.5) / n)


class TanhNormal:
    """DreamerV1's actor a = tanh(x), x ~ Normal(mean, std) [..., A]; entropy and mode from `samples` draws.

    log p(a) = sum_i [log N(x_i; mean_i, std_i) - log(1 - tanh(x_i)^2)], x = atanh(a).
    """

    def __init__(self, mean, std, samples=100):
        self.mean, self.std = tf.cast(mean, tf.float32), tf.cast(std, tf.float32)
        self.samples = samples
        self.uniform_shape = self.mean.shape[1:]

    @staticmethod
    def _log_det(x):
        """log(1 - tanh(x)^2) in its stable form."""
        return 2.0 * (np.log(2.0) - x - tf.nn.softplus(-2.0 * x))

    def _log_prob_pre(self, x):
        """log p(tanh(x)) from the pre-tanh x, which needs no atanh of a saturated action."""
        normal = -0.5 * tf.square((x - self.mean) / self.std) - tf.math.log(self.std) \
            - 0.5 * np.log(2.0 * np.pi)
        return tf.reduce_sum(normal - self._log_det(x), -1)

    def log_prob(self, action):
        # Inside (-1, 1) so that atanh stays finite, as in DreamerV1.
        action = tf.clip_by_value(tf.cast(action, tf.float32), -0.99999997, 0.99999997)
        return self._log_prob_pre(tf.atanh(action))

    def sample(self, seed=None):
        return self.sample_from_uniform(tf.random.uniform(tf.shape(self.mean)))

    def sample_from_uniform(self, u):
        return tf.tanh(self.mean + self.std * tf.math.ndtri(u))      # reparameterised

    def _draws(self):
        eps = tf.reshape(_normal_quantiles(self.samples), [-1] + [1] * len(self.mean.shape))
        return self.mean[None] + self.std[None] * eps                  # [K, ..., A] pre-tanh

    def entropy(self):
        return -tf.reduce_mean(self._log_prob_pre(self._draws()), 0)

    def mode(self):
        """Per dimension, the candidate tanh(x_k) with the highest density (dims are independent)."""
        x = self._draws()                                              # [K, ..., A]
        density = -0.5 * tf.square((x - self.mean) / self.std) - self._log_det(x)
        best = tf.one_hot(tf.argmax(density, 0), x.shape[0], axis=0, dtype=x.dtype)  # [K, ..., A]
        return tf.tanh(tf.reduce_sum(best * x, 0))


def tanh_normal(mean, std_raw, init_std=5.0, mean_scale=5.0, min_std=1e-4):
    """DreamerV1's actor: mean = k tanh(m / k), std = softplus(s + softplus^-1(init_std)) + min_std."""
    mean = mean_scale * tf.tanh(tf.cast(mean, tf.float32) / mean_scale)
    raw_init = float(np.log(np.expm1(init_std)))
    std = tf.nn.softplus(tf.cast(std_raw, tf.float32) + raw_init) + min_std
    return TanhNormal(mean, std)


class TruncNormal:
    """DreamerV2's actor: Normal(mean, std) truncated to [-1, 1], dims independent, sampled by inverse CDF.

    x = mean + std * Phi^-1(Phi(alpha) + u * (Phi(beta) - Phi(alpha))), alpha and beta the standardised
    bounds: reparameterised with the same derivative as the release's tfd.TruncatedNormal.
    """

    def __init__(self, mean, std, low=-1.0, high=1.0):
        self.mean, self.std = tf.cast(mean, tf.float32), tf.cast(std, tf.float32)
        self.low, self.high = low, high
        self.dist = tfd.Independent(tfd.TruncatedNormal(self.mean, self.std, low, high), 1)
        self.uniform_shape = self.mean.shape[1:]

    def sample(self, seed=None):
        return self.sample_from_uniform(tf.random.uniform(tf.shape(self.mean)))

    def sample_from_uniform(self, u):
        lo = _ndtr((self.low - self.mean) / self.std)
        hi = _ndtr((self.high - self.mean) / self.std)
        p = tf.clip_by_value(lo + u * (hi - lo), 1e-7, 1.0 - 1e-7)
        x = self.mean + self.std * tf.math.ndtri(p)
        # Inside the bounds (the far tails lose precision), but, as in the release, the gradient passes.
        clipped = tf.clip_by_value(x, self.low + 1e-6, self.high - 1e-6)
        return x + sg(clipped - x)

    def log_prob(self, action):
        action = tf.clip_by_value(tf.cast(action, tf.float32), self.low + 1e-6, self.high - 1e-6)
        return self.dist.log_prob(action)

    def entropy(self):
        return self.dist.entropy()

    def mode(self):
        return tf.clip_by_value(self.mean, self.low, self.high)


def _ndtr(x):
    """Standard normal CDF."""
    return 0.5 * tf.math.erfc(-x / np.sqrt(2.0))


def trunc_normal(mean, std_raw, min_std=0.1, init_std=0.0):
    """DreamerV2's actor: mean = tanh(m), std = 2 * sigmoid((s + init_std) / 2) + min_std."""
    mean = tf.tanh(tf.cast(mean, tf.float32))
    std = 2.0 * tf.sigmoid((tf.cast(std_raw, tf.float32) + init_std) / 2.0) + min_std
    return TruncNormal(mean, std)
