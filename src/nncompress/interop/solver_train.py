"""Train a Caffe net with its solver, as ``caffe train`` does, DNS and INQ layers included.

The Data layers read their own ``source`` LMDBs when they exist on disk
(:mod:`nncompress.interop.data_source`), or a data set of :mod:`nncompress.data` given instead
(``--data``); each layer's ``transform_param`` (mean, scale, crop, mirror) and ``batch_size``
still apply. Batches are read in order and wrap around, like Caffe's database cursor. The loop
follows ``Solver::Step``: a test pass every ``test_interval`` iterations (and at iteration 0 when
``test_initialization``), ``iter_size`` forward/backward passes per update, a display every
``display`` iterations and a snapshot every ``snapshot`` iterations and at the end.

Each snapshot is written twice: ``<prefix>_iter_<N>.caffemodel`` is a normal caffemodel (masks and
quantized values baked in, two blobs per layer) that plain Caffe loads; ``<prefix>_iter_<N>.masks
.caffemodel`` keeps the DNS/INQ layers' raw weights and masks, to continue with the next stage.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nncompress.data import Splits, StreamSplits, load_data
from nncompress.errors import ConfigError
from nncompress.interop.caffe_net import CaffeNet
from nncompress.interop.caffe_spec import LayerSpec
from nncompress.interop.caffemodel import read_caffemodel, write_caffemodel
from nncompress.interop.data_source import feed_tensors, source_data
from nncompress.interop.prototxt import Message
from nncompress.interop.solver import SolverSettings, make_optimizer, read_solver
from nncompress.interop.solver_nets import solver_net
from nncompress.interop.transform import CaffeTransform, TransformSpec
from nncompress.interop.weights import LoadedMasks, apply_masks, bake_masks, load_blobs, net_blobs
from nncompress.layers import COMPRESSIBLE
from nncompress.prepare import is_prepared, mask_fixed_gradients, prepare
from nncompress.train import apply_lr
from nncompress.train.device import tensors_to
from nncompress.train.distributed import (
    average_gradients,
    broadcast_model,
    is_writer,
    mean_over_ranks,
    rank_share,
    verify_ranks,
)

__all__ = ["DataFeed", "TrainResult", "prepare_compression", "train_from_solver"]

Log = Callable[[str], None]


def _silent(line: str) -> None:
    """The log of the ranks other than 0 under torchrun."""


@dataclass
class TrainResult:
    """What a run produced: the net, the test outputs by iteration and the files written."""

    net: CaffeNet
    iterations: int
    tests: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    snapshots: list[Path] = field(default_factory=list)


class DataFeed:
    """Batches for one Data layer: in order, wrapping around, with its transform_param applied.

    Args:
        x: images ``(N, C, H, W)`` in pixel units (not yet scaled).
        y: int64 labels.
        spec: the Data layer (``batch_size``, ``transform_param``).
        train: random crops and mirrors when True, center crops when False.
        seed: seed of the crop/mirror draws.
        base: the net's folder, where a relative ``mean_file`` is also looked up.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, spec: LayerSpec, train: bool,
                 seed: int, base: Path | None = None) -> None:
        data = spec.msg.message("data_param") or Message(where=spec.where)
        self.batch_size = data.get_int("batch_size", 0) or 0
        if self.batch_size <= 0:
            raise ConfigError(f"{spec.where}: Data layer '{spec.name}' needs "
                              "data_param { batch_size: N }")
        settings = TransformSpec.from_param(spec.msg.message("transform_param"), spec.where)
        self.transform = CaffeTransform(settings, base=base, seed=seed).train(train)
        self.x, self.y, self.train = x, y, train
        self.tops = spec.tops
        self.cursor = 0

    def next(self) -> dict[str, torch.Tensor]:
        """The next batch as ``{data top: images, label top: labels}``."""
        n = self.x.shape[0]
        index = (torch.arange(self.batch_size) + self.cursor) % n
        self.cursor = (self.cursor + self.batch_size) % n
        if self.train:  # under torchrun each rank takes its share of the batch
            index = rank_share(index)
        batch = self.transform(self.x[index])
        out = {self.tops[0]: batch}
        if len(self.tops) > 1:
            out[self.tops[1]] = self.y[index]
        return out


def _data_spec(net: CaffeNet, phase: str) -> LayerSpec | None:
    return next((s.spec for s in net.steps if phase in s.phases and s.spec.type == "Data"), None)


def prepare_compression(net: CaffeNet, masks: dict[str, LoadedMasks]) -> None:
    """Put the net's DNS/INQ layers under compression and restore the masks read with the weights.

    DNS masks of layers that are not DNS layers in this net are multiplied in first, so a DNS
    model entering INQ keeps its pruned entries at zero. INQ layers then take the quantize step of
    their ``portion`` pair.
    """
    compression = net.compression()
    dns = {k: c for k, c in compression.items() if c.kind == "dns"}
    inq = {k: c for k, c in compression.items() if c.kind == "inq"}
    for key, loaded in masks.items():
        if loaded.kind == "dns" and key not in dns:
            bake_masks(net.get_submodule(key), loaded.masks)
    plain = [n for n, m in net.named_modules() if type(m) in COMPRESSIBLE]
    for group in (dns, inq):
        if group:
            configs = {k: c.config() for k, c in group.items()}
            selection = {name: configs.get(name) for name in plain}
            prepare(net, next(iter(configs.values())), layers=selection)
            plain = [n for n in plain if n not in group]
    apply_masks(net, {k: m for k, m in masks.items() if k in dns or k in inq},
                {k: c.portions[0] for k, c in inq.items()})
    for key, c in inq.items():
        layer = net.get_submodule(key)
        if c.portions[1] > float(layer.inq_portion):  # type: ignore[arg-type]
            layer.quantize_to(c.portions[1])  # type: ignore[operator]


def _param_groups(net: CaffeNet) -> list[tuple[torch.Tensor, float, float]]:
    groups: list[tuple[torch.Tensor, float, float]] = []
    seen: set[int] = set()
    for step in net.steps:
        if step.key is None:
            continue
        module = net.get_submodule(step.key)
        for i, name in enumerate(("weight", "bias")):
            param = getattr(module, name, None)
            if isinstance(param, torch.nn.Parameter) and id(param) not in seen:
                seen.add(id(param))
                spec = step.spec.param(i)
                groups.append((param, spec.lr_mult, spec.decay_mult))
    return groups


class _Run:
    """The state of one ``caffe train`` run."""

    def __init__(self, settings: SolverSettings, net: CaffeNet,
                 splits: Splits | StreamSplits | None,
                 out_dir: Path, log: Log, base: Path | None = None) -> None:
        self.s, self.net, self.out_dir, self.log = settings, net, out_dir, log
        self.base = base
        self.optimizer = make_optimizer(settings, _param_groups(net))
        self.schedule = settings.schedule()
        seed = max(settings.random_seed, 0)
        self.train_feed = self._feed(splits, "TRAIN", seed)
        self.test_feed = self._feed(splits, "TEST", seed + 1)
        self.result = TrainResult(net=net, iterations=0)
        self.losses: deque[float] = deque(maxlen=max(settings.average_loss, 1))
        self.prefix = Path(settings.snapshot_prefix).name or Path(settings.path).stem

    def _feed(self, splits: Splits | StreamSplits | None, phase: str,
              seed: int) -> DataFeed | None:
        spec = _data_spec(self.net, phase)
        if spec is None:
            return None
        if splits is None:
            raise ConfigError(f"{spec.where}: the net reads a Data layer without a training "
                              "source; give a data set (--data mnist, idx:DIR or synthetic)")
        if isinstance(splits, StreamSplits):  # the net's own LMDBs, read batch by batch
            x, y = feed_tensors(splits, phase, next(self.net.parameters()).device)
        else:
            x, y = (splits.train_x, splits.train_y) if phase == "TRAIN" else \
                (splits.test_x, splits.test_y)
        return DataFeed(x, y, spec, train=phase == "TRAIN", seed=seed, base=self.base)

    def solve(self) -> TrainResult:
        s, it = self.s, 0
        while it < s.max_iter:
            if s.test_interval and it % s.test_interval == 0 and (it > 0 or s.test_initialization):
                self.test(it)
            self.step(it)
            it += 1
            self.result.iterations = it
            if s.snapshot and it % s.snapshot == 0:
                self.snapshot(it)
        if s.snapshot_after_train and (not s.snapshot or it % s.snapshot != 0):
            self.snapshot(it)
        if s.test_interval and it % s.test_interval == 0:
            self.test(it)
        return self.result

    def step(self, it: int) -> None:
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(self.s.iter_size):
            values = self.net.run(self.train_feed.next() if self.train_feed else {})
            losses = self.net.losses(values)
            if not losses:
                raise ConfigError("the TRAIN phase of the net has no loss layer")
            loss = sum(w * v for w, v in losses.values())
            assert isinstance(loss, torch.Tensor)
            (loss / self.s.iter_size).backward()  # type: ignore[no-untyped-call]
            total += float(loss.detach()) / self.s.iter_size
        average_gradients(self.net.parameters())  # under torchrun, as DDP would
        self.losses.append(mean_over_ranks(total))
        lr = self.schedule.lr_at(it)
        if self.s.display and it % self.s.display == 0:
            smoothed = sum(self.losses) / len(self.losses)
            self.log(f"Iteration {it}, loss = {smoothed:.6g}, lr = {lr:.6g}")
        apply_lr(self.optimizer, lr)
        if self.s.clip_gradients >= 0:
            # Caffe clips the gradient summed over iter_size before it divides by iter_size;
            # ours is already divided, so the threshold is divided too. Fixed INQ entries are
            # zeroed first, as the seed's backward did, so they do not count in the norm.
            mask_fixed_gradients(self.net)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.s.clip_gradients / self.s.iter_size)
        self.optimizer.step()

    @torch.no_grad()
    def test(self, it: int) -> dict[str, float]:
        self.net.eval()
        if self.test_feed is not None:
            self.test_feed.cursor = 0
        sums: dict[str, float] = {}
        count = self.s.test_iter[0] if self.s.test_iter else 1
        for _ in range(count):
            values = self.net.run(self.test_feed.next() if self.test_feed else {})
            for name in self.net.net_outputs():
                if name in values and values[name].numel() == 1:
                    sums[name] = sums.get(name, 0.0) + float(values[name])
        means = {k: v / count for k, v in sums.items()}
        self.log(f"Iteration {it}, Testing net: " +
                 ", ".join(f"{k} = {v:.6g}" for k, v in means.items()))
        self.result.tests.append((it, means))
        self.net.train()
        return means

    def snapshot(self, it: int) -> None:
        verify_ranks(self.net, f"at the snapshot of iteration {it}")
        if not is_writer():  # under torchrun only rank 0 writes
            return
        base = self.out_dir / f"{self.prefix}_iter_{it}"
        plain = base.with_name(base.name + ".caffemodel")
        write_caffemodel(plain, net_blobs(self.net), self.net.net_name, self._io())
        self.result.snapshots.append(plain)
        if is_prepared(self.net):
            raw = base.with_name(base.name + ".masks.caffemodel")
            write_caffemodel(raw, net_blobs(self.net, with_masks=True), self.net.net_name,
                             self._io())
            self.result.snapshots.append(raw)
        self.log(f"Snapshotting to binary proto file {plain}")

    def _io(self) -> dict[str, tuple[list[str], list[str]]]:
        return {s.spec.name: (s.spec.bottoms, s.spec.tops) for s in self.net.steps if s.key}


def train_from_solver(solver: str | Path, net: str | Path | None = None,
                      weights: str | Path | None = None, data: str | None = None,
                      out_dir: str | Path = ".", max_iter: int | None = None,
                      log: Log = print, *, allow_missing: bool = False,
                      allow_nonfinite: bool = False,
                      device: torch.device | None = None) -> TrainResult:
    """Run ``caffe train --solver SOLVER [--weights W]`` with nncompress.

    Args:
        solver: the solver prototxt.
        net: the net prototxt; the solver's ``net`` field when None.
        weights: a caffemodel to start from (masks in it are restored).
        data: the data set replacing the Data layers' databases (``mnist``, ``idx:DIR``,
            ``synthetic``...); None: the Data layers' own ``source`` LMDBs, when on disk.
        out_dir: where snapshots go (file names from the solver's ``snapshot_prefix``).
        max_iter: overrides the solver's ``max_iter`` (for short trial runs).
        log: receives the progress lines.
        allow_missing: warn, instead of failing, about net layers ``weights`` lacks.
        allow_nonfinite: warn, instead of failing, about NaN/inf values in ``weights``.
        device: where the net and the data go (the CPU when None); see
            :func:`nncompress.train.device.resolve_device`.

    Returns:
        The trained net, test outputs and snapshot paths.

    Raises:
        FormatError: a file is missing (naming its path) or malformed (file:line:column).
        ConfigError: an unsupported layer or solver setting, or weights that do not fit the net.

    Example:
        >>> r = train_from_solver("lenet_solver_DNS.prototxt", data="synthetic", max_iter=10,
        ...                       out_dir="run")  # doctest: +SKIP
    """
    settings = read_solver(solver)
    if max_iter is not None:
        settings.max_iter = max_iter
    net_msg, net_path = solver_net(settings, net)
    # --data replaces the Data layers' own sources (LMDBs on disk); without either, _feed says so
    splits = load_data(data, scale=1.0) if data else source_data(net_msg, net_path.parent)
    seed = max(settings.random_seed, 0)
    if settings.random_seed >= 0:
        torch.manual_seed(settings.random_seed)  # dropout draws
    model = CaffeNet(net_msg, input_shape=splits.input_shape if splits else None, seed=seed)
    masks: dict[str, LoadedMasks] = {}
    if weights is not None:
        masks = load_blobs(model, read_caffemodel(weights), weights, allow_missing=allow_missing,
                           allow_nonfinite=allow_nonfinite)
    prepare_compression(model, masks)
    if device is not None:  # the net, its masks and the in-memory data
        model, splits = model.to(device), tensors_to(splits, device)
    broadcast_model(model)  # under torchrun every rank starts from rank 0's net
    if not is_writer():
        log = _silent
    log(f"Solving {model.net_name or net_path} ({settings.type}, {settings.max_iter} iterations)")
    return _Run(settings, model, splits, Path(out_dir), log, net_path.parent).solve()
