"""Actor-critic learned in imagination, for every version.

The losses are pure functions of tensors so they can be tested against naive loops; the
`ActorCritic` layer only builds the networks and wires the tensors into them. What differs between
versions is config:

| | V1 | V2 | V3 (Nature) |
|---|---|---|---|
| actor gradient rho (1: REINFORCE, 0: dynamics backprop) | 0 | 1 Atari, 0 DMC | 1 |
| returns bootstrap on | online critic | slow critic (copied every 100) | online critic |
| return scale | 1 | 1 | percentile EMA (`retnorm`) |
| critic distribution | Normal(mean, 1) | Normal(mean, 1) | two-hot |
| weight of imagined step t | prod_{k<t} discount_k | same | prod_{k<=t} con_k |
| value of s_t counts (`return_form`) | r_t onwards: current | current | r_{t+1} onwards: next |
| discount of the start (`first_discount`) | gamma: model | replay terminal flag: replay | model |
| critic trains on the start (`critic_start`) | no | yes | yes |
"""

import keras
import tensorflow as tf

from dreamer_tf import dists, nets, ops
from dreamer_tf.rssm import flatten_time
from dreamer_tf.world_model import discount_factor

sg = tf.stop_gradient


def actor_loss(logpi, ent, ret, val, weight, scale, actent, rho=1.0):
    """REINFORCE, dynamics backprop or a mix of both, with entropy bonus: [N, H+1] inputs -> [N, H].

        imagined states:  [s0]  [s1] ... [s_{H-1}]  s_H
        ret (R_t):         R0    R1  ...  R_{H-1}         (H returns)
        val / logpi / ent / weight are sliced [:, :-1] to align with the returns.

    loss_t = -w_t * (rho * log pi(a_t | s_t) * sg((R_t - v_t) / S)      REINFORCE (V2 Atari, V3)
                     + (1 - rho) * R_t / S                               dynamics backprop (V1, V2 DMC)
                     + actent * H[pi(. | s_t)])

    The dynamics term has no stop-gradient: its gradient reaches the actor through the imagined
    rewards, values and states, so `ret` must be computed from differentiable imagined actions.
    `val` is the baseline (stop-gradient); it does not change the dynamics term's gradient.
    """
    objective = actent * ent[:, :-1]
    if rho:
        objective += rho * logpi[:, :-1] * sg((ret - val[:, :-1]) / scale)    # [N, H]
    if rho != 1.0:
        objective += (1.0 - rho) * ret / scale
    return -sg(weight[:, :-1]) * objective


def critic_loss(critic_logp, slow_logp, weight, slowreg):
    """Two-hot NLL towards the returns plus a regulariser towards the slow critic, [N, H].

    critic_logp: log p_critic(sg(R_t)) for t < H (the last state has no return and is dropped),
    slow_logp: log p_critic(sg(slow critic mean at s_t)); both [N, H+1] with a padded last column.

        states:      [s0] [s1] ... [s_{H-1}]  s_H
        targets:      R0   R1  ...  R_{H-1}   (pad)
    """
    return -sg(weight[:, :-1]) * (critic_logp[:, :-1] + slowreg * slow_logp[:, :-1])


def current_returns(rew, con, boot, lam):
    """Lambda-returns of the V1/V2 papers, where the value of s_t counts s_t's own reward: [N, H+1] -> [N, H].

        states:    [s0]  [s1] ... [s_{H-1}]   s_H
        rew / con: [r0]  [r1] ... [r_{H-1}]          con_t = gamma * P(s_t continues)
        boot:             [v1] ... [v_{H-1}]  [v_H]
        returns:    t0    t1  ...  t_{H-1}           t_t = r_t + con_t ((1 - lam) v_{t+1} + lam t_{t+1})

    with t_H = v_H. It is ops.lambda_return (whose R_t starts at r_{t+1}) fed rewards and continues
    shifted one step later, so R_t reads r_t and con_t; their first column is never read.
    """
    later = lambda x: tf.concat([tf.zeros_like(x[:, :1]), x[:, :-1]], 1)  # noqa: E731
    return ops.lambda_return(tf.zeros_like(con), 1.0 - later(con), later(rew), boot, boot, 1.0, lam)


def replay_first_discount(con, is_terminal, discount):
    """The start's discount from the replayed terminal flag instead of the head (V2): [N, H+1].

    The start is a real replayed state, so its flag is known; the head's guess would only add noise.
    is_terminal: [B, T] flags of the starts, flattened in the order of `flatten_time`.
    """
    first = discount * (1.0 - tf.reshape(tf.cast(is_terminal, tf.float32), [-1, 1]))
    return tf.concat([first, con[:, 1:]], 1)


def pad_last(x):
    """Append a zero column on the time axis: [N, H] -> [N, H+1] (targets aligned with states)."""
    return tf.concat([x, tf.zeros_like(x[:, -1:])], 1)


class ActorCritic(keras.layers.Layer):

    def __init__(self, config, feat_dim, act_space, gather=tf.identity, **kw):
        super().__init__(**kw)
        self.config = config
        self.discrete = act_space.discrete
        actor = dict(config.actor)
        cont_kind = actor.pop('dist_cont', 'normal')
        self.actor = nets.Head('onehot' if act_space.discrete else cont_kind, feat_dim,
                               act_space.size, **actor, name='actor')
        critic = dict(config.critic)
        kind = critic.pop('dist', 'twohot')
        self.critic = nets.Head(kind, feat_dim, **critic, name='critic')
        self.slow_critic = nets.Head(kind, feat_dim, **critic, name='slow_critic')
        for slow, online in zip(self.slow_critic.weights, self.critic.weights, strict=True):
            slow.assign(online)
        self.slow_critic.trainable = False
        # V1 and V2 do not normalise returns: their scale is 1 and the normaliser stays unused.
        self.retnorm = ops.ReturnNormalizer(**config.retnorm, gather=gather) if 'retnorm' in config else None
        b = config.behavior
        self.lam, self.imag_length = b.return_lambda, b.imag_length
        self.discount = discount_factor(b)
        # rho: 1 is REINFORCE, 0 backpropagates the returns through the learned dynamics.
        self.rho = float(b.get('actor_grad_disc', 1.0) if self.discrete else b.get('actor_grad_cont', 1.0))
        if not 0.0 <= self.rho <= 1.0:
            raise ValueError(f'behavior.actor_grad_* must lie in [0, 1], got {self.rho}')
        self.return_critic = b.get('return_critic', 'online')
        if self.return_critic not in ('online', 'slow'):
            raise ValueError(f"behavior.return_critic '{self.return_critic}' is not one of "
                             "['online', 'slow']")
        self.weight_form = b.get('weight', 'inclusive')
        # The V1/V2 release forms of the targets, the start's discount and the critic's states.
        self.return_form = _choice(b, 'return_form', 'next', ('next', 'current'))
        self.first_discount = _choice(b, 'first_discount', 'model', ('model', 'replay'))
        self.critic_start = b.get('critic_start', True)
        self.replay_scale = config.loss.get('replay_critic', 0.0)

    def policy_sample(self, feat, key=None):
        """An action for feat. The actor reads sg(feat) in every version; with dynamics backprop the
        sample stays differentiable w.r.t. the actor's weights (reparameterised), so the returns'
        gradient reaches the actor through the actions it took, not through the states it read."""
        return dists.keyed_sample(self.actor(sg(feat)), key)

    def loss(self, wm, post, data, key=None):
        """Imagination losses from every posterior step plus the replay value loss.

        post: posterior states [B, T, ...]; data: the replayed batch without its context steps;
        key: [B] int64 per-sequence keys for the imagination noise, or None for stateful noise.
        Returns (losses dict, metrics dict).
        """
        rssm = wm.rssm
        start = {k: sg(v) for k, v in flatten_time(post).items()}   # N = B*T starts
        if key is not None:
            # Start (b, t) gets fold_in(key_b, t): row-wise like the states, flattened the same way.
            steps = tf.range(tf.shape(post['deter'])[1], dtype=tf.int64)
            key = tf.reshape(ops.fold_in(key[:, None], steps[None, :]), [-1])      # [B*T]

        dynamics = self.rho < 1.0

        def policy(state, k=None):
            action = self.policy_sample(rssm.get_feat(state), k)
            return action if dynamics else sg(action)

        states, actions = rssm.imagine(policy, start, self.imag_length, key=key)
        # With dynamics backprop the returns stay differentiable w.r.t. the imagined states (and so
        # the actor); the agent applies that gradient to the actor's weights only.
        feat = rssm.get_feat(states) if dynamics else sg(rssm.get_feat(states))   # [N, H+1, F]
        rew = wm.reward(feat).mean()                                  # [N, H+1]
        con = wm.imagined_discount(feat)                              # [N, H+1], gamma * P(cont)
        if self.first_discount == 'replay':
            con = replay_first_discount(con, data['is_terminal'], self.discount)
        critic = self.critic(sg(feat))
        val = sg(critic.mean())                                       # [N, H+1]
        slowval = sg(self.slow_critic(sg(feat)).mean())
        # Returns bootstrap on the online critic (V1, V3) or the slow target critic (V2); with
        # dynamics backprop on a critic evaluated on the differentiable states.
        boot_critic = self.slow_critic if self.return_critic == 'slow' else self.critic
        boot = boot_critic(feat).mean() if dynamics else (slowval if self.return_critic == 'slow' else val)
        if self.return_form == 'current':
            ret = current_returns(rew, con, boot, self.lam)          # [N, H]
        else:
            # Imagined episodes never hit is_last; termination enters through 1 - con, and the
            # discount is already inside con, so disc = 1 here.
            ret = ops.lambda_return(tf.zeros_like(con), 1.0 - con, rew, boot, boot, 1.0, self.lam)
        scale = self.retnorm.update_and_scale(ret) if self.retnorm else tf.constant(1.0)
        pi = self.actor(sg(feat))
        logpi = pi.log_prob(sg(actions))                              # [N, H+1]
        ent = pi.entropy()                                            # [N, H+1]
        losses, adv = self.imag_losses(critic, slowval, logpi, ent, ret, sg(boot), con, scale)
        metrics = {'ret': tf.reduce_mean(ret), 'ret_scale': scale, 'val': tf.reduce_mean(val),
                   'adv': tf.reduce_mean(tf.abs(adv) / scale),
                   'actor_ent': tf.reduce_mean(ent), 'imag_rew': tf.reduce_mean(rew),
                   'imag_con': tf.reduce_mean(con)}
        if self.replay_scale:
            boot = tf.reshape(sg(ret[:, 0]), tf.shape(data['reward']))   # [B, T]
            losses['replay_critic'], repl_ret = self.replay_loss(rssm.get_feat(post), data, boot)
            metrics['replay_ret'] = tf.reduce_mean(repl_ret)
        return losses, metrics

    def imag_losses(self, critic, slowval, logpi, ent, ret, base, con, scale):
        """Actor and critic losses on the imagined states, per `return_form` and `critic_start`.

        critic: the critic's distribution on feat [N, H+1]; slowval, logpi, ent, base (the actor's
        baseline, stop-gradient), con: [N, H+1]; ret: [N, H]. Returns (losses, advantages).
        """
        b = self.config.behavior
        exclusive = self.weight_form == 'exclusive'
        weight = ops.cumulative_weight(con, exclusive=exclusive)
        weight_actor, ret_actor = weight, ret
        if self.return_form == 'current':
            # states:   [s0]  [s1] ... [s_{H-2}]  s_{H-1}  s_H
            # actions:  [a0]  [a1] ... [a_{H-2}]               a_t taken in s_t leads to s_{t+1}
            # targets:   t0   [t1] ... [t_{H-1}]               t_{t+1} is what follows a_t
            # baseline: [v0]  [v1] ... [v_{H-2}]               (V2: the slow critic)
            # weights:  [w0]  [w1] ... [w_{H-2}]
            logpi, ent, base, weight_actor, ret_actor = (
                logpi[:, :-1], ent[:, :-1], base[:, :-1], weight[:, :-1], ret[:, 1:])
        losses = {'actor': actor_loss(logpi, ent, ret_actor, base, weight_actor, scale, b.actent,
                                      self.rho)}
        critic_logp, slow_logp = critic.log_prob(sg(pad_last(ret))), critic.log_prob(slowval)
        if not self.critic_start:
            # states:   s0  [s1] ... [s_{H-1}]  s_H      (V1: imagined states only; the weights
            # targets:      [t1] ... [t_{H-1}]            restart at s1: 1, gamma, gamma^2 ...)
            critic_logp, slow_logp = critic_logp[:, 1:], slow_logp[:, 1:]
            weight = ops.cumulative_weight(con[:, 1:], exclusive=exclusive)
        losses['critic'] = critic_loss(critic_logp, slow_logp, weight, b.get('slowreg', 0.0))
        return losses, ret_actor - base[:, :-1]

    def replay_loss(self, feat, data, boot):
        """Critic loss on the replayed sequence itself, [B, T-1].

        Lambda-returns over the real rewards and terminals, bootstrapped at every step with the
        imagination return `boot` computed from that step's posterior:

            replay steps:  [x0]  [x1] ... [x_{T-2}]  x_{T-1}
            rewards/terms:        r1  ...  r_{T-2}   r_{T-1}
            returns:        R0    R1  ...  R_{T-2}            (T-1 returns)
        """
        # The Nature release (repval_grad) lets this loss train the encoder and RSSM through feat.
        feat = feat if self.config.get('loss.repval_grad', False) else sg(feat)
        critic = self.critic(feat)
        val = sg(critic.mean())                                       # [B, T]
        slowval = sg(self.slow_critic(feat).mean())
        last = tf.cast(data['is_last'], tf.float32)
        term = tf.cast(data['is_terminal'], tf.float32)
        ret = ops.lambda_return(last, term, data['reward'], val, sg(boot), self.discount, self.lam)
        weight = 1.0 - last                                           # no target leaves a last step
        loss = critic_loss(critic.log_prob(sg(pad_last(ret))), critic.log_prob(slowval), weight,
                           self.config.behavior.slowreg)
        return loss, ret

    def update_slow_critic(self, updates):
        """EMA of the online critic's weights every `slow_critic_every` updates (V2: a full copy,
        rate 1, every 100; V3: rate 0.02 every update; V1 has no slow critic: every 0)."""
        b = self.config.behavior
        if not b.get('slow_critic_every', 0):
            return
        rate = tf.where(updates % b.slow_critic_every == 0, b.slow_critic_rate, 0.0)
        ops.ema_update(self.slow_critic.weights, self.critic.weights, rate)


def _choice(section, key, default, allowed):
    """section[key] (or `default` when absent), checked against the allowed values."""
    value = section.get(key, default)
    if value not in allowed:
        raise ValueError(f"behavior.{key} '{value}' is not one of {list(allowed)}")
    return value
