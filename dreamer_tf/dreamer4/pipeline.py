"""Dreamer 4's training pipeline in one logdir, phase by phase, each resumable:

    data       offline episodes (data.py) -> <logdir>/data/{train,heldout}
    tokenizer  masked-autoencoding tokenizer on all training frames
    dynamics   shortcut forcing on the frozen tokenizer's latents (no-action token where unlabelled)
    bc         policy (multi-token BC, labelled episodes) + reward heads on the frozen dynamics' agent token
    rl         PMPO in imagination with the world model frozen, reverse KL to the frozen BC policy

Each phase keeps its checkpoints in <logdir>/<phase>/ (library checkpoint code) and writes <phase>/done
with its evaluation when it finishes; a rerun restores finished phases and skips them, and continues
an unfinished one from its newest checkpoint. Metrics go to <logdir>/metrics.jsonl as `<phase>/<name>`.
"""

import json
import os
import time

import numpy as np
import tensorflow as tf

from dreamer_tf import checkpoints, nets
from dreamer_tf.dreamer4 import data, evaluation, imagine
from dreamer_tf.dreamer4.agent import AgentHeads
from dreamer_tf.dreamer4.model import build
from dreamer_tf.logger import Logger
from dreamer_tf.optim import Adam

PHASES = ('data', 'tokenizer', 'dynamics', 'bc', 'rl')
DONE_FILE = 'done'


class Saved(tf.Module):
    """What one phase's checkpoints hold: its step counter, weights by path and optimisers."""

    def __init__(self, weights, opts):
        super().__init__(name='saved')
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
        self.weights_by_path, self.opts = dict(weights), list(opts)

    def state(self):
        opt_vars = {f'opt{i}/{j}': v for i, opt in enumerate(self.opts) for j, v in enumerate(opt.variables)}
        return {**self.weights_by_path, **opt_vars}


def apply_grads(tape, loss, variables, opt):
    """One optimiser step; variables the loss does not reach (e.g. the unread agent token) get zeros, and
    the sparse gradients of embedding lookups become dense."""
    grads = tape.gradient(loss, variables)
    return opt.apply([tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                      for g, v in zip(grads, variables)])


class Pipeline:

    def __init__(self, config, logdir, log=print):
        self.config, self.logdir, self.log = config, logdir, log
        self.data_dir = os.path.join(logdir, 'data')
        self.rng = np.random.default_rng(config.seed)
        tf.random.set_global_generator(tf.random.Generator.from_seed(config.seed))
        self.nets = build(config)
        heads = config.heads
        self.prior = AgentHeads(config.dynamics.dim, config.actions, **heads, name='prior')
        self.value = imagine.ValueHead(config.dynamics.dim, heads.layers, config.imagine.value_units,
                                       heads.bins, name='value')
        self._build()
        self.logger = Logger(logdir, use_tensorboard=False)
        self.times = {}

    def _build(self):
        """Create every weight with one dummy pass, so that checkpoints restore into existing variables."""
        c, n = self.config, self.nets
        frames = tf.zeros([1, 2, *c.tokenizer.image, c.tokenizer.channels])
        latents = n.tokenizer.encode(frames)
        n.tokenizer.decode(latents)
        feat = n.dynamics.features(latents, tf.zeros([1, 2, c.actions]), tf.ones([1, 2]))
        for head in (n.heads, self.prior):
            head.policy_logits(feat), head.reward_dist(feat)
        self.value(feat)

    def run(self):
        """Every phase in order; returns {phase: evaluation}."""
        try:
            return {phase: getattr(self, phase)() for phase in PHASES}
        finally:
            self.logger.close()

    # ----------------------------------------------------------------------------------------------
    # Phases

    def data(self):
        done = os.path.join(self.data_dir, DONE_FILE)
        if os.path.exists(done):
            return self._skip('data', done)
        start = time.monotonic()
        results = data.collect(self.config, self.data_dir, log=self.log)
        returns = [score for split, _, _, score in results if split == 'train']
        summary = {'episodes': len(data.episode_files(os.path.join(self.data_dir, 'train'))),
                   'new_episodes': len(results)}
        if returns:
            summary.update(return_mean=float(np.mean(returns)), return_min=float(np.min(returns)),
                           return_max=float(np.max(returns)))
        return self._finish('data', done, summary, start)

    def tokenizer(self):
        tok, spec = self.nets.tokenizer, self.config
        opt = Adam(tok.trainable_variables, spec.opt.lr, clip=spec.opt.clip, name='tokenizer_opt')
        episodes = self._episodes('train')

        @tf.function
        def update(images):
            with tf.GradientTape() as tape:
                loss, metrics = tok.loss(evaluation.as_frames(images))
            return {**metrics, 'loss': loss, **apply_grads(tape, loss, tok.trainable_variables, opt)}

        def step():
            return update(self._sample(episodes)['image'])

        def evaluate():
            held, batch = self._episodes('heldout'), spec.eval.batch
            return {'psnr': evaluation.tokenizer_psnr(tok, held, batch, spec.batch_length, self.rng)}
        return self._train('tokenizer', {'tokenizer': tok}, [opt], step, spec.train.tokenizer, evaluate)

    def dynamics(self):
        tok, dyn, spec = self.nets.tokenizer, self.nets.dynamics, self.config
        opt = Adam(dyn.trainable_variables, spec.opt.lr, clip=spec.opt.clip, name='dynamics_opt')
        episodes = self._episodes('train')

        @tf.function
        def update(images, actions, mask):
            latents = tok.encode(evaluation.as_frames(images))
            with tf.GradientTape() as tape:
                loss, metrics, _ = dyn.loss(latents, actions, action_mask=mask)
            return {**metrics, **apply_grads(tape, loss, dyn.trainable_variables, opt)}

        def step():
            batch = self._sample(episodes)
            return update(batch['image'], batch['action'], batch['has_action'])

        def evaluate():
            png = os.path.join(self.logdir, 'dynamics_openloop.png')
            return evaluation.dynamics_eval(tok, dyn, self._episodes('heldout'), spec.eval,
                                            spec.dynamics.sample_steps, self.rng, png)
        return self._train('dynamics', {'dynamics': dyn}, [opt], step, spec.train.dynamics, evaluate)

    def bc(self):
        heads, spec = self.nets.heads, self.config
        opt = Adam(heads.trainable_variables, spec.opt.lr, clip=spec.opt.clip, name='bc_opt')
        episodes = self._episodes('train')
        labelled = [e for e in episodes if e['has_action'].any()]

        @tf.function
        def update(act_batch, all_batch):
            act_feat, all_feat = self._features(act_batch), self._features(all_batch)
            with tf.GradientTape() as tape:
                policy = heads.bc_loss(act_feat, act_batch['action'], act_batch['has_action'])
                reward = heads.reward_loss(all_feat, all_batch['reward'])
                loss = policy + reward
            return {'policy_loss': policy, 'reward_loss': reward,
                    **apply_grads(tape, loss, heads.trainable_variables, opt)}

        def step():
            # BC reads the action-labelled episodes; the reward head learns from every episode.
            return update(*(self._window_tensors(self._sample(e)) for e in (labelled, episodes)))
        return self._train('bc', {'heads': heads}, [opt], step, spec.train.bc, lambda: self._returns(heads))

    def rl(self):
        heads, spec = self.nets.heads, self.config
        policy_vars = heads.policy_mlp.trainable_variables + heads.policy_out.trainable_variables
        policy_opt = Adam(policy_vars, spec.opt.lr, clip=spec.opt.clip, name='policy_opt')
        value_opt = Adam(self.value.trainable_variables, spec.imagine.value_lr, clip=spec.opt.clip,
                         name='value_opt')
        if not os.path.exists(os.path.join(self.logdir, 'rl', DONE_FILE)):
            for prior, current in zip(self.prior.weights, heads.weights):   # frozen BC prior
                prior.assign(current)
        episodes = self._episodes('train')
        update = tf.function(self._rl_update(policy_vars, policy_opt, value_opt))

        def step():
            im = spec.imagine
            batch = self._window_tensors(data.sample_windows(episodes, im.batch, im.context, self.rng))
            return update(batch, tf.constant(self.rng.integers(2 ** 30, size=2), tf.int32))
        weights = {'heads': heads, 'prior': self.prior, 'value': self.value}
        return self._train('rl', weights, [policy_opt, value_opt], step, spec.train.rl,
                           lambda: self._returns(heads))

    def _rl_update(self, policy_vars, policy_opt, value_opt):
        spec, n = self.config, self.nets

        def update(batch, seed):
            im = spec.imagine
            latents = n.tokenizer.encode(evaluation.as_frames(batch['image']))
            feats, actions, rewards = imagine.rollout(
                n.dynamics, n.heads, latents, batch['action'], batch['has_action'], im.horizon,
                spec.dynamics.sample_steps, seed)
            with tf.GradientTape(persistent=True) as tape:
                policy, critic, metrics = imagine.imagination_losses(
                    n.heads, self.prior, self.value, feats, actions, rewards, im.gamma, im.lam,
                    spec.pmpo.alpha, spec.pmpo.beta)
            policy_metrics = apply_grads(tape, policy, policy_vars, policy_opt)
            apply_grads(tape, critic, self.value.trainable_variables, value_opt)
            return {**metrics, 'policy_loss': policy, 'value_loss': critic,
                    'grad_norm': policy_metrics['grad_norm']}
        return update

    # ----------------------------------------------------------------------------------------------
    # Helpers

    def _features(self, batch):
        """The frozen dynamics' agent features [B, T, D] of a window of clean frames."""
        latents = self.nets.tokenizer.encode(evaluation.as_frames(batch['image']))
        return tf.stop_gradient(self.nets.dynamics.features(latents, batch['action'], batch['has_action']))

    def _sample(self, episodes):
        return data.sample_windows(episodes, self.config.batch_size, self.config.batch_length, self.rng)

    @staticmethod
    def _window_tensors(batch):
        keys = ('image', 'action', 'has_action', 'reward')
        return {key: tf.convert_to_tensor(batch[key]) for key in keys}

    def _episodes(self, split):
        return data.load_episodes(os.path.join(self.data_dir, split))

    def _returns(self, heads):
        spec = self.config
        returns = evaluation.env_returns(spec, self.nets.tokenizer, self.nets.dynamics, heads,
                                         spec.eval.episodes, spec.seed * 100_003 + 10 ** 6)
        return {'return': float(np.mean(returns)), 'return_min': float(np.min(returns)),
                'return_max': float(np.max(returns))}

    def _train(self, name, modules, opts, step, total, evaluate):
        """Resume, train to `total` updates (log, print, checkpoint), evaluate, mark done."""
        directory = os.path.join(self.logdir, name)
        weights = {}
        for key, module in modules.items():
            weights.update(nets.named_weights(module, key + '/'))
        saved = Saved(weights, opts)
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(saved=saved), directory, max_to_keep=2,
                                             checkpoint_name=checkpoints.CHECKPOINT_NAME)
        checkpoints.restore_newest(manager.checkpoint, directory, warn=self.log)
        done = os.path.join(directory, DONE_FILE)
        if os.path.exists(done):
            return self._skip(name, done)
        start, spec = time.monotonic(), self.config.train
        if int(saved.step):
            self.log(f'[{name}] resuming at update {int(saved.step)}/{total}')
        while int(saved.step) < total:
            metrics = step()
            self.logger.add(metrics, prefix=name)
            saved.step.assign_add(1)
            number = int(saved.step)
            if number % spec.log_every == 0 or number == total:
                self.logger.write(number)
                loss = next(float(v) for k, v in metrics.items() if k.endswith('loss'))
                self.log(f'[{name}] {number}/{total} updates | loss {loss:.4f} | '
                         f'{time.monotonic() - start:.0f} s')
            if number % spec.save_every == 0 or number == total:
                checkpoints.save_finite(manager, number, saved.state())
        return self._finish(name, done, evaluate(), start, step=total)

    def _finish(self, name, done, results, start, step=0):
        seconds = time.monotonic() - start
        self.logger.add({**results, 'seconds': seconds}, prefix=f'eval/{name}')
        self.logger.write(step)
        os.makedirs(os.path.dirname(done), exist_ok=True)
        with open(done, 'w', encoding='utf-8') as file:
            json.dump({**results, 'seconds': seconds}, file)
        self.log(f'[{name}] done in {seconds:.0f} s: ' + _format(results))
        return results

    def _skip(self, name, done):
        with open(done, encoding='utf-8') as file:
            results = json.load(file)
        self.log(f'[{name}] finished earlier, skipped: ' + _format(results))
        return results


def _format(results):
    return ', '.join(f'{key} {value:.2f}' if isinstance(value, float) else f'{key} {value}'
                     for key, value in results.items())
