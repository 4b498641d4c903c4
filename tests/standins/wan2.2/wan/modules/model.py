"""wan.modules.model stand-in: upstream's WanModel is a diffusers ModelMixin/ConfigMixin."""
import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin

from .attention import flash_attention  # noqa: F401


def rope_apply(x, grid_sizes, freqs):
    raise AssertionError("upstream rope_apply reached")


class WanAttentionBlock(nn.Module):
    pass


class WanModel(ModelMixin, ConfigMixin):
    def __init__(self, dim=8):
        super().__init__()
        self.time_embedding = nn.Linear(4, dim)
        self.time_projection = nn.Linear(dim, 6 * dim, dtype=torch.float32)
