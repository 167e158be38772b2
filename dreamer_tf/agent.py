"""Dreamer agent of every version: world model + actor-critic + optimisers. Pure math, no devices.

DreamerV3 (Nature) trains everything with one LaProp on the summed loss. DreamerV1, V2 and the 2023
DreamerV3 give model, actor and critic their own Adam, each differentiating only its own loss, so the
actor's dynamics-backprop gradient moves the actor alone.
"""

import functools

import tensorflow as tf

from dreamer_tf import nets, ops
from dreamer_tf.behavior import ActorCritic
from dreamer_tf.optim import Adam, LaProp, ModuleOptimizers
from dreamer_tf.world_model import WorldModel, drop_context

sg = tf.stop_gradient
# Which module's optimiser trains on each behaviour loss (world-model losses all go to 'model').
LOSS_GROUPS = {'actor': 'actor', 'critic': 'critic', 'replay_critic': 'critic'}
# 'explore' samples the actor, 'eval' takes its mode; 'train' is the trainer's name for 'explore'.
POLICY_MODES = ('eval', 'explore', 'train')


class Unscaled:
    """The loss scaling that leaves loss and gradients as they are; every non-finite update is a skip."""

    def scale_loss(self, loss):
        return loss

    def unscale(self, grads):
        return grads

    def skipped(self, finite):
        return 1.0 - tf.cast(finite, tf.float32), {}


class Agent(tf.Module):
    """`loss_scale` scales the loss before differentiating (scale_loss, unscale, skipped); `gather`
    collects a tensor's rows over the whole batch for the return percentiles. The trainer's framework
    supplies both."""

    def __init__(self, config, obs_space, act_space, loss_scale=None, gather=tf.identity, name='agent'):
        super().__init__(name=name)
        self.config = config
        self.obs_space, self.act_space = dict(obs_space), act_space
        self.wm = WorldModel(config, obs_space, act_space.size, name='wm')
        self.ac = ActorCritic(config, self.wm.rssm.feat_dim, act_space, gather=gather, name='ac')
        self.var_groups = {'model': self.wm.trainable_variables,
                           'actor': self.ac.actor.trainable_variables,
                           'critic': self.ac.critic.trainable_variables}
        self.train_vars = [v for group in self.var_groups.values() for v in group]
        self.per_module = config.opt.per_module
        self.opt = self._optimizer(config.opt)
        self.loss_scale = Unscaled() if loss_scale is None else loss_scale
        # Keras 3 layers in Python lists are invisible to tf.train.Checkpoint: track each weight here.
        layers = {'wm': self.wm, 'actor': self.ac.actor, 'critic': self.ac.critic,
                  'slow_critic': self.ac.slow_critic}
        self.weights_by_path = {}
        for name, layer in layers.items():
            named = nets.named_weights(layer, name + '/')
            if len(named) != len(layer.weights):
                raise ValueError(f'{name}: {len(layer.weights)} weights but {len(named)} named')
            self.weights_by_path.update(named)

    def _optimizer(self, opt):
        """One Adam per module, or one LaProp over every variable (one per module with run.actor_after)."""
        start = {'actor': self.config.run.actor_after}
        if opt.per_module:
            return ModuleOptimizers({name: (variables, Adam(variables, **opt[name], name=name))
                                     for name, variables in self.var_groups.items()}, start=start)
        if self.ac.rho < 1.0:
            raise ValueError('dynamics-backprop actor gradients (behavior.actor_grad_* < 1) need '
                             'per-module optimisers (opt.per_module: true)')
        laprop = functools.partial(LaProp, lr=opt.lr, agc=opt.agc, pmin=opt.pmin, beta1=opt.beta1,
                                   beta2=opt.beta2, eps=opt.eps, warmup=opt.warmup)
        if not start['actor']:
            return laprop(self.train_vars)
        # LaProp is per variable, so one per module updates model and critic as the single one does; the
        # actor's is held as the Adams are: no step, moment or step count (bias correction, warm-up) moves.
        return ModuleOptimizers({name: (variables, laprop(variables, name=name))
                                 for name, variables in self.var_groups.items()}, start=start)

    # -- acting -------------------------------------------------------------------------------

    def initial_state(self, batch_size):
        """Policy carry: the latent state and the previous action of each environment."""
        return dict(latent=self.wm.rssm.initial(batch_size),
                    action=tf.zeros([batch_size, self.act_space.size]))

    def policy(self, obs, state, mode='explore'):
        """One acting step of N envs: obs [N, ...] with `is_first` [N] -> (action [N, A], state).

        'explore' (alias 'train') samples the actor, 'eval' takes its mode.
        """
        if mode not in POLICY_MODES:
            raise ValueError(f"policy mode '{mode}' is not one of {list(POLICY_MODES)}")
        embed = self.wm.encoder(obs)
        latent, _ = self.wm.rssm.obs_step(state['latent'], state['action'], embed, obs['is_first'])
        dist = self.ac.actor(self.wm.rssm.get_feat(latent))
        action = dist.mode() if mode == 'eval' else dist.sample()
        if mode != 'eval':
            action = self._explore(action)
        if not self.act_space.discrete:
            action = tf.clip_by_value(action, -1.0, 1.0)
        action = sg(action)
        return action, dict(latent=latent, action=action)

    def _explore(self, action):
        """DreamerV1's exploration: Gaussian noise of std `behavior.expl_noise` added to continuous
        actions, or a uniformly random action with that probability for discrete ones (V2)."""
        amount = self.config.behavior.expl_noise
        if not amount:
            return action
        if not self.act_space.discrete:
            return action + amount * tf.random.normal(tf.shape(action))
        n = tf.shape(action)[0]
        random = tf.one_hot(tf.random.uniform([n], 0, self.act_space.size, tf.int32), self.act_space.size)
        return tf.where(tf.random.uniform([n, 1]) < amount, random, action)

    # -- learning -----------------------------------------------------------------------------

    def loss(self, data):
        """(total loss, metrics) of one replayed batch; see `loss_terms`."""
        total, metrics, _ = self.loss_terms(data)
        return total, metrics

    def loss_terms(self, data):
        """Total loss of one replayed batch (the scaled means of every loss term), its metrics, and
        the total of each optimiser group ('model', 'actor', 'critic').

        data: [B, T, ...] steps, optionally with 'key' [B] int64: per-sequence keys from which the
        latent and action samples draw (ops.keyed_uniform), making the update a pure function of
        weights and batch however the batch is split. Without keys the noise is stateful.
        """
        data = dict(data)
        key = data.pop('key', None)
        wm_key, ac_key = (None, None) if key is None else (ops.fold_in(key, 1), ops.fold_in(key, 2))
        wm_losses, post, metrics = self.wm.loss(data, key=wm_key)
        rest = drop_context(data, self.config.replay_context)        # post covers these steps only
        ac_losses, ac_metrics = self.ac.loss(self.wm, post, rest, key=ac_key)
        metrics.update(ac_metrics)
        groups = {name: 0.0 for name in self.var_groups}
        scales = self.config.loss
        for name, value in {**wm_losses, **ac_losses}.items():
            mean = tf.reduce_mean(value)
            scale = self.wm.loss_scale(name) if name in wm_losses else scales[name]
            group = 'model' if name in wm_losses else LOSS_GROUPS[name]
            groups[group] += scale * mean
            metrics[f'loss/{name}'] = mean
        total = sum(groups.values())
        metrics['loss/total'] = total
        return total, metrics, groups

    def compute_gradients(self, data):
        """Gradients of every train variable: of the total loss (one optimiser), or of each module's
        own loss w.r.t. that module's variables (per-module optimisers)."""
        with tf.GradientTape(persistent=self.per_module) as tape:
            total, metrics, groups = self.loss_terms(data)
            targets = {name: self.loss_scale.scale_loss(loss) for name, loss in groups.items()}
            total_scaled = self.loss_scale.scale_loss(total)
        if self.per_module:
            grads = [g for name, variables in self.var_groups.items()
                     for g in tape.gradient(targets[name], variables)]
            del tape
        else:
            grads = tape.gradient(total_scaled, self.train_vars)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, self.train_vars)]
        return self.loss_scale.unscale(grads), metrics

    def apply_gradients(self, grads):
        metrics = self.opt.apply(grads)
        self.ac.update_slow_critic(self.opt.step)
        return metrics

    @property
    def loss_state(self):
        """Variables that the loss moves by itself (the return normaliser's EMAs, V3 only)."""
        return list(self.ac.retnorm.variables) if self.ac.retnorm else []

    def train_step(self, data, run=None):
        """One update, skipped when the loss or the global gradient norm is not finite.

        A skipped update leaves every variable as it was, the return normaliser that the loss itself
        moves included, and reports `skipped` 1.0. `run(fn, data)` runs the gradient half (the
        trainer's data-parallel one averages it over batch slices); by default it is called in place.
        """
        before = [tf.identity(v) for v in self.loss_state]
        grads, metrics = run(self.compute_gradients, data) if run else self.compute_gradients(data)
        return self.apply_if_finite(grads, metrics, before)

    def apply_if_finite(self, grads, metrics, before):
        """Apply `grads` unless they or the loss are not finite; then restore `loss_state` to `before`."""
        metrics = dict(metrics)
        finite = tf.math.is_finite(metrics['loss/total']) & tf.math.is_finite(tf.linalg.global_norm(grads))

        def skip():
            for var, value in zip(self.loss_state, before):
                var.assign(value)
            return {name: tf.constant(float('nan')) for name in self.opt.metric_names}

        metrics.update(tf.cond(finite, lambda: self.apply_gradients(grads), skip))
        skipped, scale_metrics = self.loss_scale.skipped(finite)
        metrics.update(scale_metrics)
        metrics['skipped'] = skipped
        return metrics

    def summary(self):
        parts = {'encoder': self.wm.encoder, 'rssm': self.wm.rssm, 'decoder': self.wm.decoder,
                 'reward': self.wm.reward, 'cont': self.wm.cont, 'actor': self.ac.actor,
                 'critic': self.ac.critic}
        counts = {k: nets.count_params(v) for k, v in parts.items() if v is not None}   # V1: no cont
        counts['total'] = sum(counts.values())
        return counts
