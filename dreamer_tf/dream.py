"""Open-loop imagination of a trained world model next to the real episode.

    python -m dreamer_tf.dream --logdir=runs/walker_walk --out=dream.gif
    dreamer-dream --logdir=runs/walker_walk --context=5 --length=50 --out=dream.mp4

The agent plays one real episode prefix of `--length` steps. The world model observes the first
`--context` steps (posterior, so those frames are reconstructions), then rolls its prior forward on
the real actions alone (no observations): everything after the context is imagined.

Image tasks show truth | prediction side by side. Vector tasks show one small plot per observation
dimension, true (solid) against predicted (dashed), with the context shaded and a cursor on the
current step. A bar on top of each frame is green during the context and red while imagining.
"""

import argparse
import sys

import numpy as np

from dreamer_tf import media, quiet

MAX_PLOTTED_DIMS = 16
_GREEN, _RED, _BLUE = (40, 170, 60), (210, 50, 40), (30, 110, 190)


def collect(agent, length, seed=None, mode='eval'):
    """One real episode prefix of at most `length` steps as a [1, T, ...] batch in replay layout.

    Step t holds the observation x_t and the action a_{t-1} that led to it (zero at the start).
    """
    env = agent.make_env(mode='eval', seed=seed)
    try:
        obs, state = env.reset(), None
        steps, actions = [obs], [np.zeros(agent.act_space.size, np.float32)]
        while len(steps) < length and not obs['is_last']:
            action, state = agent.act(obs, state, mode)
            obs = env.step(action)
            steps.append(obs)
            actions.append(np.asarray(action, np.float32))
    finally:
        env.close()
    data = {key: np.stack([s[key] for s in steps])[None] for key in agent.obs_space}
    data['is_first'] = np.array([[s['is_first'] for s in steps]])
    data['reward'] = np.array([[s['reward'] for s in steps]], np.float32)
    data['action'] = np.stack(actions)[None]
    return data


def open_loop(wm, data, context):
    """Decoded predictions [1, T, ...] per observation key (and 'reward').

    Steps < context come from the posterior (the model saw them); later steps from the prior
    alone, driven by the recorded actions.
    """
    ctx = {k: v[:, :context] for k, v in data.items()}
    post, _ = wm.rssm.observe(wm.encoder(ctx), ctx['action'], ctx['is_first'])
    state = {k: v[:, -1] for k, v in post.items()}
    feats = [wm.rssm.get_feat(post)]
    for t in range(context, data['action'].shape[1]):
        state = wm.rssm.img_step(state, data['action'][:, t])
        feats.append(wm.rssm.get_feat(state)[:, None])
    feat = np.concatenate([np.asarray(f) for f in feats], 1)
    preds = {key: np.asarray(dist.mode()) for key, dist in wm.decoder(feat).items()}
    preds['reward'] = np.asarray(wm.reward(feat).mean())
    return preds


def image_frames(truth, pred, context):
    """uint8 frames [T, 4 + H, 2W + 2, 3]: a status bar over truth | prediction."""
    truth = np.asarray(truth, np.uint8)
    pred = np.clip(np.asarray(pred) * 255.0, 0, 255).astype(np.uint8)
    steps, height, width, _ = truth.shape
    frames = np.full((steps, 4 + height, 2 * width + 2, 3), 255, np.uint8)
    frames[:, 4:, :width] = truth
    frames[:, 4:, width + 2:] = pred
    for t in range(steps):
        frames[t, :3] = _GREEN if t < context else _RED
    return frames


def open_loop_grid(truth, pred, context, columns=20):
    """One uint8 image of a batch's open loop: per sequence a row of truth, of prediction, of |error|.

    truth: uint8 [B, T, H, W, C]; pred: [B, T, H, W, C] in [0, 1]. The first `columns` steps are shown;
    a 2-pixel bar above each column is green for the `context` steps and red for imagined ones.
    """
    truth = np.asarray(truth, np.float32)[:, :columns] / 255.0
    pred = np.clip(np.asarray(pred, np.float32)[:, :columns], 0.0, 1.0)
    if truth.shape[-1] == 1:                      # grayscale Atari: show as RGB
        truth, pred = np.repeat(truth, 3, -1), np.repeat(pred, 3, -1)
    batch, steps, height, width, _ = truth.shape
    rows = np.stack([truth, pred, np.abs(pred - truth)], 1)     # [B, 3, T, H, W, 3]
    grid = np.ones((3 + batch * (3 * height + 2), steps * (width + 1), 3), np.float32)
    for t in range(steps):
        grid[:2, t * (width + 1):t * (width + 1) + width] = np.array(_GREEN if t < context else _RED) / 255
    for b in range(batch):
        for r in range(3):
            top = 3 + b * (3 * height + 2) + r * height
            for t in range(steps):
                grid[top:top + height, t * (width + 1):t * (width + 1) + width] = rows[b, r, t]
    return (grid * 255).round().astype(np.uint8)


def vector_frames(truth, pred, context, reward=None, reward_pred=None, dpi=80):
    """uint8 frames of small line plots, one per dimension, with a cursor moving over the steps.

    The figure is drawn once; each frame only paints the cursor column into a copy of it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dims = min(truth.shape[1], MAX_PLOTTED_DIMS)
    series = [(f'vector[{i}]', truth[:, i], pred[:, i]) for i in range(dims)]
    if reward is not None:
        series.append(('reward', reward, reward_pred))
    cols = min(4, len(series))
    rows = -(-len(series) // cols)
    fig = Figure(figsize=(2.4 * cols, 1.7 * rows + 0.4), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    steps = len(truth)
    for i, (name, true, guess) in enumerate(series):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axvspan(-0.5, context - 0.5, color='0.9')
        ax.plot(true, 'k-', lw=1.2, label='true')
        ax.plot(guess, '--', color='tab:red', lw=1.2, label='predicted')
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_xlim(-0.5, steps - 0.5)
    fig.axes[0].legend(fontsize=6, loc='best')
    fig.suptitle(f'open loop: {context} context steps (shaded), then imagined', fontsize=9)
    fig.tight_layout()
    canvas.draw()
    base = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    height = base.shape[0]
    # Display coordinates start at the bottom left; image rows start at the top.
    boxes = [(ax, int(height - ax.bbox.y1), int(height - ax.bbox.y0)) for ax in fig.axes]
    frames = []
    for t in range(steps):
        frame = base.copy()
        for ax, top, bottom in boxes:
            x = int(round(ax.transData.transform((t, 0))[0]))
            frame[top:bottom, x:x + 1] = _BLUE
        frame[:3] = _GREEN if t < context else _RED
        frames.append(frame)
    return np.stack(frames)


def dream(agent, out, context=5, length=50, seed=None, mode='eval', fps=10):
    """Write the open-loop video to `out`. Returns (path written, MSE of the imagined steps per key)."""
    media.check_video_path(out)
    if context < 1 or length <= context:
        raise ValueError(f'need 1 <= context < length, got context={context}, length={length}')
    data = collect(agent, length, seed, mode)
    steps = data['action'].shape[1]
    if steps <= context:
        raise ValueError(f'the episode ended after {steps} steps, within the {context} context steps')
    preds = open_loop(agent.agent.wm, data, context)
    if 'image' in preds:
        frames = image_frames(data['image'][0], preds['image'][0], context)
        truth = data['image'][0, context:] / 255.0
        errors = {'image': float(np.mean((truth - preds['image'][0, context:]) ** 2))}
    else:
        truth, pred = data['vector'][0], preds['vector'][0]
        frames = vector_frames(truth, pred, context, data['reward'][0], preds['reward'][0])
        errors = {'vector': float(np.mean((truth[context:] - pred[context:]) ** 2))}
    return media.write_video(out, frames, fps), errors


def main(argv=None):
    parser = argparse.ArgumentParser(prog='dreamer-dream', description=__doc__.split('\n')[0])
    parser.add_argument('--logdir', required=True, help='training logdir (config.yaml + checkpoints/)')
    parser.add_argument('--out', default='dream.gif', help='.gif or .mp4 to write')
    parser.add_argument('--context', type=int, default=5, help='real steps the model observes first')
    parser.add_argument('--length', type=int, default=50, help='total steps shown (context + imagined)')
    parser.add_argument('--seed', type=int, default=None, help="environment seed (default: the eval seed)")
    parser.add_argument('--fps', type=int, default=10)
    parser.add_argument('--verbose', action='store_true',
                        help="show TensorFlow's C++ and Python logs (hidden by default)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    quiet.start(args.verbose)   # before `import dreamer_tf` loads TensorFlow
    import dreamer_tf
    try:
        agent = dreamer_tf.load(args.logdir)
        path, errors = dream(agent, args.out, args.context, args.length, args.seed, fps=args.fps)
    except (ValueError, media.VideoError, RuntimeError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    shown = ', '.join(f'{key} {value:.4g}' for key, value in errors.items())
    print(f'open-loop MSE after {args.context} context steps: {shown}')
    print(f'video: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
