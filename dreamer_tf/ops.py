"""Pure tensor functions shared by every Dreamer version.

Convention for the whole library: tensors are **batch-major**, `[B, T, ...]`. A time step `t` holds the
observation x_t, the action a_{t-1} that led to it (zeros when is_first), the reward r_t received on
arriving there, and the flags is_first_t / is_last_t / is_terminal_t. Rewards and continues are
predicted for the state they arrive in.

Everything here is float32 and has no trainable state (except the normaliser, whose state is a pair of
tf.Variables so it can be checkpointed).
"""

import tensorflow as tf

sg = tf.stop_gradient


@tf.custom_gradient
def symlog(x):
    """sign(x) * ln(1 + |x|): compresses large magnitudes, identity-like near zero.

    The gradient 1 / (1 + |x|) is written out because autodiff through sign() gives 0 at x = 0.
    """
    def grad(upstream):
        return upstream / (1.0 + tf.abs(x))
    return tf.sign(x) * tf.math.log1p(tf.abs(x)), grad


@tf.custom_gradient
def symexp(x):
    """Inverse of symlog: sign(x) * (exp(|x|) - 1), with gradient exp(|x|) (1 at x = 0)."""
    def grad(upstream):
        return upstream * tf.exp(tf.abs(x))
    return tf.sign(x) * tf.math.expm1(tf.abs(x)), grad


def lambda_return(last, term, rew, val, boot, disc, lam):
    """TD(lambda) returns, computed backwards over time, batch-major [B, T] inputs -> [B, T-1].

    R_t = r_{t+1} + disc * (1 - term_{t+1}) * [(1 - c_{t+1}) * boot_{t+1} + c_{t+1} * R_{t+1}],
    with c_{t+1} = lam * (1 - last_{t+1}) and the recursion seeded by R_{T-1} = boot_{T-1}.

    `last` cuts the recursion at an episode boundary inside a replayed sequence (the return then
    bootstraps fully on `boot`); `term` zeroes the value of everything after a terminal state.
    `val` is accepted for symmetry with the callers but the bootstrap targets come from `boot`
    (imagination passes the same tensor for both).

        index:    0     1     2   ...  T-1
        states:  [s0]  [s1]  [s2] ...  s_{T-1}
        rew/term:       r1    r2  ...  r_{T-1}     (arrive with the state they belong to)
        returns: R0    R1    R2  ...   (T-1 returns; R_{T-1} = boot only seeds the recursion)
    """
    del val  # Kept in the signature: the callers document which value seeds the targets.
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
    """The q-th percentile of all entries of x, linear interpolation (numpy's default)."""
    x = tf.sort(tf.reshape(tf.cast(x, tf.float32), [-1]))
    n = tf.cast(tf.size(x), tf.float32)
    pos = q / 100.0 * (n - 1.0)
    lo = tf.cast(tf.floor(pos), tf.int32)
    hi = tf.minimum(lo + 1, tf.size(x) - 1)
    frac = pos - tf.floor(pos)
    return tf.gather(x, lo) * (1.0 - frac) + tf.gather(x, hi) * frac


class ReturnNormalizer(tf.Module):
    """DreamerV3's return scale: EMA of the 5th and 95th return percentiles.

    Both EMAs start at 0 and are not debiased (Nature release). `update_and_scale` first moves the
    EMAs towards the percentiles of the batch, then returns max(limit, P95 - P5), so the very first
    update already sees a scale of at least `limit`. `decay` is the 2023 preset's name for 1 - rate.
    """

    def __init__(self, rate=0.01, limit=1.0, perclo=5.0, perchi=95.0, name='retnorm'):
        super().__init__(name=name)
        self.rate, self.limit = float(rate), float(limit)
        self.perclo, self.perchi = float(perclo), float(perchi)
        # The percentiles are taken over the whole (global) batch, so every data-parallel replica
        # computes the same new value and the first replica's copy can stand for all of them.
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.lo = tf.Variable(0.0, trainable=False, name='lo', aggregation=first)
        self.hi = tf.Variable(0.0, trainable=False, name='hi', aggregation=first)
        # gather(x) -> the rows of x from every replica. The identity on one device; a data-parallel
        # trainer replaces it with an all-gather so the percentiles see the global batch.
        self.gather = tf.identity

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
    """Stop-gradient cumulative product of imagined continues over time: [B, H+1] -> [B, H+1].

    Nature release (inclusive): the first imagined state (the posterior start) already carries its
    own continue, weight_t = prod_{k<=t} con_k. DreamerV1/V2 (exclusive): weight_t = prod_{k<t} con_k,
    so the start has weight 1.
    """
    return sg(tf.math.cumprod(con, axis=1, exclusive=exclusive))


# -- keyed random numbers ------------------------------------------------------------------------
#
# The training loss draws its noise (latent samples, imagined actions) from per-sequence integer keys
# that travel with the replayed batch, instead of from a stateful generator. Row n's numbers are a
# pure function of key[n] and the element index, so an update is the same function of (weights,
# batch, keys) however the batch is split across devices, and XLA (which ignores op seeds) stays
# reproducible. Keys are int64 tensors holding 32-bit values.

_MASK32 = 0xFFFFFFFF


def _mix32(x):
    """Bijective 32-bit integer hash: xor-shift / odd-multiply rounds (constants 0x21f0aaad and
    0x735a2d97 from C. Wellons' hash-prospector search). int64 in and out, values in [0, 2^32);
    both multipliers are below 2^31, so no product leaves int64."""
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
    """Uniform numbers in (0, 1), [N, *shape], row n a pure function of key[n] ([N] int64).

    Each element hashes (key, flat index); the top 24 bits become a float32 (k + 0.5) / 2^24, so 0
    and 1 never occur and inverse CDFs stay finite.
    """
    shape = [int(s) for s in shape]
    count = 1
    for size in shape:
        count *= size
    bits = fold_in(key[:, None], tf.range(count, dtype=tf.int64)[None, :])       # [N, count]
    u = (tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) + 0.5) * (2.0 ** -24)
    return tf.reshape(u, [-1] + shape)


def scan(fn, elems, init, unroll=1):
    """tf.scan(fn, elems, init) whose loop body runs `unroll` steps in a row: same outputs.

    elems: nest of [T, ...] tensors; returns the nest of every carry, [T, ...]. A loop iteration
    costs a fixed overhead (the loop's control and its per-output buffers) that dwarfs small steps,
    and a longer body lets XLA fuse across steps. `unroll` is rounded down to a divisor of T;
    T // unroll iterations remain, so a large graph is never built.
    """
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
