"""Dreamer 4's offline data: DMC cartpole vision episodes from scripted and random policies, written in
the library's replay episode format (replay.Replay, one .npz per episode) and read back as windows.

Each step holds: image [H, W, 3] uint8, action [A] (one-hot of the force level that led to this frame;
zeros on the first step and in unlabelled episodes), has_action (1.0 where `action` is known), reward,
is_first, is_last, is_terminal. Episode `index` fixes its env seed, policy and labelling, so a collection
that was killed continues where its files end and yields the same data.
"""

import glob
import os

import numpy as np

from dreamer_tf.dreamer4.imagine import action_values, discretise
from dreamer_tf.replay import Replay

# Gains of the hand-written balancing controller (hinge angle, hinge velocity, cart position, cart
# velocity); positive force pushes the cart under a pole falling that way.
GAINS = (10.0, 2.0, 0.5, 1.0)


def balance_force(physics):
    """A PD balancing controller on the physics state (not on pixels): force in [-1, 1]."""
    qpos, qvel = physics.named.data.qpos, physics.named.data.qvel
    state = (qpos['hinge_1'][0], qvel['hinge_1'][0], qpos['slider'][0], qvel['slider'][0])
    return float(np.clip(sum(g * s for g, s in zip(GAINS, state)), -1.0, 1.0))


def episode_policy(index, noise, random):
    """Episode `index`'s policy: cycles over the controller at each noise std, then `random` uniform
    episodes. -> ('scripted', std) or ('random', None)."""
    slot = index % (len(noise) + random)
    return ('scripted', float(noise[slot])) if slot < len(noise) else ('random', None)


def labelled_episodes(count, fraction, seed):
    """The training episodes that keep their actions: a seeded choice of ceil(fraction * count) (>= 1)."""
    chosen = np.random.default_rng(seed).permutation(count)[:max(1, int(np.ceil(fraction * count)))]
    return set(int(i) for i in chosen)


def episode_files(directory):
    """The finished episode files of a replay directory, oldest first (temporary files never match)."""
    return sorted(glob.glob(os.path.join(directory, '*.npz')))


def choose_force(kind, std, physics, rng):
    """The continuous force of one step of the given policy kind."""
    if kind == 'random':
        return float(rng.uniform(-1.0, 1.0))
    return float(np.clip(balance_force(physics) + std * rng.normal(), -1.0, 1.0))


def run_episode(env, policy, labelled, actions, rng, add):
    """One episode through `add(step)`; the env gets the discretised level, the data its one-hot.
    Returns the episode return."""
    kind, std = policy
    levels = action_values(actions)
    physics = env.env._physics   # the controller reads the true state; the data keeps only pixels
    step, total = env.reset(), 0.0
    add({**step, 'action': np.zeros(actions, np.float32), 'has_action': np.float32(0.0)})
    while not step['is_last']:
        index = discretise(choose_force(kind, std, physics, rng), actions)
        step = env.step(np.array([levels[index]], np.float32))
        total += float(step['reward'])
        onehot = np.eye(actions, dtype=np.float32)[index] * float(labelled)
        add({**step, 'action': onehot, 'has_action': np.float32(labelled)})
    return total


def env_config(config):
    """The library env adapter's config of the data task: vision at the tokenizer's frame size."""
    spec = config.data
    return {'suite': 'dmc', 'task': spec.task, 'obs': 'vision', 'size': list(config.tokenizer.image),
            'action_repeat': spec.action_repeat, 'time_limit': spec.length}


def collect(config, data_dir, log=print):
    """Write the missing train then held-out episodes; returns [(split, index, policy, return)]."""
    from dreamer_tf.envs import make_env
    spec = config.data
    labelled = labelled_episodes(spec.episodes, spec.labelled, config.seed)
    plan = [('train', i) for i in range(spec.episodes)] + [('heldout', i) for i in range(spec.heldout)]
    results = []
    for split, index in plan:
        directory = os.path.join(data_dir, split)
        if index < len(episode_files(directory)):
            continue
        offset = 0 if split == 'train' else spec.episodes
        seed = config.seed * 100_003 + offset + index
        replay = Replay(1, 4 * spec.length, directory, seed=seed)
        policy = episode_policy(offset + index, spec.noise, spec.random)
        with make_env(env_config(config), seed=seed) as env:
            # Held-out episodes keep their actions: open-loop evaluation feeds the true ones.
            score = run_episode(env, policy, split == 'heldout' or index in labelled, config.actions,
                                np.random.default_rng(seed), replay.add)
        results.append((split, index, policy, score))
        log(f'[data] {split} episode {index}: {policy[0]} {policy[1] or ""} return {score:.1f}')
    return results


def load_episodes(directory):
    """Every episode file of a directory as a dict of arrays [T, ...]."""
    episodes = []
    for path in episode_files(directory):
        with open(path, 'rb') as file, np.load(file, allow_pickle=False) as data:
            episodes.append({key: data[key] for key in data.files})
    return episodes


def sample_windows(episodes, batch, length, rng):
    """`batch` windows of `length` steps, each inside one uniformly chosen episode: {key: [B, T, ...]}."""
    rows = []
    for _ in range(batch):
        episode = episodes[rng.integers(len(episodes))]
        start = rng.integers(len(episode['reward']) - length + 1)
        rows.append({key: value[start:start + length] for key, value in episode.items()})
    return {key: np.stack([row[key] for row in rows]) for key in rows[0]}
