"""Atari 200M frames, as each version's paper ran it (the Atari 57 games).

    python reproduce/atari200m.py --task=pong --configs=size12m --logdir=~/runs/pong
    python reproduce/atari200m.py --task=all --logdir=~/runs        # 57 games x 5 seeds, one after another

DreamerV3's protocol (overlay atari in dreamer_tf/configs/dreamerv3.yaml): 96x96 grayscale, frame skip 4 with
max-pool, sticky actions 0.25, full action set (18), episodes capped at 108k frames, lives unused,
train ratio 32, 8 environments in their own processes. `step` in metrics.jsonl counts frames.

`--version=dreamerv1|dreamerv2|dreamerv3|dreamerv3_2023` picks the agent and its config file
(dreamer_tf/configs/<version>.yaml), whose overlay of the same name holds that version's protocol.
"""

from dreamer_tf import cli

if __name__ == '__main__':
    cli.main('atari')
