"""PreZoo core: search spaces, architectures, cost model, supernet, standalone subnets, the zoo store."""

from zoo.arch import Arch
from zoo.cost import cost_range, flops, params
from zoo.pretrained import PreZooViT  # importing it registers `prezoo_vit` in timm
from zoo.space import BUILTIN_SPACES, SearchSpace, get_space
from zoo.store import BudgetError, Zoo, ZooEntry, ZooError
from zoo.supernet import ViTSupernet, slice_state, slice_tensor
from zoo.vit import ViT

__all__ = ["Arch", "BUILTIN_SPACES", "BudgetError", "PreZooViT", "SearchSpace", "ViT", "ViTSupernet", "Zoo",
           "ZooEntry", "ZooError", "cost_range", "flops", "get_space", "params", "slice_state", "slice_tensor"]
