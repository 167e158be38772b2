"""Evaluate a trained agent in its own environment: scores, a JSON record and an optional video.

    python -m dreamer_tf.evaluate --logdir=runs/walker_walk --episodes=10 --video=walker.mp4
    dreamer-evaluate --logdir=runs/walker_walk            # the same, once installed

The environment is built from `<logdir>/config.yaml` in eval mode, seeded like the trainer's
evaluation env unless --seed is given. Scores go to `<logdir>/eval/scores.json` (or --out).
"""

import argparse
import json
import os
import sys

import numpy as np

from dreamer_tf import media, quiet


def run_episodes(agent, episodes, seed=None, mode='eval', video=False):
    """Play `episodes` episodes. Returns (scores, lengths, frames); frames is [] without `video`.

    Lengths count agent steps; the frames hold each episode's first observation and every step.
    """
    scores, lengths, frames = [], [], []
    env = agent.make_env(mode='eval', seed=seed, render=video)
    try:
        for _ in range(episodes):
            obs, state, score, length = env.reset(), None, 0.0, 0
            if video:
                frames.append(_render(env, agent.config))
            while not obs['is_last']:
                action, state = agent.act(obs, state, mode)
                obs = env.step(action)
                score += float(obs['reward'])
                length += 1
                if video:
                    frames.append(_render(env, agent.config))
            scores.append(score)
            lengths.append(length)
    finally:
        env.close()
    return scores, lengths, frames


def _render(env, config):
    try:
        return env.render()
    except Exception as error:  # renderers fail with their own types (pygame, GL)
        raise media.VideoError(f'cannot render {config.env.suite} task {config.env.task!r} for a video: '
                               f'{error}') from None


def evaluate(agent, episodes=10, seed=None, mode='eval', video=None, fps=25, out=None):
    """Evaluate a loaded agent (dreamer_tf.load) and write the scores JSON and optional video.

    Returns the record written to `out` (default <logdir>/eval/scores.json): per-episode scores
    and lengths, their mean and std, the checkpoint, and the video path actually written.
    """
    if video:
        media.check_video_path(video)
    seed = agent.config.seed + 10_000 if seed is None else seed
    scores, lengths, frames = run_episodes(agent, episodes, seed, mode, video=bool(video))
    record = {
        'logdir': agent.logdir, 'checkpoint': agent.checkpoint, 'env_steps': agent.env_steps,
        'task': agent.config.env.task, 'mode': mode, 'seed': seed, 'episodes': episodes,
        'scores': scores, 'lengths': lengths,
        'mean': float(np.mean(scores)), 'std': float(np.std(scores)),
        'video': media.write_video(video, frames, fps) if video else None,
    }
    out = out or os.path.join(agent.logdir, 'eval', 'scores.json')
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(record, f, indent=2)
    record['out'] = out
    return record


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='dreamer-evaluate', description=__doc__.split('\n')[0])
    parser.add_argument('--logdir', required=True, help='training logdir (config.yaml + checkpoints/)')
    parser.add_argument('--episodes', type=int, default=10)
    parser.add_argument('--seed', type=int, default=None,
                        help="environment seed (default: the trainer's eval seed, config seed + 10000)")
    parser.add_argument('--mode', default='eval', choices=['eval', 'explore'],
                        help="'eval' takes the actor's mode, 'explore' samples it")
    parser.add_argument('--video', default=None, help='write the episodes to this .mp4 or .gif')
    parser.add_argument('--fps', type=int, default=25)
    parser.add_argument('--verbose', action='store_true',
                        help="show TensorFlow's C++ and Python logs (hidden by default)")
    parser.add_argument('--out', default=None, help='scores JSON (default <logdir>/eval/scores.json)')
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error('--episodes must be at least 1')
    return args


def main(argv=None):
    """Command line: bad input, a missing logdir or unreadable checkpoints exit 2 with one message."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    quiet.start(args.verbose)   # before `import dreamer_tf` loads TensorFlow
    import dreamer_tf
    try:
        agent = dreamer_tf.load(args.logdir)
        record = evaluate(agent, args.episodes, args.seed, args.mode, args.video, args.fps, args.out)
    except (ValueError, media.VideoError, RuntimeError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    print(f"{record['task']} after {record['env_steps']} env steps: score {record['mean']:.1f} "
          f"+- {record['std']:.1f} over {record['episodes']} episodes ({args.mode} mode)")
    print(f"scores: {record['out']}")
    if record['video']:
        print(f"video: {record['video']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
