"""Pure float32 tensor functions of every Dreamer version; tensors are batch-major, [B, T, ...]."""

import math

import tensorflow as tf

sg = tf.stop_gradient


@tf.custom_gradient
def symlog(x):
    """DreamerV3's symlog: sign(x) * ln(1 + |x|)."""
    def grad(upstream):  # Written out: autodiff through sign() gives 0 at x = 0.
        return upstream / (1.0 + tf.abs(x))
    return tf.sign(x) * tf.math.log1p(tf.abs(x)), grad


@tf.custom_gradient
def symexp(x):
    """symlog's inverse: sign(x) * (exp(|x|) - 1)."""
    def grad(upstream):
        return upstream * tf.exp(tf.abs(x))
    return tf.sign(x) * tf.math.expm1(tf.abs(x)), grad


@tf.custom_gradient
def matmul_pre_t(x, w, w_t):
    """x @ w, [N, I] x [I, O] -> [N, O], whose input gradient multiplies by w_t = w^T laid out beforehand.

    In the differentiated observe loop (batch 16) XLA's CPU dot against a transposed right operand ran
    several times slower than against the same matrix laid out: a loop's caller transposes once.
    """
    def grad(upstream):
        return tf.matmul(upstream, w_t), tf.matmul(x, upstream, transpose_a=True), None
    return tf.matmul(x, w), grad


def lambda_return(last, term, rew, val, boot, disc, lam):
    """R_t = r_{t+1} + disc (1 - term_{t+1}) [(1 - c) boot_{t+1} + c R_{t+1}], c = lam (1 - last_{t+1}).

    [B, T] -> [B, T-1]. `val` is unused: callers pass it to name the value that `boot` holds.
    """
    # index:    0     1     2   ...  T-1
    # states:  [s0]  [s1]  [s2] ...  s_{T-1}
    # rew/term:       r1    r2  ...  r_{T-1}
    # returns: R0    R1    R2  ...   (R_{T-1} = boot_{T-1} only seeds the recursion)
    del val
    last, term, rew, boot = [tf.cast(x, tf.float32) for x in (last, term, rew, boot)]
    live = (1.0 - term[:, 1:]) * disc      # [B, T-1]
    cont = (1.0 - last[:, 1:]) * lam       # [B, T-1]
    interm = rew[:, 1:] + (1.0 - cont) * live * boot[:, 1:]
    ret = boot[:, -1]
    rets = []
    for t in reversed(range(live.shape[1])):
        ret = interm[:, t] + live[:, t] * cont[:, t] * ret
        rets.append(ret)
    return tf.stack(rets[::-1], axis=1)    # [B, T-1]


def percentile(x, q):
    """The q-th percentile of all entries of x, interpolated linearly as numpy's default."""
    x = tf.sort(tf.reshape(tf.cast(x, tf.float32), [-1]))
    n = tf.cast(tf.size(x), tf.float32)
    pos = q / 100.0 * (n - 1.0)
    lo = tf.cast(tf.floor(pos), tf.int32)
    hi = tf.minimum(lo + 1, tf.size(x) - 1)
    frac = pos - tf.floor(pos)
    return tf.gather(x, lo) * (1.0 - frac) + tf.gather(x, hi) * frac


class ReturnNormalizer(tf.Module):
    """DreamerV3's return scale: max(limit, P95 - P5) of EMAs that start at 0 and are not debiased."""

    def __init__(self, rate=0.01, limit=1.0, perclo=5.0, perchi=95.0, gather=tf.identity, name='retnorm'):
        super().__init__(name=name)
        self.rate, self.limit = float(rate), float(limit)
        self.perclo, self.perchi = float(perclo), float(perchi)
        # Every replica sees the global batch, so the first replica's value stands for all.
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.lo = tf.Variable(0.0, trainable=False, name='lo', aggregation=first)
        self.hi = tf.Variable(0.0, trainable=False, name='hi', aggregation=first)
        self.gather = gather  # x -> the rows of x from every replica (the trainer's all-gather).

    def update(self, ret):
        ret = self.gather(sg(tf.reshape(tf.cast(ret, tf.float32), [-1])))
        for var, q in ((self.lo, self.perclo), (self.hi, self.perchi)):
            var.assign(self.rate * percentile(ret, q) + (1.0 - self.rate) * var)

    def scale(self):
        return sg(tf.maximum(self.limit, self.hi - self.lo))

    def update_and_scale(self, ret):
        self.update(ret)
        return self.scale()


def ema_update(target_vars, source_vars, rate):
    """target <- (1 - rate) * target + rate * source, for matching variable lists."""
    for tgt, src in zip(target_vars, source_vars, strict=True):
        tgt.assign((1.0 - rate) * tgt + rate * tf.cast(src, tgt.dtype))


def cumulative_weight(con, exclusive=False):
    """sg(prod_{k<=t} con_k) (Nature release) or prod_{k<t} (V1/V2, exclusive): [B, H+1] -> [B, H+1]."""
    return sg(tf.math.cumprod(con, axis=1, exclusive=exclusive))


# Keyed noise: row n's numbers are a pure function of key[n] ([N] int64 of 32-bit values), so an update
# is the same function of (weights, batch, keys) however the batch is split, and XLA stays reproducible.

_MASK32 = 0xFFFFFFFF


def _mix32(x):
    """Bijective 32-bit hash (C. Wellons' hash-prospector constants); multipliers < 2^31 stay in int64."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = tf.bitwise.bitwise_and(x * 0x21f0aaad, _MASK32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = tf.bitwise.bitwise_and(x * 0x735a2d97, _MASK32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))


def fold_in(key, data):
    """A new key from `key` and an integer `data` (step index, stream id); broadcasts like +."""
    key = tf.bitwise.bitwise_and(tf.cast(key, tf.int64), _MASK32)
    data = tf.bitwise.bitwise_and(tf.cast(data, tf.int64), _MASK32)
    return _mix32(tf.bitwise.bitwise_xor(_mix32(key), data))


def keyed_uniform(key, shape):
    """Uniform numbers (k + 0.5) / 2^24 in (0, 1), [N, *shape], row n a function of key[n] only."""
    shape = [int(s) for s in shape]
    bits = fold_in(key[:, None], tf.range(math.prod(shape), dtype=tf.int64)[None, :])   # [N, count]
    return tf.reshape(unit_interval(bits), [-1] + shape)


# The largest float32 below 1: (2^24 - 0.5) / 2^24 rounds up to exactly 1.0 in float32.
_BELOW_ONE = 1.0 - 2.0 ** -24


def unit_interval(bits):
    """32-bit values [...] int64 -> float32 (k + 0.5) / 2^24, k = bits >> 8, strictly inside (0, 1).

    The top k would round to 1.0, where a Normal's inverse CDF is inf: one in 2^24 draws, about one
    non-finite update per thousand at DreamerV3's 15 x 1024 imagined actions. It is capped below 1.
    """
    u = (tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) + 0.5) * (2.0 ** -24)
    return tf.minimum(u, _BELOW_ONE)


def scan(fn, elems, init, unroll=1):
    """tf.scan over [T, ...] nests, `unroll` steps per iteration (less loop overhead, XLA fuses steps)."""
    length = tf.nest.flatten(elems)[0].shape[0]
    if length is not None:
        unroll = max((k for k in range(1, min(unroll, length) + 1) if length % k == 0), default=1)
    if length is None or unroll <= 1:
        return tf.scan(fn, elems, init)
    chunks = tf.nest.map_structure(
        lambda x: tf.reshape(x, [length // unroll, unroll, *x.shape[1:]]), elems)

    def body(stacked, chunk):
        carry, outs = tf.nest.map_structure(lambda x: x[-1], stacked), []
        for i in range(unroll):
            carry = fn(carry, tf.nest.map_structure(lambda x: x[i], chunk))   # noqa: B023
            outs.append(carry)
        return tf.nest.map_structure(lambda *xs: tf.stack(xs), *outs)        # [unroll, ...]

    first = tf.nest.map_structure(lambda x: tf.repeat(x[None], unroll, 0), init)
    out = tf.scan(body, chunks, first)                                        # [T / unroll, unroll, ...]
    return tf.nest.map_structure(lambda x: tf.reshape(x, [length, *x.shape[2:]]), out)
