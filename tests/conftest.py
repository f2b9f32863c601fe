import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def tiny_cfg():
    from goalscope.envs.maze import MazeConfig

    return MazeConfig(size=5, n_types=2, n_per_type=1, max_steps=16, pool_size=16)
