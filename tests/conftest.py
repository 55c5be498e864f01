"""Test session set-up: tiny models run fastest, and steadiest on a busy machine, on one thread."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
