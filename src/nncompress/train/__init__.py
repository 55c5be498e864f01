"""Training building blocks: stage configs, Caffe learning-rate policies and the LARS optimizer.

Example:
    >>> import torch
    >>> from nncompress.train import LRSchedule, apply_lr
    >>> schedule = LRSchedule("multistep", base_lr=0.1, stepvalues=(100, 200))
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> apply_lr(opt, schedule.lr_at(150))
    >>> round(opt.param_groups[0]["lr"], 6)
    0.01
"""

from __future__ import annotations

from nncompress.train.config import BiasConfig, LRConfig, OptimizerConfig
from nncompress.train.lars import LarsSGD
from nncompress.train.lr import POLICIES, LRSchedule, apply_lr

__all__ = ["POLICIES", "BiasConfig", "LRConfig", "LRSchedule", "LarsSGD", "OptimizerConfig",
           "apply_lr"]
