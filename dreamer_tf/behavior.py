"""Actor-critic learned in imagination, for every version.

`imag_loss` and `repl_loss` are the papers' equations as pure functions of tensors; `ActorCritic`
builds the networks, rolls out imagination and feeds them. What differs between versions is config:

| | V1 | V2 | V3 (Nature) |
|---|---|---|---|
| actor gradient rho (1: REINFORCE, 0: dynamics backprop) | 0 | 1 Atari, 0 DMC | 1 |
| returns bootstrap on | online critic | slow critic (copied every 100) | online critic |
| return scale (`return_norm`) | 1 | 1 | percentile EMA (`retnorm`) |
| critic distribution | Normal(mean, 1) | Normal(mean, 1) | two-hot |
| weight of imagined step t | prod_{k<t} discount_k | same | prod_{k<=t} con_k |
| value of s_t counts (`return_form`) | r_t onwards: current | current | r_{t+1} onwards: next |
| discount of the start (`first_discount`) | gamma: model | replay terminal flag: replay | model |
| critic trains on the start (`critic_start`) | no | yes | yes |
"""

import keras
import tensorflow as tf

from dreamer_tf import dists, nets, ops
from dreamer_tf.rssm import assert_lead, flatten_time
from dreamer_tf.world_model import discount_factor

sg = tf.stop_gradient


def actor_loss(logpi, ent, ret, val, weight, scale, actent, rho=1.0):
    """REINFORCE, dynamics backprop or a mix of both, with entropy bonus: [N, H+1] inputs -> [N, H].

    loss_t = -w_t * (rho * log pi(a_t | s_t) * sg((R_t - v_t) / S)      REINFORCE (V2 Atari, V3)
                     + (1 - rho) * R_t / S                               dynamics backprop (V1, V2 DMC)
                     + actent * H[pi(. | s_t)])

    The dynamics term's gradient reaches the actor through the imagined rewards, values and states,
    so `ret` must come from differentiable imagined actions; `val` is the baseline (stop-gradient).
    """
    # states:  [s0]  [s1] ... [s_{H-1}]  s_H
    # ret:      R0    R1  ...  R_{H-1}          val / logpi / ent / weight drop s_H to align
    objective = actent * ent[:, :-1]
    if rho:
        objective += rho * logpi[:, :-1] * sg((ret - val[:, :-1]) / scale)    # [N, H]
    if rho != 1.0:
        objective += (1.0 - rho) * ret / scale
    return -sg(weight[:, :-1]) * objective


def critic_loss(critic_logp, slow_logp, weight, slowreg):
    """NLL of the returns plus a regulariser towards the slow critic: [N, H+1] inputs -> [N, H].

    critic_logp: log p_critic(sg(R_t)) with a padded last column; slow_logp: log p_critic(slow mean).
    """
    # states:   [s0] [s1] ... [s_{H-1}]  s_H
    # targets:   R0   R1  ...  R_{H-1}   (pad)
    return -sg(weight[:, :-1]) * (critic_logp[:, :-1] + slowreg * slow_logp[:, :-1])


def next_returns(rew, con, boot, lam):
    """DreamerV3's lambda-returns, R_t counting r_{t+1} onwards: [N, H+1] -> [N, H].

    Imagined episodes never hit is_last; termination enters through 1 - con, which holds gamma already.
    """
    return ops.lambda_return(tf.zeros_like(con), 1.0 - con, rew, boot, boot, 1.0, lam)


def current_returns(rew, con, boot, lam):
    """Lambda-returns of the V1/V2 papers, where the value of s_t counts s_t's own reward: [N, H+1] -> [N, H].

        states:    [s0]  [s1] ... [s_{H-1}]   s_H
        rew / con: [r0]  [r1] ... [r_{H-1}]          con_t = gamma * P(s_t continues)
        boot:             [v1] ... [v_{H-1}]  [v_H]
        returns:    t0    t1  ...  t_{H-1}           t_t = r_t + con_t ((1 - lam) v_{t+1} + lam t_{t+1})

    with t_H = v_H: ops.lambda_return (whose R_t starts at r_{t+1}) fed rew and con one step later.
    """
    # x:      x0  x1 ... x_{H-1}  x_H
    # later:   0  x0 ... x_{H-2}  x_{H-1}     (so lambda_return's step t+1 reads x_t)
    later = lambda x: tf.concat([tf.zeros_like(x[:, :1]), x[:, :-1]], 1)  # noqa: E731
    return ops.lambda_return(tf.zeros_like(con), 1.0 - later(con), later(rew), boot, boot, 1.0, lam)


RETURN_FORMS = {'next': next_returns, 'current': current_returns}


def model_first_discount(con, is_terminal, discount):
    """The start's discount as the continue head predicts it (V1, V3): con as it is, [N, H+1]."""
    return con


def replay_first_discount(con, is_terminal, discount):
    """The start's discount from its replayed terminal flag [B, T] (V2), later ones from con: [N, H+1].

    The start is a real replayed state, so its flag is known; the head's guess would only add noise.
    """
    first = discount * (1.0 - tf.reshape(tf.cast(is_terminal, tf.float32), [-1, 1]))
    # con:  [c0] c1 ... c_H  ->  first  c1 ... c_H
    return tf.concat([first, con[:, 1:]], 1)


FIRST_DISCOUNTS = {'model': model_first_discount, 'replay': replay_first_discount}


def actor_steps_next(logpi, ent, base, weight, ret):
    """V3: the action in s_t is scored by R_t, which starts at r_{t+1}: every step as it is."""
    return logpi, ent, base, weight, ret


def actor_steps_current(logpi, ent, base, weight, ret):
    """V1/V2: t_t counts r_t, so the action in s_t is scored by t_{t+1}; s_{H-1} has no t_H."""
    # states:   [s0]  [s1] ... [s_{H-2}]  s_{H-1}  s_H
    # actions:  [a0]  [a1] ... [a_{H-2}]              a_t taken in s_t leads to s_{t+1}
    # targets:   t0   [t1] ... [t_{H-1}]              t_{t+1} is what follows a_t
    return logpi[:, :-1], ent[:, :-1], base[:, :-1], weight[:, :-1], ret[:, 1:]


ACTOR_STEPS = {'next': actor_steps_next, 'current': actor_steps_current}


def imag_loss(critic, slowval, logpi, ent, ret, base, con, scale, *, rho, actent, slowreg,
              return_form='next', exclusive=False, critic_start=True):
    """Actor and critic losses on imagined trajectories; returns ({'actor', 'critic'}, advantages).

    critic: the critic's distribution on the states [N, H+1]; slowval, logpi, ent, base (the actor's
    baseline, stop-gradient) and con: [N, H+1]; ret: [N, H] (RETURN_FORMS[return_form]); scale: S.
    exclusive: weights prod_{k<t} con_k (V1, V2) instead of prod_{k<=t}.
    """
    n, h1 = con.shape                                             # N, H+1 (None where unknown)
    h = None if h1 is None else h1 - 1
    assert_lead((n, h1), 'imag_loss', slowval=slowval, logpi=logpi, ent=ent, base=base, con=con)
    assert_lead((n, h), 'imag_loss', ret=ret)
    weight = ops.cumulative_weight(con, exclusive=exclusive)
    logpi, ent, base, weight_actor, ret_actor = ACTOR_STEPS[return_form](logpi, ent, base, weight, ret)
    actor = actor_loss(logpi, ent, ret_actor, base, weight_actor, scale, actent, rho)
    critic_logp, slow_logp = critic.log_prob(sg(pad_last(ret))), critic.log_prob(slowval)
    # states:   s0  [s1] ... [s_{H-1}]  s_H     without critic_start (V1) the critic trains on the
    # targets:      [t1] ... [t_{H-1}]          imagined states only; weights restart at s1
    first = 0 if critic_start else 1
    critic_logp, slow_logp, con = critic_logp[:, first:], slow_logp[:, first:], con[:, first:]
    weight = ops.cumulative_weight(con, exclusive=exclusive)
    losses = {'actor': actor, 'critic': critic_loss(critic_logp, slow_logp, weight, slowreg)}
    # base:  [b0] ... [b_{H'-1}]  b_H'     aligned with the H' actor targets
    return losses, ret_actor - base[:, :-1]


def repl_loss(critic, slowval, last, term, rew, boot, disc, lam, slowreg):
    """Critic loss on the replayed sequence itself, [B, T-1], and its returns [B, T-1].

    Lambda-returns over the real rewards and terminals, bootstrapped at every step with the
    imagination return `boot` [B, T] of that step's posterior. critic: the critic's distribution on
    the replayed states [B, T]; slowval, last, term, rew: [B, T].
    """
    assert_lead(rew.shape, 'repl_loss', slowval=slowval, last=last, term=term, rew=rew, boot=boot)
    val = sg(critic.mean())                                       # [B, T]
    # steps:    [x0]  [x1] ... [x_{T-2}]  x_{T-1}
    # rewards:         r1  ...  r_{T-2}   r_{T-1}
    # returns:   R0    R1  ...  R_{T-2}            (T-1 returns)
    ret = ops.lambda_return(last, term, rew, val, sg(boot), disc, lam)
    weight = 1.0 - last                                           # no target leaves a last step
    loss = critic_loss(critic.log_prob(sg(pad_last(ret))), critic.log_prob(slowval), weight, slowreg)
    return loss, ret


def pad_last(x):
    """Append a zero column on the time axis: [N, H] -> [N, H+1] (targets aligned with states)."""
    return tf.concat([x, tf.zeros_like(x[:, -1:])], 1)


def gate(x, flows):
    """x where the gradient flows on through it, sg(x) where it stops."""
    return x if flows else sg(x)


class ActorCritic(keras.layers.Layer):

    def __init__(self, config, feat_dim, act_space, gather=tf.identity, **kw):
        super().__init__(**kw)
        self.config = config
        actor, critic = dict(config.actor), dict(config.critic)
        b = config.behavior
        dist_cont = actor.pop('dist_cont')
        # rho: 1 is REINFORCE, 0 backpropagates the returns through the learned dynamics.
        kind, rho = ('onehot', b.actor_grad_disc) if act_space.discrete else (dist_cont, b.actor_grad_cont)
        self.actor = nets.Head(kind, feat_dim, act_space.size, **actor, name='actor')
        kind = critic.pop('dist')
        self.critic = nets.Head(kind, feat_dim, **critic, name='critic')
        self.slow_critic = nets.Head(kind, feat_dim, **critic, name='slow_critic')
        for slow, online in zip(self.slow_critic.weights, self.critic.weights, strict=True):
            slow.assign(online)
        self.slow_critic.trainable = False
        percentile = b.return_norm == 'percentile'
        self.retnorm = ops.ReturnNormalizer(**config.retnorm, gather=gather) if percentile else None
        self.lam, self.imag_length, self.discount = b.return_lambda, b.imag_length, discount_factor(b)
        self.rho = float(rho)
        self.return_critic, self.return_form = b.return_critic, b.return_form
        self.first_discount, self.critic_start = b.first_discount, b.critic_start
        self.exclusive = b.weight == 'exclusive'
        self.replay_scale = config.loss.replay_critic

    def policy_sample(self, feat, key=None):
        """An action for feat; the actor reads sg(feat), so with dynamics backprop the returns' gradient
        reaches it through the (reparameterised) actions it took, not through the states it read."""
        return dists.keyed_sample(self.actor(sg(feat)), key)

    def imagine(self, rssm, post, key=None):
        """The imagination rollout from every posterior step [B, T]: feat [N, H+1, F] and actions
        [N, H+1, A], N = B*T. With dynamics backprop both stay differentiable (rho < 1)."""
        start = {k: sg(v) for k, v in flatten_time(post).items()}
        if key is not None:
            # Start (b, t) gets fold_in(key_b, t): row-wise like the states, flattened the same way.
            steps = tf.range(tf.shape(post['deter'])[1], dtype=tf.int64)
            key = tf.reshape(ops.fold_in(key[:, None], steps[None, :]), [-1])      # [B*T]
        flows = self.rho < 1.0

        def policy(state, k=None):
            return gate(self.policy_sample(rssm.get_feat(state), k), flows)

        states, actions = rssm.imagine(policy, start, self.imag_length, key=key)
        return gate(rssm.get_feat(states), flows), actions

    def bootstrap(self, feat, val, slowval):
        """The values the returns bootstrap on: online (V1, V3) or slow (V2) critic; with dynamics
        backprop evaluated again on the differentiable states [N, H+1]."""
        if self.rho < 1.0:
            return {'online': self.critic, 'slow': self.slow_critic}[self.return_critic](feat).mean()
        return {'online': val, 'slow': slowval}[self.return_critic]

    def loss(self, wm, post, data, key=None):
        """Imagination losses from every posterior step plus the replay value loss.

        post: posterior states [B, T, ...]; data: the replayed batch without its context steps;
        key: [B] int64 per-sequence keys for the imagination noise, or None for stateful noise.
        Returns (losses dict, metrics dict).
        """
        feat, actions = self.imagine(wm.rssm, post, key)               # [N, H+1, F], [N, H+1, A]
        rew = wm.reward(feat).mean()                                  # [N, H+1]
        first_discount = FIRST_DISCOUNTS[self.first_discount]
        con = first_discount(wm.imagined_discount(feat), data['is_terminal'], self.discount)
        critic = self.critic(sg(feat))
        val, slowval = sg(critic.mean()), sg(self.slow_critic(sg(feat)).mean())       # [N, H+1]
        boot = self.bootstrap(feat, val, slowval)
        ret = RETURN_FORMS[self.return_form](rew, con, boot, self.lam)                 # [N, H]
        scale = self.retnorm.update_and_scale(ret) if self.retnorm else tf.constant(1.0)
        pi = self.actor(sg(feat))
        logpi, ent = pi.log_prob(sg(actions)), pi.entropy()          # [N, H+1]
        b = self.config.behavior
        losses, adv = imag_loss(critic, slowval, logpi, ent, ret, sg(boot), con, scale, rho=self.rho,
                                actent=b.actent, slowreg=b.slowreg, return_form=self.return_form,
                                exclusive=self.exclusive, critic_start=self.critic_start)
        metrics = {'ret': tf.reduce_mean(ret), 'ret_scale': scale, 'val': tf.reduce_mean(val),
                   'adv': tf.reduce_mean(tf.abs(adv) / scale), 'actor_ent': tf.reduce_mean(ent),
                   'imag_rew': tf.reduce_mean(rew), 'imag_con': tf.reduce_mean(con)}
        if self.replay_scale:
            # ret:  [R0] R1 ... R_{H-1}    R0 of start (b, t) bootstraps replay step (b, t)
            boot = tf.reshape(sg(ret[:, 0]), tf.shape(data['reward']))   # [B, T]
            losses['replay_critic'], repl_ret = self.replay_loss(wm.rssm.get_feat(post), data, boot)
            metrics['replay_ret'] = tf.reduce_mean(repl_ret)
        return losses, metrics

    def replay_loss(self, feat, data, boot):
        """repl_loss on posterior features feat [B, T, F] with the imagination returns boot [B, T]."""
        # The Nature release (repval_grad) lets this loss train the encoder and RSSM through feat.
        feat = gate(feat, self.config.loss.repval_grad)
        critic = self.critic(feat)
        slowval = sg(self.slow_critic(feat).mean())
        last = tf.cast(data['is_last'], tf.float32)
        term = tf.cast(data['is_terminal'], tf.float32)
        return repl_loss(critic, slowval, last, term, data['reward'], boot, self.discount, self.lam,
                         self.config.behavior.slowreg)

    def update_slow_critic(self, updates):
        """EMA of the online critic's weights every `slow_critic_every` updates (V2: a full copy,
        rate 1, every 100; V3: rate 0.02 every update; V1 has no slow critic: every 0)."""
        b = self.config.behavior
        if not b.slow_critic_every:
            return
        rate = tf.where(updates % b.slow_critic_every == 0, b.slow_critic_rate, 0.0)
        ops.ema_update(self.slow_critic.weights, self.critic.weights, rate)
