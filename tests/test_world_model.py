"""The world model's small pure helpers against loops and hand arithmetic."""

import numpy as np
import pytest

from dreamer_tf import world_model
from dreamer_tf.config import Config
from helpers import f32


def test_drop_context_keeps_the_steps_after_the_context():
    x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    out = world_model.drop_context({'x': f32(x), 'y': f32(x[..., 0])}, 2)
    for b in range(2):
        for t in range(3):
            np.testing.assert_array_equal(out['x'][b, t].numpy(), x[b, t + 2])
            assert out['y'][b, t].numpy() == x[b, t + 2, 0]


def test_observation_targets():
    image = np.array([[0, 51, 255]], np.uint8)
    np.testing.assert_allclose(world_model.observation_target('image', image).numpy(), [[0.0, 0.2, 1.0]])
    np.testing.assert_array_equal(world_model.observation_target('vector', f32([[-3.0]])).numpy(), [[-3.0]])


def test_discount_factor_by_hand():
    behavior = Config({'gamma_from': 'discount', 'discount': 0.99, 'horizon': 7})
    assert world_model.discount_factor(behavior) == 0.99
    gamma = world_model.discount_factor(Config({'gamma_from': 'horizon', 'discount': 0.99, 'horizon': 333}))
    assert gamma == pytest.approx(332 / 333, rel=1e-12)


class Taker:
    def __init__(self, obs_space, depth, units=3, **kw):
        self.args = (obs_space, depth, units, kw)


def test_build_passes_only_the_keys_the_class_names():
    section = Config({'style': 'a', 'depth': 4, 'units': 5, 'kernels': (1, 2)})
    built = world_model.build({'a': Taker}, 'encoder', section, 'space', deter=8)
    assert built.args == ('space', 4, 5, {'name': 'encoder'})
    with pytest.raises(ValueError, match="encoder.style 'b'"):
        world_model.build({'a': Taker}, 'encoder', Config({'style': 'b'}), 'space')
