"""Recurrent state-space model of every Dreamer version: one model, two latents, three cores.

    latent 'categorical' (V2, V3): `stoch` one-hot categoricals of `classes` classes, straight-through
    latent 'gaussian' (V1):        a diagonal Gaussian of `stoch` dims, std = softplus(raw) + min_std
    core 'block_gru' (V3 Nature), 'norm_gru' (V2, V3 2023: layer-normalised GRU), 'gru' (V1: Keras GRU)

A state is a dict of float32 tensors:
    deter: [B, deter]            GRU carry h_t
    stoch: [B, stoch, classes]   one-hot sample z_t (categorical), or [B, stoch] (gaussian)
    logit: [B, stoch, classes]   log-probabilities of z_t's distribution, unimix already applied
                                 (categorical only)
    mean, std: [B, stoch]        parameters of z_t's distribution (gaussian only)

    h_t = f(h_{t-1}, z_{t-1}, a_{t-1})      img_step (prior p(z_t | h_t))
    z_t ~ q(z_t | h_t, embed(x_t))          obs_step (posterior)
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from dreamer_tf import dists, nets, ops

sg = tf.stop_gradient


class RSSM(keras.layers.Layer):

    def __init__(self, act_dim, embed_dim, deter, hidden, stoch, classes=1, blocks=1, unimix=0.0,
                 img_layers=1, obs_layers=1, dyn_layers=1, norm='none', act='elu',
                 latent='categorical', core='block_gru', min_std=0.1, imag_unroll=1, **kw):
        super().__init__(**kw)
        if latent not in LATENTS:
            raise ValueError(f"rssm.latent '{latent}' is not one of {list(LATENTS)}")
        if core not in CORES:
            raise ValueError(f"rssm.core '{core}' is not one of {list(CORES)}")
        self.latent, self.core_kind, self.min_std = latent, core, min_std
        self.imag_unroll = imag_unroll      # imagination steps per loop iteration: speed only
        self.deter, self.stoch, self.classes, self.unimix = deter, stoch, classes, unimix
        self.stoch_dim = stoch * classes if latent == 'categorical' else stoch
        self.feat_dim = deter + self.stoch_dim
        out_dim = self.stoch_dim if latent == 'categorical' else 2 * stoch    # logits or (mean, std)
        if core == 'block_gru':
            # Nature release: deter, stoch and action each get their own projection inside the cell.
            self.core = nets.BlockGRU(deter, hidden, [deter, self.stoch_dim, act_dim], blocks,
                                      dyn_layers, norm, act, name='core')
        else:
            # V1 / V2 / V3 2023: one dense layer embeds (z_{t-1}, a_{t-1}), then the GRU step.
            self.img_in = nets.MLP(self.stoch_dim + act_dim, 1, hidden, norm, act, name='img_in')
            self.core = nets.NormGRU(deter, hidden, name='core') if core == 'norm_gru' else \
                nets.KerasGRU(deter, hidden, name='core')
        self.prior_mlp = nets.MLP(deter, img_layers, hidden, norm, act, name='prior_mlp')
        self.prior_out = nets.Linear(self.prior_mlp.out_dim, out_dim, name='prior_out')
        self.post_mlp = nets.MLP(deter + embed_dim, obs_layers, hidden, norm, act, name='post_mlp')
        self.post_out = nets.Linear(self.post_mlp.out_dim, out_dim, name='post_out')

    # -- states ------------------------------------------------------------------------------

    def initial(self, batch_size):
        """All-zero carry and latent (every release starts from zeros, not a learned state)."""
        zeros = lambda *shape: tf.zeros([batch_size, *shape])  # noqa: E731
        if self.latent == 'gaussian':
            return dict(deter=zeros(self.deter), stoch=zeros(self.stoch), mean=zeros(self.stoch),
                        std=zeros(self.stoch))
        return dict(deter=zeros(self.deter), stoch=zeros(self.stoch, self.classes),
                    logit=zeros(self.stoch, self.classes))

    def get_feat(self, state):
        """feat = concat(deter, flat stoch): what every head reads. [..., deter + stoch_dim]."""
        stoch = state['stoch']
        if self.latent == 'categorical':
            stoch = tf.reshape(stoch, tf.concat([tf.shape(stoch)[:-2], [self.stoch_dim]], 0))
        return tf.concat([state['deter'], stoch], -1)

    def get_dist(self, state):
        """The latent's distribution, with one batch entry per state ([...] batch shape)."""
        if self.latent == 'gaussian':
            return dists.gaussian_latent(state['mean'], state['std'])
        return tfp.distributions.Independent(dists.OneHotDist(state['logit']), 1)

    def _latent(self, raw, key=None):
        """Raw output [B, out] -> the latent part of a state (sample and its distribution), float32.

        With `key` ([B] int64) the sample's noise comes from the keys (ops.keyed_uniform), otherwise
        from TensorFlow's stateful generator (acting).
        """
        raw = tf.cast(raw, tf.float32)
        if self.latent == 'gaussian':
            mean, std = tf.split(raw, 2, -1)
            std = tf.nn.softplus(std) + self.min_std
            return dict(stoch=dists.keyed_sample(dists.gaussian_latent(mean, std), key),
                        mean=mean, std=std)
        logits = tf.reshape(raw, [-1, self.stoch, self.classes])
        dist = dists.OneHotDist(logits, self.unimix)
        return dict(stoch=dists.keyed_sample(dist, key), logit=dist.logits)

    # -- one step -----------------------------------------------------------------------------

    def img_step(self, prev_state, prev_action, key=None, arranged=None):
        """Prior step: h_t = f(h_{t-1}, z_{t-1}, a_{t-1}), z_t ~ p(z_t | h_t). key: [B] or None."""
        return self.prior(self.core_step(prev_state, prev_action, arranged), key)

    def arranged_core(self):
        """Loop-invariant core weights that a loop over time hands to every step (None: nothing to)."""
        return self.core.arrange(self.compute_dtype) if self.core_kind == 'block_gru' else None

    def core_step(self, prev_state, prev_action, arranged=None):
        """The deterministic part of a step, h_t = f(h_{t-1}, z_{t-1}, a_{t-1}): [B, deter] float32.

        arranged: `self.arranged_core()`, computed once by a loop over time (block GRU only).
        """
        # Actions are divided by their magnitude where it exceeds 1 so that large discrete or
        # unbounded actions cannot blow up the GRU input (as in the Nature release).
        action = tf.cast(prev_action, tf.float32)
        action = action / sg(tf.maximum(1.0, tf.abs(action)))
        dtype = self.compute_dtype
        stoch = tf.cast(tf.reshape(prev_state['stoch'], [-1, self.stoch_dim]), dtype)
        deter, action = tf.cast(prev_state['deter'], dtype), tf.cast(action, dtype)
        if self.core_kind == 'block_gru':
            deter = self.core(deter, [deter, stoch, action], arranged)
        else:
            deter = self.core(deter, self.img_in(tf.concat([stoch, action], -1)))
        return tf.cast(deter, tf.float32)

    def prior(self, deter, key=None):
        """p(z_t | h_t) and a sample of it, for deter [N, deter]: the prior state of h_t."""
        raw = self.prior_out(self.prior_mlp(tf.cast(deter, self.compute_dtype)))
        return dict(deter=deter, **self._latent(raw, key))

    def posterior(self, deter, embed, key=None):
        """q(z_t | h_t, embed_t) and a sample of it, for deter [N, deter]: the posterior state."""
        x = tf.concat([tf.cast(deter, self.compute_dtype), tf.cast(embed, self.compute_dtype)], -1)
        return dict(deter=deter, **self._latent(self.post_out(self.post_mlp(x)), key))

    def reset(self, prev_state, prev_action, is_first):
        """Zero the carry and the previous action where `is_first` [B] starts an episode."""
        keep = 1.0 - tf.cast(is_first, tf.float32)
        init = self.initial(tf.shape(keep)[0])
        prev_state = {k: _select(keep, prev_state[k], init[k]) for k in prev_state}
        return prev_state, prev_action * keep[:, None]

    def obs_step(self, prev_state, prev_action, embed, is_first, key=None):
        """Posterior step. `is_first` [B] resets the carry and the previous action to zero.

        key: [B] int64 or None; the prior and the posterior draw from streams 0 and 1 of it.
        Returns (post, prior).
        """
        prior_key, post_key = (None, None) if key is None else (ops.fold_in(key, 0), ops.fold_in(key, 1))
        deter = self.core_step(*self.reset(prev_state, prev_action, is_first))
        prior = self.prior(deter, prior_key)       # first: unkeyed (acting) noise is drawn in this order
        return self.posterior(deter, embed, post_key), prior

    # -- sequences ----------------------------------------------------------------------------

    def observe(self, embed, action, is_first, state=None, key=None):
        """Filter a batch of sequences. embed [B, T, E], action [B, T, A] (a_{t-1}), is_first [B, T].

        key: [B] int64 per-sequence keys (step t uses fold_in(key, t)), or None for stateful noise.
        Returns (post, prior), each a state dict with tensors [B, T, ...].
        """
        state = self.initial(tf.shape(embed)[0]) if state is None else state
        inputs = (_swap_time(embed), _swap_time(tf.cast(action, tf.float32)), _swap_time(is_first))
        if key is not None:
            steps = tf.range(tf.shape(embed)[1], dtype=tf.int64)
            inputs += (ops.fold_in(key[None, :], steps[:, None]),)               # [T, B]

        arranged = self.arranged_core()

        def step(prev, inp):
            # Only h_t and the posterior feed the next step, so the loop computes only them.
            deter = self.core_step(*self.reset(prev, inp[1], inp[2]), arranged)
            return self.posterior(deter, inp[0], None if key is None else ops.fold_in(inp[3], 1))

        # tf.scan keeps the graph one step long: XLA compiles in seconds instead of minutes.
        post = {k: _swap_time(v) for k, v in tf.scan(step, inputs, state).items()}
        # The prior of every step in one batch, outside the loop: the same values (and, keyed, the
        # same samples, from stream 0 of each step's key) as a per-step obs_step, with a shorter loop.
        prior_key = None if key is None else tf.reshape(_swap_time(ops.fold_in(inputs[3], 0)), [-1])
        prior = self.prior(tf.reshape(post['deter'], [-1, self.deter]), prior_key)
        return post, {k: _unflatten_time(v, post['deter']) for k, v in prior.items()}

    def imagine(self, policy, start, horizon, key=None):
        """Roll the prior forward `horizon` steps from `start` [N] with actions from `policy`.

        policy(state) -> action [N, A]; with `key` ([N] int64) it is called as policy(state, key) and
        step t draws its latent from fold_in(k_t, 0) and its action from fold_in(k_t, 1), where
        k_t = fold_in(key, t). Returns (states, actions) with [N, horizon + 1, ...]:
        states[:, 0] is the start and actions[:, t] is the action taken in states[:, t].
        """
        steps = tf.range(horizon + 1, dtype=tf.int64)[:, None]
        keys = tf.zeros([horizon + 1, 1], tf.int64) if key is None else ops.fold_in(key[None, :], steps)

        def act(state, k):
            return policy(state) if key is None else policy(state, ops.fold_in(k, 1))

        arranged = self.arranged_core()

        def step(prev, k):
            state, action = prev
            state = self.img_step(state, action, None if key is None else ops.fold_in(k, 0), arranged)
            return state, act(state, k)

        first = act(start, keys[0])
        states, actions = ops.scan(step, keys[1:], (start, first), self.imag_unroll)
        states = {k: tf.concat([start[k][:, None], _swap_time(v)], 1) for k, v in states.items()}
        actions = tf.concat([first[:, None], _swap_time(actions)], 1)
        return states, actions

    # -- losses -------------------------------------------------------------------------------

    def kl(self, p, q):
        """KL(p || q) between the latents of two states, summed over the latent dims: [B, T]."""
        return tfp.distributions.kl_divergence(self.get_dist(p), self.get_dist(q))

    def kl_loss(self, post, prior, loss):
        """The KL terms of the world-model loss as `loss.kl_form` names them (see the functions below).

        Returns a dict of loss name -> [B, T] tensor (per step clip) or scalar (clip of the mean).
        """
        form = loss.get('kl_form', 'dyn_rep')   # configs saved before V1/V2 existed lack the key
        if form == 'dyn_rep' and self.latent == 'categorical':
            return dict(zip(('dyn', 'rep'), kl_dyn_rep(post['logit'], prior['logit'], loss.free_nats)))
        if form == 'dyn_rep':
            dyn, rep = self.kl(_sg(post), prior), self.kl(post, _sg(prior))
            return {'dyn': tf.maximum(dyn, loss.free_nats), 'rep': tf.maximum(rep, loss.free_nats)}
        if form == 'balance':
            lhs = self.kl(_sg(post), prior)
            rhs = self.kl(post, _sg(prior))
            return {'kl': kl_balance(lhs, rhs, loss.kl_balance, loss.free_nats, loss.free_avg)}
        if form == 'v1':
            return {'kl': kl_loss_v1(self.kl(post, prior), loss.free_nats)}
        raise ValueError(f"loss.kl_form '{form}' is not one of {sorted(KL_FORMS)}")


KL_FORMS = ('dyn_rep', 'balance', 'v1')
LATENTS = ('categorical', 'gaussian')
CORES = ('block_gru', 'norm_gru', 'gru')


def _sg(state):
    return {k: sg(v) for k, v in state.items()}


def kl_categorical(logit_p, logit_q):
    """KL(p || q) of categoricals given log-probabilities, summed over latents: [B, T, S, C] -> [B, T]."""
    kl = tfp.distributions.kl_divergence(dists.OneHotDist(logit_p), dists.OneHotDist(logit_q))
    return tf.reduce_sum(kl, -1)


def kl_dyn_rep(post_logit, prior_logit, free):
    """DreamerV3 dynamics and representation losses, [B, T] each.

    dyn = max(free, KL(sg(post) || prior)) trains the prior towards the posterior;
    rep = max(free, KL(post || sg(prior))) regularises the posterior. Both KLs are summed over
    the `stoch` latents before the free-nats clip.
    """
    dyn = kl_categorical(sg(post_logit), prior_logit)
    rep = kl_categorical(post_logit, sg(prior_logit))
    return tf.maximum(dyn, free), tf.maximum(rep, free)


def free_nats(kl, free, average):
    """max(kl, free): of every step ([B, T]) or, when `average`, of the batch mean (a scalar).

    DreamerV1 and DreamerV2 clip the mean KL of the batch (`free_avg`), so the whole KL term stops
    training once the average is below `free`; DreamerV3 clips each step.
    """
    return tf.maximum(tf.reduce_mean(kl), free) if average else tf.maximum(kl, free)


def kl_loss_v1(kl, free):
    """DreamerV1: max(mean KL(post || prior), free), one term that trains prior and posterior alike.

    kl: [B, T] Gaussian KL summed over the latent dims -> scalar.
    """
    return free_nats(kl, free, average=True)


def kl_balance(lhs, rhs, balance, free, average):
    """DreamerV2's KL balancing: balance * KL(sg(post) || prior) + (1 - balance) * KL(post || sg(prior)).

    lhs = KL(sg(post) || prior) trains only the prior, rhs = KL(post || sg(prior)) only the posterior;
    both have the value of KL(post || prior), so the loss is that KL while its gradient reaching the
    prior is scaled by `balance` (0.8) and the one reaching the posterior by 1 - balance. The free nats
    clip each side separately, as the release does. [B, T] inputs -> [B, T] or scalar (average).
    """
    return balance * free_nats(lhs, free, average) + (1.0 - balance) * free_nats(rhs, free, average)


def _swap_time(x):
    """[B, T, ...] <-> [T, B, ...]: tf.scan runs over the leading axis."""
    return tf.transpose(x, [1, 0] + list(range(2, len(x.shape))))


def _select(keep, value, init):
    keep = tf.reshape(keep, [-1] + [1] * (len(value.shape) - 1))
    return keep * value + (1.0 - keep) * init


def _stack(states):
    return {k: tf.stack([s[k] for s in states], 1) for k in states[0]}


def _unflatten_time(x, like):
    """[B*T, ...] -> [B, T, ...], with B and T those of `like` [B, T, ...] (the inverse of flatten_time)."""
    out = tf.reshape(x, tf.concat([tf.shape(like)[:2], tf.shape(x)[1:]], 0))
    out.set_shape(like.shape[:2].concatenate(x.shape[1:]))
    return out


def flatten_time(state):
    """[B, T, ...] state -> [B*T, ...] state (imagination starts from every posterior step)."""
    return {k: tf.reshape(v, [-1] + v.shape[2:].as_list()) for k, v in state.items()}
