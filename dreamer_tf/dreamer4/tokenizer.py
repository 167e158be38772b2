"""Dreamer 4's causal tokenizer: frames [B, T, H, W, C] in [0, 1] <-> latents z [B, T, L, Db] in (-1, 1).

Encoder: patch tokens (masked at random while training) plus L learned latent tokens go through a
space/time transformer (full attention within a frame, causal across frames); the latent tokens' outputs
are projected to Db channels and squashed by tanh: a continuous, bounded bottleneck with no quantisation
and no KL. Decoder: the latents, projected back, plus learned patch queries go through a second such
transformer; the queries' outputs become the patches of the frame. Frames can be encoded and decoded one
by one, because no output of frame t reads a later frame.
"""

import keras
import tensorflow as tf

from dreamer_tf.dreamer4.transformer import Transformer
from dreamer_tf.layers import Linear


def patchify(frames, patch):
    """[B, T, H, W, C] -> [B, T, P, patch*patch*C], P = (H/patch)(W/patch) in row-major patch order."""
    _, length, height, width, channels = frames.shape
    rows, cols = height // patch, width // patch
    x = tf.reshape(frames, [-1, length, rows, patch, cols, patch, channels])
    x = tf.transpose(x, [0, 1, 2, 4, 3, 5, 6])
    return tf.reshape(x, [-1, length, rows * cols, patch * patch * channels])


def unpatchify(patches, patch, height, width):
    """patchify's inverse: [B, T, P, patch*patch*C] -> [B, T, H, W, C]."""
    length, rows, cols = patches.shape[1], height // patch, width // patch
    channels = patches.shape[-1] // (patch * patch)
    x = tf.reshape(patches, [-1, length, rows, cols, patch, patch, channels])
    x = tf.transpose(x, [0, 1, 2, 4, 3, 5, 6])
    return tf.reshape(x, [-1, length, height, width, channels])


def stateless_seed(seed=None):
    """`seed` [2] int32 as given, or (None) a fresh one from TF's global generator: a trainer that passes
    seeds gets repeatable masks and noise, one that does not still gets new ones every call."""
    if seed is None:
        return tf.random.uniform([2], maxval=2 ** 31 - 1, dtype=tf.int32)
    return tf.cast(seed, tf.int32)


def drop_mask(shape, rate, seed):
    """Masked-autoencoding mask: True where a patch is dropped, each with probability `rate` ([B, T, 1] or
    scalar, broadcast against `shape` [B, T, P]). Stateless: one `seed` [2] gives one mask."""
    return tf.random.stateless_uniform(shape, seed) < rate


def mask_patches(tokens, mask, mask_token):
    """Masked tokens replaced by the learned mask token: tokens [B, T, P, D], mask [B, T, P], token [D]."""
    return tf.where(mask[..., None], tf.cast(mask_token, tokens.dtype), tokens)


# TensorFlow's float32 tanh (Eigen's rational approximation) returns exactly 1 from x = 7.91 on; at 7 it
# returns 1 - 1.7e-6, safely below 1 whatever kernel computes it.
BOTTLENECK_CLIP = 7.0


def bottleneck(x):
    """The paper's bottleneck squash z = tanh(x): continuous and bounded, no VQ, no KL.

    Inputs are clipped to [-7, 7] first so that |z| < 1 holds in float32 for every input (tanh's slope
    there is 3e-6, so the clip costs no gradient that matters).
    """
    return tf.tanh(tf.clip_by_value(x, -BOTTLENECK_CLIP, BOTTLENECK_CLIP))


def image_gradients(x):
    """Finite differences of [..., H, W, C] images: (x[h, w+1] - x[h, w], x[h+1, w] - x[h, w])."""
    return x[..., :, 1:, :] - x[..., :, :-1, :], x[..., 1:, :, :] - x[..., :-1, :, :]


def structural_loss(pred, target, scales=3):
    """Perceptual substitute for LPIPS: mean |grad pred - grad target| over `scales` dyadic scales.

    The paper adds an LPIPS term, but LPIPS needs pretrained VGG/AlexNet weights that cannot be fetched
    here (no internet) and that no pip package in this environment ships. Edges are what a pure MSE blurs
    most, so this term compares horizontal and vertical image gradients, L1 to keep them sharp, at full,
    half and quarter resolution (2x2 average pooling) so coarse structure counts as well as fine texture.
    pred, target [B, T, H, W, C] -> scalar.
    """
    total = 0.0
    for scale in range(scales):
        if scale:
            pred, target = (_pool2(x) for x in (pred, target))
        for grad_pred, grad_target in zip(image_gradients(pred), image_gradients(target)):
            total += tf.reduce_mean(tf.abs(grad_pred - grad_target))
    return total / scales


def _pool2(x):
    """2x2 average pooling of [B, T, H, W, C]."""
    shape = x.shape
    x = tf.reshape(x, [-1, shape[1], shape[2] // 2, 2, shape[3] // 2, 2, shape[4]])
    return tf.reduce_mean(x, [3, 5])


class Tokenizer(keras.layers.Layer):
    """Masked-autoencoding causal tokenizer; `loss(frames, seed)` is its whole training objective."""

    def __init__(self, image, channels, patch, latents, bottleneck, dim, layers, heads, temporal_every,
                 mask_max, perceptual, perceptual_scales, **kw):
        super().__init__(**kw)
        self.image, self.channels, self.patch = tuple(image), channels, patch
        self.num_patches = (image[0] // patch) * (image[1] // patch)
        self.mask_max, self.perceptual, self.scales = mask_max, perceptual, perceptual_scales
        patch_dim = patch * patch * channels
        self.embed = Linear(patch_dim, dim, name='embed')
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.patch_pos = self.add_weight((self.num_patches, dim), init, name='patch_pos')
        self.mask_token = self.add_weight((dim,), init, name='mask_token')
        self.latent_tokens = self.add_weight((latents, dim), init, name='latent_tokens')
        self.encoder = Transformer(dim, layers, heads, temporal_every, name='encoder')
        self.to_latent = Linear(dim, bottleneck, name='to_latent')
        self.from_latent = Linear(bottleneck, dim, name='from_latent')
        self.latent_pos = self.add_weight((latents, dim), init, name='latent_pos')
        self.queries = self.add_weight((self.num_patches, dim), init, name='queries')
        self.decoder = Transformer(dim, layers, heads, temporal_every, name='decoder')
        self.to_patch = Linear(dim, patch_dim, name='to_patch')

    def _grid(self, tokens, rows):
        """Prepends `rows` [N, D] (broadcast over B, T) to tokens [B, T, M, D]: [B, T, N + M, D]."""
        rows = tf.cast(rows, tokens.dtype)[None, None]
        rows = tf.tile(rows, [tf.shape(tokens)[0], tokens.shape[1], 1, 1])
        return tf.concat([rows, tokens], 2)

    def encode(self, frames, mask=None):
        """frames [B, T, H, W, C] (float in [0, 1]), mask [B, T, P] or None -> z [B, T, L, Db] in (-1, 1)."""
        tokens = self.embed(patchify(tf.cast(frames, tf.float32), self.patch))     # [B, T, P, D]
        if mask is not None:
            tokens = mask_patches(tokens, mask, self.mask_token)
        tokens = tokens + self.patch_pos                                           # position after mask
        x = self.encoder(self._grid(tokens, self.latent_tokens))                   # [B, T, L + P, D]
        return bottleneck(self.to_latent(x[:, :, :self.latent_tokens.shape[0]]))

    def decode(self, z):
        """z [B, T, L, Db] -> frames [B, T, H, W, C]; the patches come from the queries' outputs."""
        latent = self.from_latent(z) + self.latent_pos
        x = self.decoder(self._grid(latent, self.queries))                         # [B, T, P + L, D]
        patches = self.to_patch(x[:, :, :self.num_patches])
        return unpatchify(patches, self.patch, *self.image)

    def loss(self, frames, seed=None):
        """MSE + perceptual * structural of the reconstruction of masked frames.

        Each frame drops its patches with its own rate ~ U(0, mask_max) (the paper: up to 0.9), so the
        tokenizer also learns to encode frames seen in full. frames [B, T, H, W, C] -> (scalar, metrics).
        """
        frames = tf.cast(frames, tf.float32)
        rate_seed, mask_seed = tf.unstack(tf.random.experimental.stateless_split(stateless_seed(seed), 2))
        shape = [tf.shape(frames)[0], frames.shape[1]]
        rate = tf.random.stateless_uniform([*shape, 1], rate_seed, maxval=self.mask_max)
        mask = drop_mask([*shape, self.num_patches], rate, mask_seed)
        recon = self.decode(self.encode(frames, mask))
        mse = tf.reduce_mean(tf.square(recon - frames))
        structure = structural_loss(recon, frames, self.scales)
        loss = mse + self.perceptual * structure
        masked = tf.reduce_mean(tf.cast(mask, tf.float32))
        return loss, {'mse': mse, 'structural': structure, 'masked': masked}
