"""DeepMind Control Suite from 64x64 camera images, as each version's paper ran it.

    python reproduce/dmc_vision.py --task=walker_walk --logdir=~/runs/walker_walk
    python reproduce/dmc_vision.py --task=all --logdir=~/runs       # 20 tasks x 10 seeds, one after another

Tasks: the 20 of dreamer_tf.envs.DMC_VISION_TASKS. 1M env steps, action repeat 1, train ratio 256
(overlay dmc_vision in dreamer_tf/configs/dreamerv3.yaml). Rendering is headless: EGL, else OSMesa,
chosen automatically (set MUJOCO_GL to force one); see dreamer_tf/envs/dmc.py for the packages.

`--version=dreamerv1|dreamerv2|dreamerv3|dreamerv3_2023` picks the agent and its config file
(dreamer_tf/configs/<version>.yaml), whose overlay of the same name holds that version's protocol.
"""

from dreamer_tf import cli

if __name__ == '__main__':
    cli.main('dmc_vision')
