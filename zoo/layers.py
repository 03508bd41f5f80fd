"""Building blocks the families share, and BatchNorm statistics per extracted path (spec bossnas 7): kept free of
timm, which imports the families back."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: drop the whole residual branch per sample, rescale the kept ones."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty(x.shape[0], *(1,) * (x.dim() - 1)).bernoulli_(1 - rate)
    return x * keep / (1 - rate)


def checkpointed(block: Callable[[Tensor], Tensor], x: Tensor, enabled: bool) -> Tensor:
    """`block(x)`; when `enabled`, its activations are recomputed in the backward pass instead of kept (the same
    random numbers: the drop-path mask holds)."""
    return checkpoint(block, x, use_reentrant=False) if enabled else block(x)


class GradCheckpointing:
    """timm's `set_grad_checkpointing` for a family's standalone model, whose forward passes `grad_checkpointing`
    on to `checkpointed`: less memory for one more forward of each block in training."""

    grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable


class StagedFeatures:
    """timm's head and feature API for a convolutional model: a stem, then stages whose outputs (B, C, H, W) its
    `feature_info` lists, no final norm, and an average-pooled linear head. The model says how to run its stem and
    one stage (`feature_stem`, `feature_stages`, `run_feature_stage`) and how to keep only its first stages
    (`keep_stages`)."""

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh head for `num_classes` (0: none; the model then returns pooled features), as in timm. Without a
        head, `global_pool=""` leaves the feature maps unpooled (`"avg"` pools them again); a head always pools."""
        if global_pool not in (None, "avg", ""):
            raise ValueError(f"this model pools with 'avg' (or, without a head, not at all: ''); it cannot switch to "
                             f"{global_pool!r}")
        if num_classes and global_pool == "":
            raise ValueError("pooling can only be disabled without a head (num_classes=0), as in timm")
        reset_classifier(self, num_classes)  # the module function below
        if num_classes or global_pool is not None:
            self.global_pool = "avg" if num_classes else global_pool


    def forward_intermediates(self, x: Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        """The outputs of the stages in `indices` (an int n: the last n; None: all), with the final features unless
        `intermediates_only`, as timm's CNNs give them. There is no final norm (`norm`)."""
        from timm.models._features import feature_take_indices

        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        stages = self.feature_stages()
        take, max_index = feature_take_indices(len(stages), indices)
        x, intermediates = self.feature_stem(x), []
        for i, stage in enumerate(stages[:max_index + 1] if stop_early else stages):
            x = self.run_feature_stage(stage, x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last of `indices` (and the head): what timm's `features_only` wrapper calls,
        so a feature extractor computes nothing it does not return. There is no final norm (`prune_norm`)."""
        from timm.models._features import feature_take_indices

        take, max_index = feature_take_indices(len(self.feature_info), indices)
        self.keep_stages(max_index + 1)
        self.feature_info = self.feature_info[:max_index + 1]
        self.num_features = self.head_hidden_size = self.feature_info[-1]["num_chs"]
        if prune_head:
            self.reset_classifier(0)
        return take


def reset_classifier(model: nn.Module, num_classes: int, global_pool: str | None = None,
                     init: Callable[[str, Tensor], None] | None = None) -> None:
    """timm's `reset_classifier` for any family's standalone model: a fresh head (`init` per parameter, else
    PyTorch's) for `num_classes`, or none for 0 (the model then returns pooled features). The pooling is part of the
    architecture, so `global_pool` may only name the current one; `model.space` follows the new class count."""
    if global_pool not in (None, model.global_pool):
        raise ValueError(f"this model pools with {model.global_pool!r}; it cannot switch to {global_pool!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be a non-negative int, got {num_classes!r}")
    ref = next(model.parameters())
    model.head = nn.Linear(model.num_features, num_classes, device=ref.device, dtype=ref.dtype) \
        if num_classes else nn.Identity()
    for name, t in model.head.named_parameters() if init else ():
        init(name, t)
    model.head.train(model.training)
    model.num_classes = num_classes
    if num_classes:
        model.space = dataclasses.replace(model.space, num_classes=num_classes)


def _batch_norms(module: nn.Module) -> Iterator[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return ((name, m) for name, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def bn_statistics(module: nn.Module) -> dict[str, Tensor]:
    """Every BatchNorm buffer of `module` (running mean and variance, batch count) by its state_dict key: what a
    zoo stores per entry (spec 7), γ and β staying shared in the supernet."""
    return {f"{name}.{key}": buffer for name, bn in _batch_norms(module)
            for key, buffer in bn.named_buffers(recurse=False)}


MAX_RUNNING_MEAN = 1024.0  # unit-scale inputs give O(1) BN means (shipped: ≤ 2.2); past 1024, fp16 steps by ≥ 1


def bn_statistic_problem(key: str, values: np.ndarray) -> str | None:
    """Why one BatchNorm buffer (by its state_dict key) holds no trained model's values, or None: a negative variance
    answers NaN for every input, a mean past MAX_RUNNING_MEAN answers nonsense (a zoo's inputs are normalised)."""
    buffer = key.rpartition(".")[2]
    if buffer == "running_var" and values.size and values.min() < 0:
        return f"holds a negative BatchNorm variance ({values.min():g}): the model would answer NaN for any input"
    mean = values.flat[np.abs(values).argmax()] if buffer == "running_mean" and values.size else 0
    if abs(mean) > MAX_RUNNING_MEAN:
        return f"holds a BatchNorm running mean of {mean:g}, beyond ±{MAX_RUNNING_MEAN:g} for unit-scale inputs"
    return None


@torch.no_grad()
def load_bn_statistics(module: nn.Module, stats: Mapping[str, Tensor]) -> nn.Module:
    """Put `stats` (keys and shapes of `bn_statistics(module)`, all of them) into `module`'s BatchNorms; ValueError
    naming the first key that is missing, unknown or of another shape, before anything is changed."""
    own = bn_statistics(module)
    if missing := sorted(own.keys() - stats.keys()):
        raise ValueError(f"no statistics for {', '.join(missing[:3])}" + (" …" if len(missing) > 3 else ""))
    if unknown := sorted(stats.keys() - own.keys()):
        raise ValueError(f"statistics for {unknown[0]}, which the model does not have")
    for key, t in stats.items():
        if t.shape != own[key].shape:
            raise ValueError(f"statistics {key} of shape {tuple(t.shape)}, the model's is {tuple(own[key].shape)}")
    for key, t in stats.items():
        own[key].copy_(t)
    return module


@torch.no_grad()
def recalibrate_bn(module: nn.Module, batches: Iterable[Tensor]) -> nn.Module:
    """Recompute every BN's running statistics of `module` (an extracted path) as exact averages over `batches`.

    A supernet's BN sees other statistics under each path, so its running statistics fit none: each packaged path
    stores its own (spec 7). momentum None makes PyTorch average the batches' statistics with equal weight; the
    momentum is restored afterwards (BossNAS left it at 1, quirk 3). Returns `module` in eval mode.
    """
    norms = [bn for _, bn in _batch_norms(module)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    module.train()
    for x in batches:
        module(x)
    for bn, momentum in zip(norms, momenta, strict=True):
        bn.momentum = momentum
    return module.eval()
