"""Dreamer 4's evaluations: tokenizer reconstruction PSNR, open-loop dynamics PSNR and its PNG strip, and
real-environment returns of a policy acting through tokenizer, dynamics features and policy head."""

import numpy as np
import tensorflow as tf
from PIL import Image

from dreamer_tf.dreamer4.data import env_config, sample_windows
from dreamer_tf.dreamer4.imagine import action_values, next_action_logits, psnr


def as_frames(images):
    """uint8 [..., H, W, C] -> float32 in [0, 1]."""
    return tf.cast(images, tf.float32) / 255.0


def tokenizer_psnr(tokenizer, episodes, batch, length, rng):
    """Mean PSNR (dB) of unmasked reconstructions of held-out windows [batch, length]."""
    frames = as_frames(sample_windows(episodes, batch, length, rng)['image'])
    return float(tf.reduce_mean(psnr(tokenizer.decode(tokenizer.encode(frames)), frames)))


def open_loop(tokenizer, dynamics, window, context, steps, seed):
    """Frames [B, P, H, W, C] predicted after `context` true frames of `window` (images, action,
    has_action [B, C + P, ...]) from the true actions, each frame in `steps` shortcut steps."""
    frames = as_frames(window['image'])
    latents = tokenizer.encode(frames[:, :context])
    actions, mask = window['action'], window['has_action']
    for k in range(frames.shape[1] - context):
        end = context + k + 1
        frame = dynamics.generate(latents, actions[:, :end], steps, seed + k, mask[:, :end])
        latents = tf.concat([latents, frame[:, None]], 1)
    return tokenizer.decode(latents)[:, context:]


def dynamics_eval(tokenizer, dynamics, episodes, spec, coarse, rng, png_path):
    """Open-loop PSNRs with `coarse` and spec.fine_steps sampling steps and of repeating the last context
    frame; saves the strip truth / coarse / fine of the first window to `png_path`."""
    window = sample_windows(episodes, spec.batch, spec.context + spec.predict, rng)
    truth = as_frames(window['image'])[:, spec.context:]
    seed = tf.constant([int(rng.integers(2 ** 30)), 0])
    preds = {steps: open_loop(tokenizer, dynamics, window, spec.context, steps, seed)
             for steps in (coarse, spec.fine_steps)}
    repeat = tf.repeat(as_frames(window['image'])[:, spec.context - 1:spec.context], spec.predict, 1)
    results = {f'psnr_{steps}step': float(tf.reduce_mean(psnr(pred, truth))) for steps, pred in preds.items()}
    results['psnr_repeat_last'] = float(tf.reduce_mean(psnr(repeat, truth)))
    save_strip(png_path, [truth[0], preds[coarse][0], preds[spec.fine_steps][0]])
    return results


def save_strip(path, rows):
    """A PNG of rows of frames [P, H, W, C] in [0, 1], one row per sequence, frames side by side."""
    image = np.concatenate([np.concatenate(list(np.clip(np.asarray(row), 0, 1)), 1) for row in rows], 0)
    Image.fromarray((image * 255).round().astype(np.uint8)).save(path)


def act(tokenizer, dynamics, heads, images, actions, mask):
    """The greedy next action index from the recent history: images [T, H, W, C] uint8, one-hot actions
    [T, A], mask [T] (the first frame of an episode has no action)."""
    latents = tokenizer.encode(as_frames(images[None]))
    feat = dynamics.features(latents, tf.constant(actions[None]), tf.constant(mask[None]))[:, -1]
    return int(tf.argmax(next_action_logits(heads, feat)[0]))


def env_returns(config, tokenizer, dynamics, heads, episodes, seed):
    """Real cartpole returns of the policy head acting on the last batch_length frames."""
    from dreamer_tf.envs import make_env
    count = config.actions
    returns = []
    for episode in range(episodes):
        with make_env(env_config(config), seed=seed + episode) as env:
            returns.append(_episode(env, config.batch_length, count,
                                    lambda *h: act(tokenizer, dynamics, heads, *h)))
    return returns


def _episode(env, window, count, policy):
    step, total = env.reset(), 0.0
    images, actions, mask = [step['image']], [np.zeros(count, np.float32)], [0.0]
    while not step['is_last']:
        index = policy(np.stack(images[-window:]), np.stack(actions[-window:]),
                       np.array(mask[-window:], np.float32))
        step = env.step(np.array([action_values(count)[index]], np.float32))
        total += float(step['reward'])
        images.append(step['image'])
        actions.append(np.eye(count, dtype=np.float32)[index])
        mask.append(1.0)
    return total
