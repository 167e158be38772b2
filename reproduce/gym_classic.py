"""gymnasium classic control (CartPole-v1, Pendulum-v1, Acrobot-v1, ...) for quick checks.

    python reproduce/gym_classic.py --task=CartPole-v1 --configs=small --steps=60000 --logdir=runs/cartpole

With the `small` overlay a laptop CPU sees CartPole episodes grow from ~22 steps (random) to
60-100 within 8k env steps, in about five minutes. No paper reports these tasks; they are sanity checks.
"""

from dreamer_tf import cli

if __name__ == '__main__':
    cli.main('gym')
