"""DeepMind Control Suite from proprioceptive (vector) observations, as each version's paper ran it.

    python reproduce/dmc_proprio.py --task=cartpole_balance --logdir=~/runs/cartpole
    python reproduce/dmc_proprio.py --task=walker_walk --configs=size12m --logdir=~/runs/walker

Tasks: the 18 of dreamer_tf.envs.DMC_PROPRIO_TASKS. The paper trains 500k env steps with
action repeat 1 and train ratio 1024 at size1m (dreamer_tf/configs/dreamerv3.yaml, overlay dmc_proprio).

`--version=dreamerv1|dreamerv2|dreamerv3|dreamerv3_2023` picks the agent and its config file
(dreamer_tf/configs/<version>.yaml), whose overlay of the same name holds that version's protocol.
"""

from dreamer_tf import cli

if __name__ == '__main__':
    cli.main('dmc_proprio')
