"""Crafter, 1M env steps, as each version's paper ran it.

    python reproduce/crafter.py --task=reward --logdir=~/runs/crafter
    python reproduce/crafter.py --task=all --logdir=~/runs          # 10 seeds, one after another

64x64 images, train ratio 512 (overlay crafter in dreamer_tf/configs/dreamerv3.yaml). Every episode
logs episode/score and episode/achievement_<name> (0 or 1) to metrics.jsonl; the success rate of an
achievement is the mean of its flag, and dreamer_tf.envs.crafter_score turns the 22 rates into the
Crafter score.

`--version=dreamerv1|dreamerv2|dreamerv3|dreamerv3_2023` picks the agent and its config file
(dreamer_tf/configs/<version>.yaml), whose overlay of the same name holds that version's protocol.
"""

from dreamer_tf import cli

if __name__ == '__main__':
    cli.main('crafter')
