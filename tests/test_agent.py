"""World-model losses and the agent's update, acting and bookkeeping, eager with the debug config."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces

from dreamer_tf import config as configlib
from dreamer_tf import framework
from dreamer_tf.agent import Agent, Unscaled
from dreamer_tf.envs import ActionSpec
from dreamer_tf.world_model import WorldModel

CONFIG = configlib.load('dreamerv3', ['debug'])
VECTOR = 5

SETUPS = {
    'vector-continuous': ({'vector': spaces.Box(-np.inf, np.inf, (VECTOR,), np.float32)},
                          ActionSpec(discrete=False, size=2)),
    'image-discrete': ({'image': spaces.Box(0, 255, (64, 64, 3), np.uint8)},
                       ActionSpec(discrete=True, size=3)),
}


def make_batch(obs_space, act_space, batch=2, length=4, seed=0):
    """A random replay batch [B, 1 + T]: one context step, then T steps that get losses."""
    rng = np.random.default_rng(seed)
    shape = (batch, 1 + length)
    data = {}
    if 'vector' in obs_space:
        data['vector'] = rng.standard_normal(shape + (VECTOR,)).astype(np.float32)
    if 'image' in obs_space:
        data['image'] = rng.integers(0, 256, shape + (64, 64, 3)).astype(np.uint8)
    if act_space.discrete:
        data['action'] = np.eye(act_space.size, dtype=np.float32)[
            rng.integers(0, act_space.size, shape)]
    else:
        data['action'] = rng.uniform(-1, 1, shape + (act_space.size,)).astype(np.float32)
    data['reward'] = rng.standard_normal(shape).astype(np.float32)
    data['is_first'] = np.zeros(shape, bool)
    data['is_first'][:, 0] = True
    data['is_last'] = np.zeros(shape, bool)
    data['is_terminal'] = np.zeros(shape, bool)
    return data


def as_tensors(data):
    return {k: tf.constant(v) for k, v in data.items()}


def snapshot(variables):
    return [v.numpy().copy() for v in variables]


# ---------------------------------------------------------------------------------------------
# World model
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('setup', list(SETUPS))
def test_world_model_loss_shapes(setup):
    obs_space, act_space = SETUPS[setup]
    wm = WorldModel(CONFIG, obs_space, act_space.size)
    B, T = 2, 4
    losses, post, metrics = wm.loss(as_tensors(make_batch(obs_space, act_space, B, T)))
    # replay_context = 1: the context step seeds the carry and gets no loss, so T columns.
    assert CONFIG.replay_context == 1
    assert set(losses) == {'dyn', 'rep', 'rew', 'con'} | set(obs_space)
    for name, value in losses.items():
        assert value.shape == (B, T), (name, value.shape)
        assert value.dtype == tf.float32
        assert np.isfinite(value.numpy()).all(), name
    assert post['deter'].shape == (B, T, CONFIG.rssm.deter)
    assert post['stoch'].shape == (B, T, CONFIG.rssm.stoch, CONFIG.rssm.classes)
    assert losses['dyn'].numpy().min() >= CONFIG.loss.free_nats
    assert set(metrics) == {'post_ent', 'prior_ent'}


def seeded_losses(wm, data, seed=3):
    # Resetting the global seed makes the posterior samples repeat in eager mode.
    tf.random.set_seed(seed)
    losses, _, _ = wm.loss(as_tensors(data))
    return {k: v.numpy() for k, v in losses.items()}


def test_world_model_loss_timeline():
    obs_space, act_space = SETUPS['vector-continuous']
    wm = WorldModel(CONFIG, obs_space, act_space.size)
    # The zero-initialised reward output gives every target the same loss log(255); make it
    # informative so a moved reward shows up.
    kernel = wm.reward.out.kernel
    kernel.assign(np.random.default_rng(2).standard_normal(kernel.shape).astype(np.float32))
    data = make_batch(obs_space, act_space)
    base = seeded_losses(wm, data)
    for name, value in seeded_losses(wm, data).items():
        np.testing.assert_array_equal(value, base[name], err_msg=name)   # the seed repeats
    # Reward and terminal flag of the context step do not feed the carry and have no loss column.
    changed = {k: v.copy() for k, v in data.items()}
    changed['reward'][:, 0] += 100.0
    changed['is_terminal'][:, 0] = True
    for name, value in seeded_losses(wm, changed).items():
        np.testing.assert_array_equal(value, base[name], err_msg=name)
    # The reward of step 1 is scored in loss column 0, and nothing else moves.
    changed = {k: v.copy() for k, v in data.items()}
    changed['reward'][1, 1] += 100.0
    moved = seeded_losses(wm, changed)
    for name, value in moved.items():
        if name == 'rew':
            diff = value != base[name]
            assert diff[1, 0] and diff.sum() == 1
        else:
            np.testing.assert_array_equal(value, base[name], err_msg=name)


def test_continue_loss_target_folds_in_the_discount():
    obs_space, act_space = SETUPS['vector-continuous']
    wm = WorldModel(CONFIG, obs_space, act_space.size)
    data = make_batch(obs_space, act_space)
    live = seeded_losses(wm, data)
    dead_data = {k: v.copy() for k, v in data.items()}
    dead_data['is_terminal'][0, 3] = True                          # loss column 3 - 1 = 2
    dead = seeded_losses(wm, dead_data)
    for name in live:
        if name != 'con':
            np.testing.assert_array_equal(dead[name], live[name], err_msg=name)
    mask = np.zeros_like(live['con'], bool)
    mask[0, 2] = True
    np.testing.assert_array_equal(dead['con'][~mask], live['con'][~mask])
    # Terminal: target 0, so the loss is -log(1 - p); this gives p of the continue head there.
    nll_dead = float(dead['con'][0, 2])
    p = 1.0 - np.exp(-nll_dead)
    # Not terminal: target gamma = 1 - 1/333, Bernoulli cross-entropy with the same p.
    gamma = 1.0 - 1.0 / CONFIG.behavior.horizon
    assert CONFIG.behavior.horizon == 333
    expected = -(gamma * np.log(p) + (1.0 - gamma) * np.log(1.0 - p))
    np.testing.assert_allclose(live['con'][0, 2], expected, rtol=1e-4)
    assert 0.01 < p < 0.99


# ---------------------------------------------------------------------------------------------
# Agent: two updates (eager, no tf.function)
# ---------------------------------------------------------------------------------------------

LOSS_KEYS = {'dyn', 'rep', 'rew', 'con', 'actor', 'critic', 'replay_critic', 'total'}
SLOW_RATE = 0.02


@pytest.fixture(scope='module', params=list(SETUPS))
def trained(request):
    """Runs two updates and records what the tests below check."""
    keras.utils.set_random_seed(0)          # the same weights and noise in every run of the file
    obs_space, act_space = SETUPS[request.param]
    agent = Agent(CONFIG, obs_space, act_space)
    data = as_tensors(make_batch(obs_space, act_space))
    record = {'agent': agent, 'obs_space': obs_space}
    record['params0'] = snapshot(agent.train_vars)
    record['slow0'] = snapshot(agent.ac.slow_critic.weights)
    record['metrics1'] = {k: v.numpy() for k, v in agent.train_step(data).items()}
    record['params1'] = snapshot(agent.train_vars)
    record['critic1'] = snapshot(agent.ac.critic.weights)
    record['slow1'] = snapshot(agent.ac.slow_critic.weights)
    # Move the slow critic away from the critic so the EMA rate is visible in one update.
    rng = np.random.default_rng(1)
    for var in agent.ac.slow_critic.weights:
        var.assign(var + 0.1 * rng.standard_normal(var.shape).astype(np.float32))
    record['slow_before2'] = snapshot(agent.ac.slow_critic.weights)
    record['metrics2'] = {k: v.numpy() for k, v in agent.train_step(data).items()}
    record['params2'] = snapshot(agent.train_vars)
    record['critic2'] = snapshot(agent.ac.critic.weights)
    record['slow2'] = snapshot(agent.ac.slow_critic.weights)
    return record


def test_train_step_returns_finite_metrics_with_every_loss(trained):
    obs_keys = set(trained['obs_space'])
    for metrics in (trained['metrics1'], trained['metrics2']):
        expected = {f'loss/{k}' for k in LOSS_KEYS | obs_keys}
        assert expected <= set(metrics)
        for name, value in metrics.items():
            assert np.all(np.isfinite(value)), (name, value)
            assert np.ndim(value) == 0, name


def test_warmup_makes_the_first_update_zero_and_the_second_not(trained):
    assert CONFIG.opt.warmup == 1000
    # lr_t = lr * min(1, (t - 1) / warmup): 0 for the first update, 4e-5 / 1000 for the second.
    assert trained['metrics1']['lr'] == 0.0
    np.testing.assert_allclose(trained['metrics2']['lr'], 4e-5 / 1000, rtol=1e-6)
    for before, after in zip(trained['params0'], trained['params1']):
        np.testing.assert_array_equal(after, before)
    # Every module learns something on the second update. Per variable this is not robust: at lr 4e-8
    # a variable whose update rounds away in float32 stays bit-equal (41 of 55 moved in one run).
    path = {id(v): p for p, v in trained['agent'].weights_by_path.items()}
    moved = {}
    for var, a, b in zip(trained['agent'].train_vars, trained['params1'], trained['params2'], strict=True):
        parts = path[id(var)].split('/')
        module = '/'.join(parts[:2]) if parts[0] == 'wm' else parts[0]   # wm/encoder ... actor, critic
        moved[module] = moved.get(module, False) or not np.array_equal(a, b)
    # (A head's hidden layers get no gradient yet: its output layer starts at zero and moved only now.)
    assert all(moved.values()) and len(moved) >= 7, moved


def test_slow_critic_is_an_ema_of_the_critic(trained):
    # Update 1: the critic did not move and the slow critic starts as its copy, so both agree.
    for slow, critic in zip(trained['slow1'], trained['critic1']):
        np.testing.assert_allclose(slow, critic, rtol=1e-6, atol=1e-7)
    # Update 2: slow <- 0.98 * slow + 0.02 * critic, with the critic after its own update.
    for old, critic, new in zip(trained['slow_before2'], trained['critic2'], trained['slow2']):
        expected = (1.0 - SLOW_RATE) * old.astype(np.float64) + SLOW_RATE * critic
        np.testing.assert_allclose(new, expected, rtol=1e-5, atol=1e-7)
        assert not np.allclose(new, old, rtol=0, atol=1e-4)
    agent = trained['agent']
    slow_ids = {id(v) for v in agent.ac.slow_critic.weights}
    assert not slow_ids & {id(v) for v in agent.train_vars}


def test_laprop_holds_the_actor_for_run_actor_after_updates():
    # run.actor_after with the LaProp optimiser (it was silently ignored): the actor's weights stay as
    # they are for 2 updates, the model and the critic move from the first (warm-up 0 so they can).
    obs_space, act_space = SETUPS['vector-continuous']
    agent = Agent(CONFIG.update({'run.actor_after': 2, 'opt.warmup': 0}), obs_space, act_space)
    grads = [tf.ones_like(v) for v in agent.train_vars]
    for update in (1, 2, 3):
        before = {name: snapshot(variables) for name, variables in agent.var_groups.items()}
        agent.apply_gradients(grads)
        moved = {name: any(not np.array_equal(x, y) for x, y in zip(snapshot(variables), before[name]))
                 for name, variables in agent.var_groups.items()}
        assert moved == {'model': True, 'actor': update == 3, 'critic': True}, (update, moved)
    assert int(agent.opt.step.numpy()) == 3


# ---------------------------------------------------------------------------------------------
# Agent: acting and bookkeeping
# ---------------------------------------------------------------------------------------------

def policy_obs(obs_space, n, seed=0):
    rng = np.random.default_rng(seed)
    obs = {'is_first': tf.constant(np.ones(n, bool))}
    if 'vector' in obs_space:
        obs['vector'] = tf.constant(rng.standard_normal((n, VECTOR)).astype(np.float32))
    if 'image' in obs_space:
        obs['image'] = tf.constant(rng.integers(0, 256, (n, 64, 64, 3)).astype(np.uint8))
    return obs


def actor_params(agent, state):
    """Raw outputs of the actor's last layer at the policy state's latent, in numpy.

    Written out layer by layer (MLP: Linear -> RMSNorm -> SiLU) from the weights, so the test does
    not go through the head's own call.
    """
    x = agent.wm.rssm.get_feat(state['latent']).numpy().astype(np.float64)
    mlp = agent.ac.actor.mlp
    for linear, norm in zip(mlp.linears, mlp.norms):
        x = x @ linear.kernel.numpy() + linear.bias.numpy()
        x = x / np.sqrt(np.mean(x ** 2, -1, keepdims=True) + 1e-4) * norm.scale.numpy()
        x = x / (1.0 + np.exp(-x))
    out = agent.ac.actor.out
    return x @ out.kernel.numpy() + out.bias.numpy()


def test_policy_continuous_actions_are_clipped_samples():
    obs_space, act_space = SETUPS['vector-continuous']
    agent = Agent(CONFIG, obs_space, act_space)
    n = 64
    obs, state = policy_obs(obs_space, n), agent.initial_state(n)
    action, new_state = agent.policy(obs, state, 'train')
    action = action.numpy()
    assert action.shape == (n, act_space.size)
    assert np.abs(action).max() <= 1.0
    # At init the std is 0.9 * sigmoid(2) + 0.1 = 0.89, so about a quarter of the samples fall
    # outside [-1, 1] and must have been clipped onto the bounds.
    assert (np.abs(action) == 1.0).sum() > 5
    np.testing.assert_array_equal(new_state['action'].numpy(), action)
    assert new_state['latent']['deter'].shape == (n, CONFIG.rssm.deter)
    again, _ = agent.policy(obs, state, 'train')
    assert not np.array_equal(again.numpy(), action)
    # Eval takes the actor's mode tanh(mean) at the new latent: no sampling noise on top of the
    # latent's own sample, and inside the bounds.
    first, first_state = agent.policy(obs, state, 'eval')
    mean = np.tanh(actor_params(agent, first_state)[..., :act_space.size])
    np.testing.assert_allclose(first.numpy(), mean, rtol=1e-5, atol=1e-6)
    assert np.abs(first.numpy()).max() < 1.0


def test_policy_discrete_actions_are_one_hot():
    obs_space, act_space = SETUPS['image-discrete']
    agent = Agent(CONFIG, obs_space, act_space)
    n = 4
    obs, state = policy_obs(obs_space, n), agent.initial_state(n)
    for mode in ('train', 'eval'):
        action = agent.policy(obs, state, mode)[0].numpy()
        assert action.shape == (n, act_space.size), mode
        np.testing.assert_allclose(np.sort(action, -1), np.tile([0.0, 0.0, 1.0], (n, 1)),
                                   atol=1e-6, err_msg=mode)
    # Eval takes the most likely action of the actor at the new latent.
    first, first_state = agent.policy(obs, state, 'eval')
    logits = actor_params(agent, first_state)
    np.testing.assert_array_equal(first.numpy().argmax(-1), logits.argmax(-1))


def test_policy_eval_is_deterministic_given_the_seed():
    # The posterior latent is sampled even in eval mode (as in the Nature release's policy), so
    # eval actions repeat only when the random stream does.
    obs_space, act_space = SETUPS['vector-continuous']
    agent = Agent(CONFIG, obs_space, act_space)
    obs, state = policy_obs(obs_space, 8), agent.initial_state(8)
    actions = []
    for _ in range(2):
        tf.random.set_seed(4)
        actions.append(agent.policy(obs, state, 'eval')[0].numpy())
    np.testing.assert_array_equal(actions[0], actions[1])


@pytest.mark.parametrize('setup', list(SETUPS))
def test_summary_counts_every_trainable_parameter_once(setup):
    agent = Agent(CONFIG, *SETUPS[setup])
    counts = agent.summary()
    modules = [agent.wm, agent.ac.actor, agent.ac.critic]
    variables = {id(v): v for m in modules for v in m.trainable_variables}
    assert counts['total'] == sum(int(np.prod(v.shape)) for v in variables.values())
    assert counts['total'] == sum(v for k, v in counts.items() if k != 'total')
    assert counts['total'] == sum(int(np.prod(v.shape)) for v in agent.train_vars)
    assert len({id(v) for v in agent.train_vars}) == len(agent.train_vars)


@pytest.mark.parametrize('setup', list(SETUPS))
def test_weights_by_path_covers_every_network_variable(setup):
    agent = Agent(CONFIG, *SETUPS[setup])
    paths = agent.weights_by_path
    modules = {'wm': agent.wm, 'actor': agent.ac.actor, 'critic': agent.ac.critic,
               'slow_critic': agent.ac.slow_critic}
    for prefix, module in modules.items():
        mine = {p: v for p, v in paths.items() if p.startswith(prefix + '/')}
        assert len(mine) == len(module.weights), prefix
        assert {id(v) for v in mine.values()} == {id(v) for v in module.weights}, prefix
    assert len(paths) == sum(len(m.weights) for m in modules.values())
    # The slow critic mirrors the critic path for path, so checkpoints pair them up.
    critic = sorted(p[len('critic/'):] for p in paths if p.startswith('critic/'))
    slow = sorted(p[len('slow_critic/'):] for p in paths if p.startswith('slow_critic/'))
    assert critic == slow


# ---------------------------------------------------------------------------------------------
# Keyed noise: the update is a function of (weights, batch, keys)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('setup', list(SETUPS))
def test_keyed_loss_is_repeatable_and_ignores_the_stateful_generator(setup):
    obs_space, act_space = SETUPS[setup]
    agent = Agent(CONFIG, obs_space, act_space)
    data = as_tensors(make_batch(obs_space, act_space, batch=3, length=5))
    data['key'] = tf.constant([11, 22, 33], tf.int64)
    retnorm = snapshot(agent.ac.retnorm.variables)
    tf.random.set_seed(1)
    first, metrics = agent.loss(data)
    for var, value in zip(agent.ac.retnorm.variables, retnorm):
        var.assign(value)                       # the loss moves the normaliser; start equal
    tf.random.set_seed(2)
    tf.random.uniform([7])                      # a different stateful stream
    second, _ = agent.loss(data)
    assert float(first) == float(second)
    # Other keys give other samples, hence another loss.
    for var, value in zip(agent.ac.retnorm.variables, retnorm):
        var.assign(value)
    data['key'] = tf.constant([12, 22, 33], tf.int64)
    assert float(agent.loss(data)[0]) != float(first)
    assert np.isfinite(float(metrics['loss/total']))


def test_keyed_world_model_losses_do_not_depend_on_how_the_batch_is_split():
    obs_space, act_space = SETUPS['vector-continuous']
    agent = Agent(CONFIG, obs_space, act_space)
    data = as_tensors(make_batch(obs_space, act_space, batch=4, length=5, seed=3))
    key = tf.constant([5, 6, 7, 8], tf.int64)
    whole, post, _ = agent.wm.loss(data, key=key)
    for part in (slice(0, 1), slice(1, 4)):
        rows = {k: v[part] for k, v in data.items()}
        losses, part_post, _ = agent.wm.loss(rows, key=key[part])
        for name in whole:
            np.testing.assert_allclose(losses[name].numpy(), whole[name].numpy()[part], rtol=1e-5,
                                       atol=1e-6, err_msg=name)
        # The same categories are drawn (the straight-through term differs by float rounding only).
        np.testing.assert_array_equal(np.argmax(part_post['stoch'].numpy(), -1),
                                      np.argmax(post['stoch'].numpy()[part], -1))


# ---------------------------------------------------------------------------------------------
# float16 compute with dynamic loss scaling
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def float16_policy():
    import keras
    keras.mixed_precision.set_global_policy('mixed_float16')
    yield
    keras.mixed_precision.set_global_policy('float32')


def test_float16_update_scales_the_loss_and_skips_overflows(float16_policy):
    obs_space, act_space = SETUPS['vector-continuous']
    config = configlib.load('dreamerv3', ['debug'], ['precision=float16'])
    agent = framework.make_agent(config, obs_space, act_space)
    assert isinstance(agent.loss_scale, framework.ScaledLoss) and agent.opt.params[0].dtype == tf.float32
    data = as_tensors(make_batch(obs_space, act_space))
    data['key'] = tf.constant([1, 2], tf.int64)
    # Loss scaling starts high (2^15) and halves on every overflow; overflowed updates change no
    # weight and are not faults. Within a few halvings an update goes through.
    scale, applied = 2.0 ** 15, None
    for _ in range(30):
        weights = snapshot(agent.train_vars)
        metrics = agent.train_step(data)
        assert float(metrics['skipped']) == 0.0
        if float(metrics['overflow']):
            scale /= 2
            assert float(metrics['loss_scale']) == scale
            for before, var in zip(weights, agent.train_vars):
                np.testing.assert_array_equal(before, var.numpy())
            continue
        applied = metrics
        break
    assert applied is not None, 'every update overflowed'
    assert float(applied['loss_scale']) == scale and np.isfinite(float(applied['loss/total']))
    assert int(agent.opt.step.numpy()) == 1
    # A scale of 1e38 overflows even float32 gradients: skipped as an overflow, scale halved.
    agent.loss_scale.scale.assign(1e38)
    metrics = agent.train_step(data)
    assert float(metrics['overflow']) == 1.0 and float(metrics['skipped']) == 0.0
    assert float(agent.loss_scale.scale.numpy()) == pytest.approx(5e37)
    assert int(agent.opt.step.numpy()) == 1


def test_float32_and_bfloat16_have_no_loss_scale():
    obs_space, act_space = SETUPS['vector-continuous']
    for precision in ('float32', 'bfloat16'):
        config = configlib.load('dreamerv3', ['debug'], [f'precision={precision}'])
        agent = framework.make_agent(config, obs_space, act_space)
        assert isinstance(agent.loss_scale, Unscaled)
        assert not [v for v in agent.variables if 'loss_scale' in v.name]
    # The identity: loss and gradients pass unchanged, and every non-finite update is a skip.
    loss, grads = tf.constant(3.5), [tf.constant([1.0, -2.0])]
    assert Unscaled().scale_loss(loss) is loss and Unscaled().unscale(grads) is grads
    skipped, metrics = Unscaled().skipped(tf.constant(False))
    assert float(skipped) == 1.0 and metrics == {}


# ---------------------------------------------------------------------------------------------
# Structure equal to the authors' release (dreamerv3 e3f0224)
# ---------------------------------------------------------------------------------------------

def linear(fan_in, units):
    return fan_in * units + units


def mlp(fan_in, layers, units):
    """`layers` x (Linear + RMSNorm scale)."""
    return sum(linear(fan_in if i == 0 else units, units) + units for i in range(layers))


def conv_stages(channels):
    """5x5 convs between consecutive channel counts, each followed by an RMSNorm scale."""
    return sum(25 * a * b + b + b for a, b in zip(channels[:-1], channels[1:]))


def release_counts(size, obs, actions, discrete):
    """Trainable parameters per module of the Nature release, from its layer list (SPEC.md).

    size: (deter, hidden, classes, units, depth); obs: ('image', resolution, channels) or
    ('vector', dims). The RSSM has 32 latents and 8 blocks, img_layers 2, obs_layers 1, dyn_layers 1.
    """
    deter, hidden, classes, units, depth = size
    stoch, chans = 32 * classes, [depth * m for m in (2, 3, 4, 4)]
    feat = deter + stoch
    if obs[0] == 'image':
        _, res, ch = obs
        cells = (res // 16) ** 2 * chans[-1]                   # minres x minres x C
        encoder, embed = conv_stages([ch] + chans), cells
        decoder = deter * cells // 8 + cells                  # 8 blocks [deter/8, cells/8] + bias
        decoder += linear(stoch, 2 * units) + 2 * units + linear(2 * units, cells) + chans[-1]
        decoder += conv_stages(chans[::-1]) + 25 * chans[0] * ch + ch
    else:
        encoder, embed = mlp(obs[1], 3, units), units
        decoder = mlp(feat, 3, units) + linear(units, obs[1])
    rssm = sum(linear(d, hidden) + hidden for d in (deter, stoch, actions))   # the cell's inputs
    rssm += (deter // 8 + 3 * hidden) * deter + deter + deter                 # block hidden + norm
    rssm += 3 * deter * deter // 8 + 3 * deter                               # block gates
    rssm += mlp(deter, 2, hidden) + linear(hidden, stoch)                     # prior
    rssm += mlp(deter + embed, 1, hidden) + linear(hidden, stoch)             # posterior
    counts = {'encoder': encoder, 'rssm': rssm, 'decoder': decoder,
              'reward': mlp(feat, 1, units) + linear(units, 255),
              'cont': mlp(feat, 1, units) + linear(units, 1),
              'actor': mlp(feat, 3, units) + linear(units, actions if discrete else 2 * actions),
              'critic': mlp(feat, 3, units) + linear(units, 255)}
    counts['total'] = sum(counts.values())
    return counts


SIZES = {'size1m': (512, 64, 4, 64, 4), 'size12m': (2048, 256, 16, 256, 16),
         'size50m': (4096, 512, 32, 512, 32)}
RGB64, GRAY96 = ('image', 64, 3), ('image', 96, 1)
# (overlays, observation, actions, discrete, the release's decoder count, its total or None)
RELEASE = {
    'atari100k-size1m': (['atari100k', 'size1m'], RGB64, 6, True, 80_595, 686_456),
    'atari100k-size12m': (['atari100k', 'size12m'], RGB64, 6, True, 1_272_003, None),
    'dmc_vision-size12m': (['dmc_vision', 'size12m'], RGB64, 6, False, 1_272_003, None),
    'crafter-size12m': (['crafter', 'size12m'], RGB64, 17, True, 1_272_003, None),
    'atari-size12m': (['atari', 'size12m'], GRAY96, 18, True, 2_256_001, None),
    'atari100k-size50m': (['atari100k', 'size50m'], RGB64, 6, True, 5_076_355, None),
    'dmc_proprio-size1m': (['dmc_proprio', 'size1m'], ('vector', 5), 1, False, None, 637_446),
}


@pytest.mark.parametrize('case', list(RELEASE))
def test_parameters_per_module_equal_the_release(case):
    overlays, obs, actions, discrete, decoder, total = RELEASE[case]
    expected = release_counts(SIZES[overlays[1]], obs, actions, discrete)
    # The layer list reproduces the release's own figures (issue 13, SPEC.md) ...
    assert decoder is None or expected['decoder'] == decoder
    assert total is None or expected['total'] == total
    # ... and every module of ours has exactly its count.
    if obs[0] == 'image':
        space = {'image': spaces.Box(0, 255, (obs[1], obs[1], obs[2]), np.uint8)}
    else:
        space = {'vector': spaces.Box(-np.inf, np.inf, (obs[1],), np.float32)}
    agent = Agent(configlib.load('dreamerv3', overlays), space, ActionSpec(discrete, actions))
    assert agent.summary() == expected


def test_bspace_zero_is_the_dense_projection_on_feat():
    # Issue 13's "ours" column: one Linear(feat, 4 * 4 * 16) + its norm instead of the release's.
    config = configlib.load('dreamerv3', ['atari100k', 'size1m'], ['decoder.bspace=0'])
    agent = Agent(config, {'image': spaces.Box(0, 255, (64, 64, 3), np.uint8)}, ActionSpec(True, 6))
    dense = linear(512 + 128, 4 * 4 * 16) + 16
    assert agent.summary()['decoder'] == 178_387 == 80_595 - 66_320 + dense


# ---------------------------------------------------------------------------------------------
# Gradient routing of the replay value loss (loss.repval_grad)
# ---------------------------------------------------------------------------------------------

def replay_value_gradients(agent, data):
    """Gradients of the replay value loss alone w.r.t. encoder, RSSM and critic (keyed noise)."""
    keys = tf.constant([5, 6], tf.int64)
    groups = {'encoder': agent.wm.encoder, 'rssm': agent.wm.rssm, 'critic': agent.ac.critic}
    with tf.GradientTape() as tape:
        _, post, _ = agent.wm.loss(data, key=keys)
        rest = {k: v[:, CONFIG.replay_context:] for k, v in data.items()}
        losses, _ = agent.ac.loss(agent.wm, post, rest, key=keys)
        loss = tf.reduce_mean(losses['replay_critic'])
    grads = tape.gradient(loss, {k: m.trainable_variables for k, m in groups.items()})
    return {k: [np.zeros(v.shape) if g is None else g.numpy()
                for g, v in zip(grads[k], groups[k].trainable_variables)] for k in groups}


@pytest.mark.parametrize('setup', list(SETUPS))
def test_replay_value_loss_trains_the_world_model_only_with_repval_grad(setup):
    obs_space, act_space = SETUPS[setup]
    assert CONFIG.loss.repval_grad is True                       # dreamerv3, as in the release
    on = Agent(CONFIG, obs_space, act_space)
    off = Agent(CONFIG.update({'loss.repval_grad': False}), obs_space, act_space)
    # The critic's output layer starts at zero, which would block every gradient into its input.
    out = on.ac.critic.out.kernel
    out.assign(0.1 * np.random.default_rng(0).standard_normal(out.shape).astype(np.float32))
    for path, var in off.weights_by_path.items():
        var.assign(on.weights_by_path[path])
    data = as_tensors(make_batch(obs_space, act_space))
    on, off = replay_value_gradients(on, data), replay_value_gradients(off, data)
    for module in ('encoder', 'rssm'):
        # With the key the loss reaches the encoder and the RSSM through the replayed states.
        assert sum(np.abs(g).sum() for g in on[module]) > 0, module
        assert all(np.all(g == 0) for g in off[module]), module
    # The critic's own gradient from the loss is the same either way (same forward pass).
    assert any(np.abs(g).sum() > 0 for g in on['critic'])
    for a, b in zip(on['critic'], off['critic']):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
