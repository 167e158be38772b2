"""Dreamer 4's factorised space/time transformer over [B, T, N, D] token grids (T steps of N tokens).

Layers are spatial (every token of a step attends to the tokens of the same step) or temporal (token n of
step t attends to token n of steps <= t). A temporal layer comes every `temporal_every` layers, as in the
paper's efficient transformer, so most of the compute is spatial. Blocks are pre-norm (RMSNorm) with
QK-norm, rotary time positions in the temporal layers and a SwiGLU MLP.

Nothing of step t ever reads a step s > t: spatial layers never mix steps and temporal layers are causal,
so a model built from these layers can encode, decode or generate one frame after the other.
"""

import keras
import numpy as np
import tensorflow as tf

from dreamer_tf.layers import Linear, Norm

NEG_INF = -1e9  # exp() of this underflows to exactly 0 in float32, so masked keys add exact zeros


def causal_mask(length):
    """Temporal mask M[t, s] = (s <= t): [T, T] bool. A step reads itself and earlier steps only."""
    steps = tf.range(length)
    return steps[None, :] <= steps[:, None]


def spatial_mask(tokens, hidden=0):
    """Within-step mask M[n, m]: [N, N] bool; the last `hidden` tokens (agent tokens) are read by none but
    themselves and each other, so adding them leaves every other output of the world model unchanged."""
    index = tf.range(tokens)
    reader_hidden = index[:, None] >= tokens - hidden
    return tf.logical_or(reader_hidden, index[None, :] < tokens - hidden)


def block_causal_mask(length, tokens, hidden=0):
    """The flat [T*N, T*N] mask that the spatial and temporal masks factorise: token (t, n) may depend on
    token (s, m) only if s <= t (block-causal in time), and never on a hidden token unless it is one."""
    time = tf.repeat(tf.range(length), tokens)           # [T*N], step of each flat token
    space = tf.tile(spatial_mask(tokens, hidden), [length, length])
    return tf.logical_and(time[None, :] <= time[:, None], space)


def rotary(x, positions):
    """Rotary position embedding on the last axis: pairs (x1, x2) rotate by angle pos * 10000^(-i/half).

    x [..., L, H, Dh], positions [L] -> same shape; attention logits then depend on s - t only.
    """
    half = x.shape[-1] // 2
    freq = tf.constant(10000.0 ** (-np.arange(half) / half), x.dtype)
    angle = tf.cast(positions, x.dtype)[:, None] * freq[None]       # [L, Dh/2]
    cos, sin = tf.cos(angle)[:, None], tf.sin(angle)[:, None]        # [L, 1, Dh/2]
    x1, x2 = x[..., :half], x[..., half:]
    return tf.concat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


class Attention(keras.layers.Layer):
    """Multi-head self-attention over the second-to-last token axis with a boolean mask [L, L]."""

    def __init__(self, dim, heads, **kw):
        super().__init__(**kw)
        if dim % heads:
            raise ValueError(f'attention width {dim} is not divisible by {heads} heads')
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = Linear(dim, 3 * dim, bias=False, name='qkv')
        self.qnorm = Norm(self.head_dim, name='qnorm')   # QK-norm keeps logits bounded (paper)
        self.knorm = Norm(self.head_dim, name='knorm')
        self.out = Linear(dim, dim, name='out')

    def call(self, x, mask, positions=None):
        """x [M, L, D], mask [L, L] -> [M, L, D]; `positions` [L] turn on rotary embeddings."""
        q, k, v = tf.split(self.qkv(x), 3, -1)
        shape = [-1, x.shape[1], self.heads, self.head_dim]
        q, k, v = (tf.reshape(y, shape) for y in (q, k, v))             # [M, L, H, Dh]
        q, k = self.qnorm(q), self.knorm(k)
        if positions is not None:
            q, k = rotary(q, positions), rotary(k, positions)
        logits = tf.einsum('mlhd,mshd->mhls', q, k) / np.sqrt(self.head_dim).astype(np.float32)
        logits = tf.where(mask, logits, tf.cast(NEG_INF, logits.dtype))  # [M, H, L, L]
        out = tf.einsum('mhls,mshd->mlhd', tf.nn.softmax(logits, -1), v)
        return self.out(tf.reshape(out, [-1, x.shape[1], self.heads * self.head_dim]))


class Block(keras.layers.Layer):
    """Pre-norm block: x + attn(norm(x)), then x + SwiGLU(norm(x)); `temporal` picks the attention axis."""

    def __init__(self, dim, heads, temporal, mlp_mult=2, **kw):
        super().__init__(**kw)
        self.temporal = temporal
        self.norm1, self.norm2 = Norm(dim, name='norm1'), Norm(dim, name='norm2')
        self.attn = Attention(dim, heads, name='attn')
        self.up = Linear(dim, 2 * mlp_mult * dim, name='up')
        self.down = Linear(mlp_mult * dim, dim, name='down')

    def call(self, x, hidden=0):
        """x [B, T, N, D] -> [B, T, N, D]; `hidden` trailing tokens of each step are agent tokens."""
        batch, length, tokens, dim = (tf.shape(x)[0], x.shape[1], x.shape[2], x.shape[3])
        y = self.norm1(x)
        if self.temporal:
            y = tf.reshape(tf.transpose(y, [0, 2, 1, 3]), [-1, length, dim])       # [B*N, T, D]
            y = self.attn(y, causal_mask(length), tf.range(length))
            y = tf.transpose(tf.reshape(y, [batch, tokens, length, dim]), [0, 2, 1, 3])
        else:
            y = tf.reshape(y, [-1, tokens, dim])                                    # [B*T, N, D]
            y = tf.reshape(self.attn(y, spatial_mask(tokens, hidden)), [batch, length, tokens, dim])
        x = x + y
        gate, value = tf.split(self.up(self.norm2(x)), 2, -1)
        return x + self.down(tf.nn.silu(gate) * value)


def is_temporal(index, temporal_every):
    """Layer `index` (from 0) attends across time iff (index + 1) % temporal_every == 0."""
    return (index + 1) % temporal_every == 0


class Transformer(keras.layers.Layer):
    """`layers` blocks, temporal every `temporal_every`-th, and a final RMSNorm: [B, T, N, D] -> same."""

    def __init__(self, dim, layers, heads, temporal_every, mlp_mult=2, **kw):
        super().__init__(**kw)
        if not any(is_temporal(i, temporal_every) for i in range(layers)):
            raise ValueError(f'{layers} layers with temporal_every={temporal_every} never attend across time')
        self.blocks = [Block(dim, heads, is_temporal(i, temporal_every), mlp_mult, name=f'block{i}')
                       for i in range(layers)]
        self.norm = Norm(dim, name='norm')

    def call(self, x, hidden=0):
        for block in self.blocks:
            x = block(x, hidden=hidden)
        return self.norm(x)
