"""PreZoo core: search spaces, architectures, cost model, supernet and standalone subnets."""

from zoo.arch import Arch
from zoo.cost import cost_range, flops, params
from zoo.space import BUILTIN_SPACES, SearchSpace, get_space
from zoo.supernet import ViTSupernet, slice_state, slice_tensor
from zoo.vit import ViT

__all__ = ["Arch", "BUILTIN_SPACES", "SearchSpace", "ViT", "ViTSupernet", "cost_range", "flops",
           "get_space", "params", "slice_state", "slice_tensor"]
