"""Small helpers that several test modules share: float32 constants and naive reference math."""

import numpy as np
import tensorflow as tf


def f32(x):
    return tf.constant(np.asarray(x, np.float32))


def np_log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    m = logits.max(-1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))


def naive_lambda_return(last, term, rew, boot, disc, lam):
    """Backward loop over one batch row at a time, written from the formula (SPEC):

    R_t = r_{t+1} + disc * (1 - term_{t+1}) * ((1 - c_{t+1}) * boot_{t+1} + c_{t+1} * R_{t+1}),
    c = lam * (1 - last), seeded by R_{T-1} = boot_{T-1}. Returns [B, T-1].
    """
    last, term, rew, boot = (np.asarray(a, np.float64) for a in (last, term, rew, boot))
    batch, length = rew.shape
    out = np.zeros((batch, length - 1))
    for b in range(batch):
        nxt = boot[b, length - 1]
        for t in range(length - 2, -1, -1):
            c = lam * (1.0 - last[b, t + 1])
            nxt = rew[b, t + 1] + disc * (1.0 - term[b, t + 1]) * ((1.0 - c) * boot[b, t + 1] + c * nxt)
            out[b, t] = nxt
    return out
