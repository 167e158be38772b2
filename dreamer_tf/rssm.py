"""Recurrent state-space model of every Dreamer version: one model over a latent and a core.

    latent (latents.py): 'categorical' (V2, V3) or 'gaussian' (V1)
    core: 'block_gru' (V3 Nature), 'norm_gru' (V2, V3 2023: layer-normalised GRU), 'gru' (V1: Keras GRU)

A state is a dict of float32 tensors: deter [B, deter] (the GRU carry h_t) and the latent's keys
(stoch, the sample z_t, with logit or mean/std; see latents.py).

    h_t = f(h_{t-1}, z_{t-1}, a_{t-1})      img_step (prior p(z_t | h_t))
    z_t ~ q(z_t | h_t, embed(x_t))          obs_step (posterior)
"""

import keras
import tensorflow as tf

from dreamer_tf import nets, ops
from dreamer_tf.latents import make_latent
from dreamer_tf.layers import choose

sg = tf.stop_gradient


class BlockCore:
    """DreamerV3 (Nature): deter, stoch and action each get their own projection inside the block GRU."""

    @staticmethod
    def build(rssm, act_dim, hidden, blocks, dyn_layers, norm, act):
        in_dims = [rssm.deter, rssm.latent.flat_dim, act_dim]
        rssm.core = nets.BlockGRU(rssm.deter, hidden, in_dims, blocks, dyn_layers, norm, act, name='core')

    @staticmethod
    def arrange(rssm):
        return rssm.core.arrange(rssm.compute_dtype)

    @staticmethod
    def step(rssm, deter, stoch, action, arranged):
        return rssm.core(deter, [deter, stoch, action], arranged)


class DenseCore:
    """V1, V2, V3 2023: one dense layer embeds (z_{t-1}, a_{t-1}), then a GRU step."""

    def __init__(self, gru):
        self.gru = gru

    def build(self, rssm, act_dim, hidden, blocks, dyn_layers, norm, act):
        rssm.img_in = nets.MLP(rssm.latent.flat_dim + act_dim, 1, hidden, norm, act, name='img_in')
        rssm.core = self.gru(rssm.deter, hidden, name='core')

    def arrange(self, rssm):
        return None

    def step(self, rssm, deter, stoch, action, arranged):
        return rssm.core(deter, rssm.img_in(tf.concat([stoch, action], -1)))


CORES = {'block_gru': BlockCore(), 'norm_gru': DenseCore(nets.NormGRU), 'gru': DenseCore(nets.KerasGRU)}


class RSSM(keras.layers.Layer):

    def __init__(self, act_dim, embed_dim, deter, hidden, stoch, classes=1, blocks=1, unimix=0.0,
                 img_layers=1, obs_layers=1, dyn_layers=1, norm='none', act='elu',
                 latent='categorical', core='block_gru', min_std=0.1, imag_unroll=1, **kw):
        super().__init__(**kw)
        self.latent = make_latent(latent, stoch, classes, unimix, min_std)
        self.core_form = choose(CORES, core, 'rssm.core')
        self.imag_unroll = imag_unroll      # imagination steps per loop iteration: speed only
        self.deter = deter
        self.feat_dim = deter + self.latent.flat_dim
        self.core_form.build(self, act_dim, hidden, blocks, dyn_layers, norm, act)
        raw_dim = self.latent.raw_dim
        self.prior_mlp = nets.MLP(deter, img_layers, hidden, norm, act, name='prior_mlp')
        self.prior_out = nets.Linear(self.prior_mlp.out_dim, raw_dim, name='prior_out')
        self.post_mlp = nets.MLP(deter + embed_dim, obs_layers, hidden, norm, act, name='post_mlp')
        self.post_out = nets.Linear(self.post_mlp.out_dim, raw_dim, name='post_out')


    def initial(self, batch_size):
        """All-zero carry and latent (every release starts from zeros, not a learned state)."""
        return dict(deter=tf.zeros([batch_size, self.deter]), **self.latent.zeros(batch_size))

    def get_feat(self, state):
        """feat = concat(deter, flat stoch): what every head reads. [..., feat_dim]."""
        return tf.concat([state['deter'], self.latent.flat(state['stoch'])], -1)

    def get_dist(self, state):
        """The latent's distribution, with one batch entry per state ([...] batch shape)."""
        return self.latent.dist(state)


    def img_step(self, prev_state, prev_action, key=None, arranged=None):
        """Prior step: h_t = f(h_{t-1}, z_{t-1}, a_{t-1}), z_t ~ p(z_t | h_t). key: [B] or None."""
        return self.prior(self.core_step(prev_state, prev_action, arranged), key)

    def arranged_core(self):
        """Loop-invariant core weights that a loop over time hands to every step (None: nothing to)."""
        return self.core_form.arrange(self)

    def core_step(self, prev_state, prev_action, arranged=None):
        """h_t = f(h_{t-1}, z_{t-1}, a_{t-1}): [B, deter] float32; arranged: `self.arranged_core()`."""
        # Actions of magnitude above 1 are scaled down to it so they cannot blow up the GRU input.
        action = tf.cast(prev_action, tf.float32)
        action = action / sg(tf.maximum(1.0, tf.abs(action)))
        dtype = self.compute_dtype
        stoch = tf.cast(tf.reshape(prev_state['stoch'], [-1, self.latent.flat_dim]), dtype)
        deter, action = tf.cast(prev_state['deter'], dtype), tf.cast(action, dtype)
        return tf.cast(self.core_form.step(self, deter, stoch, action, arranged), tf.float32)

    def prior(self, deter, key=None):
        """p(z_t | h_t) and a sample of it, for deter [N, deter]: the prior state of h_t."""
        raw = self.prior_out(self.prior_mlp(tf.cast(deter, self.compute_dtype)))
        return dict(deter=deter, **self.latent.from_raw(tf.cast(raw, tf.float32), key))

    def posterior(self, deter, embed, key=None):
        """q(z_t | h_t, embed_t) and a sample of it, for deter [N, deter]: the posterior state."""
        x = tf.concat([tf.cast(deter, self.compute_dtype), tf.cast(embed, self.compute_dtype)], -1)
        raw = self.post_out(self.post_mlp(x))
        return dict(deter=deter, **self.latent.from_raw(tf.cast(raw, tf.float32), key))

    def reset(self, prev_state, prev_action, is_first):
        """Zero the carry and the previous action where `is_first` [B] starts an episode."""
        keep = 1.0 - tf.cast(is_first, tf.float32)
        init = self.initial(tf.shape(keep)[0])
        prev_state = {k: _select(keep, prev_state[k], init[k]) for k in prev_state}
        return prev_state, prev_action * keep[:, None]

    def obs_step(self, prev_state, prev_action, embed, is_first, key=None):
        """Posterior step; `is_first` [B] resets carry and previous action. Returns (post, prior).

        key: [B] int64 or None; the prior and the posterior draw from streams 0 and 1 of it.
        """
        prior_key, post_key = (None, None) if key is None else (ops.fold_in(key, 0), ops.fold_in(key, 1))
        deter = self.core_step(*self.reset(prev_state, prev_action, is_first))
        prior = self.prior(deter, prior_key)       # first: unkeyed (acting) noise is drawn in this order
        return self.posterior(deter, embed, post_key), prior


    def observe(self, embed, action, is_first, state=None, key=None):
        """Filter sequences: embed [B, T, E], action [B, T, A] (a_{t-1}), is_first [B, T].

        key: [B] int64 per-sequence keys (step t uses fold_in(key, t)), or None for stateful noise.
        Returns (post, prior), each a state dict with tensors [B, T, ...].
        """
        assert_lead(embed.shape[:2], 'observe', embed=embed, action=action, is_first=is_first)
        assert_lead(embed.shape[:1], 'observe', key=key)
        state = self.initial(tf.shape(embed)[0]) if state is None else state
        inputs = (_swap_time(embed), _swap_time(tf.cast(action, tf.float32)), _swap_time(is_first))
        step_keys = None if key is None else ops.fold_in(key[None, :], _time_index(embed)[:, None])  # [T, B]
        arranged = self.arranged_core()

        def step(prev, inp):
            # Only h_t and the posterior feed the next step; the priors are computed after the loop.
            embed_t, action_t, first_t, *key_t = inp
            deter = self.core_step(*self.reset(prev, action_t, first_t), arranged)
            return self.posterior(deter, embed_t, ops.fold_in(key_t[0], 1) if key_t else None)

        # tf.scan keeps the graph one step long: XLA compiles in seconds instead of minutes.
        scanned = tf.scan(step, inputs if key is None else inputs + (step_keys,), state)
        post = {k: _swap_time(v) for k, v in scanned.items()}
        # Every step's prior in one batch: the values and keyed samples (stream 0) of a per-step obs_step.
        prior_key = None if key is None else tf.reshape(_swap_time(ops.fold_in(step_keys, 0)), [-1])
        prior = self.prior(tf.reshape(post['deter'], [-1, self.deter]), prior_key)
        return post, {k: _unflatten_time(v, post['deter']) for k, v in prior.items()}

    def imagine(self, policy, start, horizon, key=None):
        """Roll the prior `horizon` steps from `start` [N] with actions from `policy`.

        policy(state) -> action [N, A]; with `key` ([N] int64) it is called as policy(state, key) and
        step t draws its latent from fold_in(k_t, 0) and its action from fold_in(k_t, 1), where
        k_t = fold_in(key, t). Returns (states, actions), each [N, horizon + 1, ...]:
        states[:, 0] is the start and actions[:, t] is the action taken in states[:, t].
        """
        assert_lead(start['deter'].shape[:1], 'imagine', key=key, **start)
        steps = tf.range(horizon + 1, dtype=tf.int64)[:, None]
        keys = tf.zeros([horizon + 1, 1], tf.int64) if key is None else ops.fold_in(key[None, :], steps)
        arranged = self.arranged_core()

        def act(state, k):
            return policy(state) if key is None else policy(state, ops.fold_in(k, 1))

        def step(prev, k):
            state = self.img_step(*prev, None if key is None else ops.fold_in(k, 0), arranged)
            return state, act(state, k)

        first = act(start, keys[0])
        # keys: k_0 (the start's action)  [k_1 ... k_H] (step t's latent and action)
        states, actions = ops.scan(step, keys[1:], (start, first), self.imag_unroll)
        states = {k: tf.concat([start[k][:, None], _swap_time(v)], 1) for k, v in states.items()}
        actions = tf.concat([first[:, None], _swap_time(actions)], 1)
        assert_lead((start['deter'].shape[0], horizon + 1), 'imagine', actions=actions, **states)
        return states, actions


    def kl(self, p, q):
        """KL(p || q) between the latents of two states, summed over the latent dims: [B, T]."""
        return self.latent.kl(p, q)

    def kl_loss(self, post, prior, loss):
        """The KL terms of the world-model loss in the form `loss.kl_form` names (KL_FORMS).

        Returns a dict of loss name -> [B, T] tensor (per step clip) or scalar (clip of the mean).
        """
        return choose(KL_FORMS, loss.kl_form, 'loss.kl_form')(self.kl, post, prior, loss)


def kl_dyn_rep(kl, post, prior, free):
    """DreamerV3: dyn = max(free, KL(sg(post) || prior)) trains the prior, rep = max(free, KL(post ||
    sg(prior))) regularises the posterior; kl(p, q) of two states sums over the latent. [B, T] each."""
    dyn, rep = kl(_sg(post), prior), kl(post, _sg(prior))
    return tf.maximum(dyn, free), tf.maximum(rep, free)


def free_nats(kl, free, average):
    """max(kl, free) of every step ([B, T]) or, when `average` (V1, V2), of the batch mean (a scalar)."""
    return tf.maximum(tf.reduce_mean(kl), free) if average else tf.maximum(kl, free)


def kl_loss_v1(kl, free):
    """DreamerV1: max(mean KL(post || prior), free), one term for prior and posterior: [B, T] -> scalar."""
    return free_nats(kl, free, average=True)


def kl_balance(lhs, rhs, balance, free, average):
    """DreamerV2's KL balancing: balance * KL(sg(post) || prior) + (1 - balance) * KL(post || sg(prior)).

    Both sides have the value KL(post || prior); the prior's gradient is scaled by `balance` (0.8) and
    the posterior's by 1 - balance. The free nats clip each side, as the release does.
    [B, T] inputs -> [B, T] or scalar (average).
    """
    return balance * free_nats(lhs, free, average) + (1.0 - balance) * free_nats(rhs, free, average)


def _dyn_rep_terms(kl, post, prior, loss):
    return dict(zip(('dyn', 'rep'), kl_dyn_rep(kl, post, prior, loss.free_nats)))


def _balance_terms(kl, post, prior, loss):
    lhs, rhs = kl(_sg(post), prior), kl(post, _sg(prior))
    return {'kl': kl_balance(lhs, rhs, loss.kl_balance, loss.free_nats, loss.free_avg)}


def _v1_terms(kl, post, prior, loss):
    return {'kl': kl_loss_v1(kl(post, prior), loss.free_nats)}


KL_FORMS = {'dyn_rep': _dyn_rep_terms, 'balance': _balance_terms, 'v1': _v1_terms}


def _sg(state):
    return {k: sg(v) for k, v in state.items()}


def assert_lead(lead, where, **tensors):
    """Check at trace time that the static leading dims of every tensor (not None) match `lead`."""
    lead = tf.TensorShape(lead)
    tensors = {name: x for name, x in tensors.items() if x is not None}
    if not all(lead.is_compatible_with(tf.TensorShape(x.shape)[:lead.rank]) for x in tensors.values()):
        shapes = ', '.join(f'{name} {tuple(x.shape)}' for name, x in tensors.items())
        raise ValueError(f'{where}: expected leading dims {tuple(lead)}, got {shapes}')


def _time_index(x):
    """[0, 1, ..., T-1] for x [B, T, ...], int64."""
    return tf.range(tf.shape(x)[1], dtype=tf.int64)


def _swap_time(x):
    """[B, T, ...] <-> [T, B, ...]: tf.scan runs over the leading axis."""
    return tf.transpose(x, [1, 0] + list(range(2, len(x.shape))))


def _select(keep, value, init):
    keep = tf.reshape(keep, [-1] + [1] * (len(value.shape) - 1))
    return keep * value + (1.0 - keep) * init


def _unflatten_time(x, like):
    """[B*T, ...] -> [B, T, ...], with B and T those of `like` [B, T, ...] (the inverse of flatten_time)."""
    out = tf.reshape(x, tf.concat([tf.shape(like)[:2], tf.shape(x)[1:]], 0))
    out.set_shape(like.shape[:2].concatenate(x.shape[1:]))
    return out


def flatten_time(state):
    """[B, T, ...] state -> [B*T, ...] state (imagination starts from every posterior step)."""
    return {k: tf.reshape(v, [-1] + v.shape[2:].as_list()) for k, v in state.items()}
