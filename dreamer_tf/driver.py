"""Env driving: step every training env with one batch of actions, store each step in the replay,
count env and policy steps, and book each finished episode."""

import numpy as np

from dreamer_tf import envs as envlib


def random_actions(act_space, rng, n):
    """Uniform actions for `n` environments: one-hot for discrete spaces, U[-1, 1] otherwise."""
    if act_space.discrete:
        return np.eye(act_space.size, dtype=np.float32)[rng.integers(0, act_space.size, n)]
    return rng.uniform(-1, 1, (n, act_space.size)).astype(np.float32)


def pop_episode_logs(obs):
    """Remove the env's per-episode statistics (`log/<name>`, e.g. Crafter achievements) from a step."""
    return {key[len('log/'):]: float(obs.pop(key)) for key in [k for k in obs if k.startswith('log/')]}


def policy_batch(obs_list, keys):
    """Stack one step dict per environment into the policy's input batch (model keys + is_first)."""
    batch = {k: np.stack([o[k] for o in obs_list]) for k in keys}
    batch['is_first'] = np.array([o['is_first'] for o in obs_list])
    return batch


class Driver:
    """`on_episode(score, length, logs)` hears of each finished episode, its length in env steps."""

    def __init__(self, envs, replay, counters, action_repeat, on_episode):
        self.envs, self.replay, self.counters = envs, replay, counters
        self.action_repeat, self.on_episode = action_repeat, on_episode
        self.act_space = envs[0].act_space
        self.scores = []                 # finished episode returns
        self.running = {}                # worker -> (return, length) so far
        self.obs, self.state = None, None

    def reset(self, initial_state):
        """Start an episode in every env; `initial_state(n)` is the policy's carry for n envs."""
        self.obs = [self._reset(i) for i in range(len(self.envs))]
        self.state = initial_state(len(self.envs))

    def step(self, act):
        """One step of every env with `act(obs list, state) -> (actions [N, A], state)`."""
        action, self.state = act(self.obs, self.state)
        steps = envlib.step_all(self.envs, action)   # env processes step concurrently
        self.obs = [self._env_step(i, action[i], steps[i]) for i in range(len(self.envs))]

    def _reset(self, worker):
        obs = self.envs[worker].reset()
        self._store(worker, obs)
        return obs

    def _store(self, worker, obs, action=None):
        action = np.zeros(self.act_space.size, np.float32) if action is None else action
        self.replay.add({**obs, 'action': np.asarray(action, np.float32)}, worker)

    def _env_step(self, worker, action, obs):
        episode_logs = pop_episode_logs(obs)
        if obs['is_first']:
            # A restarted env process: its partial episode is dropped, the replay closes the fragment.
            self.running.pop(worker, None)
            self._store(worker, obs)
            return obs
        self._store(worker, obs, action)
        self.counters.policy_steps.assign_add(1)
        self.counters.env_steps.assign_add(self.action_repeat)
        ret, length = self.running.get(worker, (0.0, 0))
        ret, length = ret + float(obs['reward']), length + 1
        self.running[worker] = (ret, length)
        if obs['is_last']:
            del self.running[worker]
            self.counters.episodes.assign_add(1)
            self.scores.append(ret)
            self.on_episode(ret, length * self.action_repeat, episode_logs)
            return self._reset(worker)
        return obs


def eval_scores(env, policy, initial_state, keys, episodes):
    """Returns of `episodes` episodes with `policy(batch, state, 'eval')`, one env at a time."""
    scores = []
    for _ in range(episodes):
        obs, state, score = env.reset(), initial_state(1), 0.0
        while True:
            action, state = policy(policy_batch([obs], keys), state, 'eval')
            obs = env.step(action.numpy()[0])
            score = 0.0 if obs['is_first'] else score + float(obs['reward'])  # restarted env
            if obs['is_last']:
                break
        scores.append(score)
    return scores
