"""Atari100k (400k frames = 100k agent steps), as each version's paper ran it.

    python reproduce/atari100k.py --task=pong --logdir=~/runs/pong
    python reproduce/atari100k.py --task=all --logdir=~/runs        # 26 games x 5 seeds, one after another

Games: the 26 of dreamer_tf.envs.ATARI100K_GAMES (ale-py ROM ids). Protocol (overlay atari100k in
dreamer_tf/configs/dreamerv3.yaml): 64x64 RGB, frame skip 4 with a max over the last two frames, no
sticky actions, minimal action set, up to 30 no-op frames at reset, train ratio 256. The reported score
is the training episodes' episode/score in metrics.jsonl; `step` counts frames.

`--version=dreamerv1|dreamerv2|dreamerv3|dreamerv3_2023` picks the agent and its config file
(dreamer_tf/configs/<version>.yaml), whose overlay of the same name holds that version's protocol.
"""

from dreamer_tf import cli

if __name__ == '__main__':
    cli.main('atari100k')
