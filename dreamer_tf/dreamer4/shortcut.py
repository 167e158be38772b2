"""Shortcut forcing (Dreamer 4, after shortcut models, Frans et al. 2024): pure tensor functions.

Convention (the paper's): the signal level tau runs from 0 (pure noise) to 1 (clean data) and

    z_tau = (1 - tau) * noise + tau * x,        noise ~ N(0, I)

The network predicts the clean latent x_hat = f(z_tau, tau, d) (x-prediction); the velocity it implies
is v = (x_hat - z_tau) / (1 - tau), and a step of size d moves z_tau to z_{tau + d} = z_tau + d * v.
Step sizes d are powers of two from 1 down to d_min = 1 / K_max; tau lies on the grid of its frame's d,
tau in {0, d, ..., 1 - d}, so a sampler of K = 1/d steps visits exactly the levels it trained on.
Every frame of a sequence has its own (tau, d) (diffusion forcing).

Shapes: latents [B, T, L, Db], per-frame levels [B, T].
"""

import math

import tensorflow as tf

sg = tf.stop_gradient


def _frame(level):
    """[B, T] -> [B, T, 1, 1], to broadcast a per-frame level over a frame's latent tokens."""
    return level[..., None, None]


def corrupt(x, noise, tau):
    """z_tau = (1 - tau) noise + tau x: x, noise [B, T, L, Db], tau [B, T] -> [B, T, L, Db]."""
    tau = _frame(tau)
    return (1.0 - tau) * noise + tau * x


def velocity(x_pred, z, tau):
    """The paper's b (velocity) of an x-prediction: (x_hat - z_tau) / (1 - tau); tau [B, T] must be < 1."""
    return (x_pred - z) / (1.0 - _frame(tau))


def euler_step(z, x_pred, tau, d):
    """z_{tau + d} = z_tau + d * (x_hat - z_tau) / (1 - tau): one sampler step of size d [B, T]."""
    return z + _frame(d) * velocity(x_pred, z, tau)


def sample_step_sizes(shape, k_max, seed):
    """d = 2^-k, k ~ U{0, ..., log2 K_max}: [B, T] float32, each frame its own step size."""
    levels = int(round(math.log2(k_max))) + 1
    k = tf.random.stateless_uniform(shape, seed, maxval=levels, dtype=tf.int32)
    return tf.pow(2.0, -tf.cast(k, tf.float32))


def sample_signal_levels(d, seed):
    """tau ~ U{0, d, 2d, ..., 1 - d}: a uniform grid point of each frame's own step size; d [B, T]."""
    u = tf.random.stateless_uniform(tf.shape(d), seed)
    return tf.floor(u / d) * d  # floor(u * 1/d) is uniform over {0, ..., 1/d - 1}


def bootstrap_target(denoise, z, tau, d):
    """The shortcut target sg(b' + b'') / 2 of a step of size d, composed of two steps of size d / 2:

        b'  = (f(z_tau, tau, d/2) - z_tau) / (1 - tau)
        z'  = z_tau + b' d / 2
        b'' = (f(z', tau + d/2, d/2) - z') / (1 - (tau + d/2))

    `denoise(z, tau, d)` is the network's x-prediction [B, T, L, Db]; z [B, T, L, Db], tau and d [B, T].
    Returns the target velocity [B, T, L, Db], gradient stopped.
    """
    half = d / 2.0
    first = velocity(denoise(z, tau, half), z, tau)
    z_mid = z + _frame(half) * first
    second = velocity(denoise(z_mid, tau + half, half), z_mid, tau + half)
    return sg((first + second) / 2.0)


def ramp_weight(tau):
    """The paper's loss weight w(tau) = 0.9 tau + 0.1: more weight where the frame holds more signal."""
    return 0.9 * tau + 0.1


def shortcut_loss(x_pred, x, z, tau, d, v_target, d_min):
    """Per-frame shortcut forcing loss [B, T] (unweighted; multiply by ramp_weight(tau)):

        d == d_min:  || x_hat - x ||^2                                (flow matching in x-space)
        d >  d_min:  (1 - tau)^2 || (x_hat - z_tau) / (1 - tau) - v_target ||^2   (bootstrap, v-space)

    The (1 - tau)^2 factor brings the velocity error back to the scale of an x-space error. ||.||^2 is
    the mean over the frame's L x Db latent entries. x_pred, x, z, v_target [B, T, L, Db]; tau, d [B, T].
    """
    flow = tf.reduce_mean(tf.square(x_pred - x), [-2, -1])
    boot = tf.reduce_mean(tf.square(velocity(x_pred, z, tau) - v_target), [-2, -1])
    boot = tf.square(1.0 - tau) * boot
    return tf.where(d <= d_min, flow, boot)


def sample(denoise, noise, steps):
    """Generate clean latents from `noise` [B, ...] in `steps` shortcut steps of size d = 1 / steps.

    `denoise(z, tau, d)` takes the noisy frame z [B, ...] and the Python floats tau, d; it returns x_hat
    of z's shape.
    The last step starts at tau = 1 - d, where z + d (x_hat - z) / (1 - tau) is exactly x_hat.
    """
    d = 1.0 / steps
    z = noise
    for i in range(steps):
        tau = i * d
        z = z + d * (denoise(z, tau, d) - z) / (1.0 - tau)
    return z
