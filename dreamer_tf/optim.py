"""DreamerV3's optimiser (adaptive gradient clipping, then LaProp, with warm-up) and V1/V2's Adam.

LaProp for each variable p with gradient g at update t = 1, 2, ... (Nature release order):

    g  <- g / max(1, ||g|| / (agc * max(pmin, ||p||)))
    nu <- beta2 * nu + (1 - beta2) * g^2
    mu <- beta1 * mu + (1 - beta1) * g / (sqrt(nu / (1 - beta2^t)) + eps)
    p  <- p - lr * min(1, (t - 1) / warmup) * mu / (1 - beta1^t)
"""

import tensorflow as tf


def zero_slots(params, name):
    """One float32 zero variable shaped like each parameter: an optimiser's moment estimates."""
    return [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False, name=name) for v in params]


def agc_clip(grad, param, clip, pmin):
    """Scale `grad` so its norm is at most clip * max(pmin, ||param||)."""
    gnorm = tf.norm(tf.reshape(grad, [-1]))
    pnorm = tf.norm(tf.reshape(param, [-1]))
    upper = clip * tf.maximum(pmin, pnorm)
    return grad / tf.maximum(1.0, gnorm / upper)


def _check_count(grads, params):
    if len(grads) != len(params):
        raise ValueError(f'{len(grads)} gradients for {len(params)} variables')


class LaProp(tf.Module):
    """The optimiser of every V3 variable, its state created up front."""

    metric_names = ('grad_norm', 'grad_norm_clipped', 'lr')  # NaN when an update is skipped.

    def __init__(self, variables, lr, agc, pmin, beta1, beta2, eps, warmup, name='opt'):
        super().__init__(name=name)
        self.params = list(variables)
        self.lr, self.agc, self.pmin = float(lr), float(agc), float(pmin)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.warmup = int(warmup)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
        with tf.name_scope(name):
            self.mu, self.nu = zero_slots(self.params, 'mu'), zero_slots(self.params, 'nu')

    def learning_rate(self, step):
        """The learning rate of the update made after `step` updates."""
        if self.warmup <= 0:
            return tf.constant(self.lr)
        frac = tf.minimum(1.0, tf.cast(step, tf.float32) / float(self.warmup))
        return self.lr * frac

    def apply(self, grads):
        _check_count(grads, self.params)
        lr = self.learning_rate(self.step)
        self.step.assign_add(1)
        t = tf.cast(self.step, tf.float32)
        corr1 = 1.0 - self.beta1 ** t
        corr2 = 1.0 - self.beta2 ** t
        clipped = []
        for var, grad, mu, nu in zip(self.params, grads, self.mu, self.nu):
            grad = tf.cast(grad, tf.float32)
            grad = agc_clip(grad, var, self.agc, self.pmin) if self.agc else grad
            clipped.append(grad)
            nu.assign(self.beta2 * nu + (1.0 - self.beta2) * tf.square(grad))
            update = grad / (tf.sqrt(nu / corr2) + self.eps)
            mu.assign(self.beta1 * mu + (1.0 - self.beta1) * update)
            var.assign_sub(tf.cast(lr * mu / corr1, var.dtype))
        return {'grad_norm': tf.linalg.global_norm([tf.cast(g, tf.float32) for g in grads]),
                'grad_norm_clipped': tf.linalg.global_norm(clipped), 'lr': lr}


class DynamicLossScale(tf.Module):
    """float16 loss scaling: halve (not below 1) on a non-finite update, double after `period` finite ones."""

    def __init__(self, initial=2.0 ** 15, period=2000, name='loss_scale'):
        super().__init__(name=name)
        self.period = int(period)
        self.scale = tf.Variable(float(initial), trainable=False, name='scale')
        self.finite_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name='finite_steps')

    def update(self, finite):
        grow = finite & (self.finite_steps + 1 >= self.period)
        new_scale = tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale),
                             tf.maximum(1.0, self.scale / 2.0))
        self.finite_steps.assign(tf.where(finite & ~grow, self.finite_steps + 1, 0))
        self.scale.assign(new_scale)


class Adam(tf.Module):
    """The V1/V2 (and 2023 V3) optimiser of one module, as TensorFlow writes Adam, for t = 1, 2, ...:

        g <- g * min(1, clip / ||g||_global)           (clip 0: no clipping)
        p <- p * (1 - wd)                                (every variable, before the step)
        m <- beta1 * m + (1 - beta1) * g;  v <- beta2 * v + (1 - beta2) * g^2
        p <- p - lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)
    """

    metric_names = ('grad_norm', 'lr')

    def __init__(self, variables, lr, eps=1e-7, clip=0.0, wd=0.0, beta1=0.9, beta2=0.999,
                 name='adam'):
        super().__init__(name=name)
        self.params = list(variables)
        self.lr, self.eps, self.clip, self.wd = float(lr), float(eps), float(clip), float(wd)
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
        with tf.name_scope(name):
            self.m, self.v = zero_slots(self.params, 'm'), zero_slots(self.params, 'v')

    def apply(self, grads):
        _check_count(grads, self.params)
        grads = [tf.cast(g, tf.float32) for g in grads]
        norm = tf.linalg.global_norm(grads)
        if self.clip:
            grads, _ = tf.clip_by_global_norm(grads, self.clip, norm)
        self.step.assign_add(1)
        t = tf.cast(self.step, tf.float32)
        alpha = self.lr * tf.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        for var, grad, m, v in zip(self.params, grads, self.m, self.v):
            if self.wd:
                var.assign(var * (1.0 - self.wd))
            m.assign(self.beta1 * m + (1.0 - self.beta1) * grad)
            v.assign(self.beta2 * v + (1.0 - self.beta2) * tf.square(grad))
            var.assign_sub(tf.cast(alpha * m / (tf.sqrt(v) + self.eps), var.dtype))
        return {'grad_norm': norm, 'lr': tf.constant(self.lr)}


class ModuleOptimizers(tf.Module):
    """One optimiser per module (V1, V2, V3 2023: model, actor, critic; V3 with run.actor_after: a LaProp
    each), seen as one optimiser.

    `groups` maps a name to (variables, optimiser); `apply` slices the gradients of `params` (the
    groups' variables in order) per optimiser and names the metrics `<group>/<metric>`.
    """

    def __init__(self, groups, start=None, name='opt'):
        super().__init__(name=name)
        self.groups = dict(groups)
        # group -> the update from which its optimiser steps; before it the group's weights, moments
        # and step count stay as they are (run.actor_after).
        self.start = {group: int(n) for group, n in (start or {}).items() if n}
        self.params = [v for variables, _ in self.groups.values() for v in variables]
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
        self.metric_names = tuple(f'{group}/{metric}' for group, (_, opt) in self.groups.items()
                                  for metric in opt.metric_names)

    def apply(self, grads):
        _check_count(grads, self.params)
        metrics, start = {}, 0
        for group, (variables, opt) in self.groups.items():
            part = grads[start:start + len(variables)]
            start += len(variables)
            metrics.update({f'{group}/{k}': v for k, v in self._apply(group, opt, part).items()})
        self.step.assign_add(1)
        return metrics

    def _apply(self, group, opt, grads):
        """opt.apply(grads), or from the group's start on only (the metrics of a held update: its
        gradient norm, and 0 for the others, learning rate and LaProp's clipped norm: nothing applied)."""
        if group not in self.start:
            return opt.apply(grads)

        def hold():
            norm = tf.linalg.global_norm([tf.cast(g, tf.float32) for g in grads])
            return {k: norm if k == 'grad_norm' else tf.constant(0.0) for k in opt.metric_names}

        return tf.cond(self.step >= self.start[group], lambda: opt.apply(grads), hold)
