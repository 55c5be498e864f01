"""Multi-process training: the Python API recipe on 2 gloo processes against 1 process.

One module-scoped run of two spawned processes (loopback TCP only) serves several tests; the
same scenario also runs in the test process itself, where no process group exists, as the
single-process reference.
"""

from __future__ import annotations

import datetime
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nncompress as nnc
from nncompress.errors import ConfigError
from nncompress.train import distributed as nd
from nncompress.train.loop import BatchOrder, evaluate
from tests.ports import free_port

GLOBAL_BATCH = 32
DNS_ITERATIONS = 30
INQ_ITERATIONS = 8
PORTIONS = (0.5, 0.75)


def _data() -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(256 + 101, 12, generator=generator)
    teacher = torch.randn(12, 4, generator=generator)
    y = (x @ teacher).argmax(dim=1)
    return x[:256], y[:256], x[256:], y[256:]


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)  # ranks seed differently on purpose: the wrap must make them agree
    return nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 4))


def _train(ddp: nn.Module, optimizer: torch.optim.Optimizer, order: BatchOrder,
           iterations: range, x: torch.Tensor, y: torch.Tensor) -> None:
    for i in iterations:
        batch = nd.rank_share(order.indices(i))
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(ddp(x[batch]), y[batch]).backward()
        optimizer.step()


def _scenario(seed: int) -> dict[str, Any]:
    """The README recipe: prepare, wrap, train, quantize on every rank; returns what it saw."""
    x, y, test_x, test_y = _data()
    order = BatchOrder(len(y), GLOBAL_BATCH, seed=3)
    model = _model(seed)
    nnc.prepare(model, nnc.DNSConfig(c_rate=0.6, gamma=1e-2, iter_stop=25))
    ddp = nd.wrap(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    _train(ddp, optimizer, order, range(DNS_ITERATIONS), x, y)
    result: dict[str, Any] = {
        "synced_buffers": sorted(getattr(ddp, "named_module_buffers", {})),
        "dns_masks": {n: m.mask("weight").clone() for n, m in nnc.compressed_layers(model)},
        "dns_weights": {k: v.clone() for k, v in model.state_dict().items()},
        "dns_checksums": nd.layer_checksums(ddp)[1],
    }
    nd.verify_ranks(ddp, "after DNS")
    model = nnc.finalize(model)
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=5))
    ddp = nd.wrap(model, gradient_as_bucket_view=True)  # the hooks mask the bucket's views
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2)
    start = DNS_ITERATIONS
    for portion in PORTIONS:
        nnc.quantize_step(model, portion)
        _train(ddp, optimizer, order, range(start, start + INQ_ITERATIONS), x, y)
        start += INQ_ITERATIONS
    result["eval"] = nd.evaluate_sharded(ddp, test_x, test_y, batch_size=25)
    result["inq_state"] = {k: v.clone() for k, v in model.state_dict().items()}
    result["inq_checksums"] = nd.layer_checksums(ddp)[1]
    result["kept"] = nnc.summarize(model).total_kept
    nd.verify_ranks(ddp, "after INQ")
    return result


def _break_and_verify(model_seed: int) -> str:
    """Rank 1 changes one fixed value of layer '2'; verify_ranks must name it on every rank."""
    model = _model(0)
    nnc.prepare(model, nnc.INQConfig(num_quantum_values=5))
    nnc.quantize_step(model, 0.5)
    ddp = nd.wrap(model)
    if nd.rank() == 1:
        layer = dict(nnc.compressed_layers(model))["2"]
        fixed = layer.fixed_values("weight")
        assert fixed is not None
        fixed.view(-1)[torch.isnan(fixed).view(-1).logical_not().nonzero()[0]] *= 2
    try:
        nd.verify_ranks(ddp, "at the test")
    except nd.RankMismatchError as error:
        return str(error)
    return ""


def _writer_fails() -> str:
    """Rank 0's action fails with a user error; every rank must end with its message."""
    def action() -> int:
        raise ConfigError("output folder 'x' is not empty")

    try:
        nd.writer_first(action)
    except nnc.NNCompressError as error:
        return f"{type(error).__name__}: {error}"
    return ""


def _fail_fast() -> float:
    """Rank 1 fails inside failure_guard; rank 0's pending all-reduce must fail soon after."""
    if nd.rank() == 1:
        with pytest.raises(RuntimeError), nd.failure_guard():
            raise RuntimeError("rank 1 breaks")
        return 0.0
    began = time.monotonic()
    with pytest.raises(RuntimeError):
        torch.distributed.all_reduce(torch.ones(1))
    return time.monotonic() - began


def _worker(process: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(process), WORLD_SIZE="2", LOCAL_RANK=str(process),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    context = nd.init_distributed("gloo", timeout=datetime.timedelta(seconds=60))
    result = _scenario(seed=process)
    result["context"] = (context.rank, context.world_size, context.backend, context.is_writer)
    result["mismatch"] = _break_and_verify(process)
    result["writer_fails"] = _writer_fails()
    result["shared"] = nd.share_from_writer(f"from rank {process}")
    torch.save(result, Path(out) / f"rank{process}.pt")
    seconds = _fail_fast()  # last: rank 1 leaves the group here
    if process == 0:
        (Path(out) / "fail_seconds.txt").write_text(repr(seconds))
    nd.shutdown()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ddp")
    context = torch.multiprocessing.start_processes(
        _worker, args=(free_port(), str(out)), nprocs=2, join=False, start_method="spawn")
    for process in context.processes:
        process.join(timeout=300)
    for process in context.processes:
        if process.is_alive():  # hung: fail below, but leave no process behind
            process.kill()
            process.join()
    codes = [process.exitcode for process in context.processes]
    # Rank 1 leaves the group on purpose while rank 0 waits on it; gloo may then abort rank
    # 1's process as it exits (SIGABRT, after its results are written). Every other end fails.
    assert codes[0] == 0 and codes[1] in (0, -signal.SIGABRT), codes
    results = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    results[0]["fail_seconds"] = float((out / "fail_seconds.txt").read_text())
    return results


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    assert not nd.is_distributed()
    return _scenario(seed=0)


@pytest.mark.slow
def test_ranks_agree_after_dns_and_inq(ranks: list[dict[str, Any]]) -> None:
    first, second = ranks
    assert first["context"] == (0, 2, "gloo", True)
    assert second["context"] == (1, 2, "gloo", False)
    for key in ("dns_masks", "dns_weights", "inq_state"):
        assert first[key].keys() == second[key].keys()
        for name, value in first[key].items():
            assert torch.equal(value.nan_to_num(), second[key][name].nan_to_num()), (key, name)
    assert torch.equal(first["dns_checksums"], second["dns_checksums"])
    assert torch.equal(first["inq_checksums"], second["inq_checksums"])
    assert first["eval"] == second["eval"]
    assert not any(m.all() for m in first["dns_masks"].values())  # DNS did prune


@pytest.mark.slow
def test_compression_buffers_are_not_broadcast_by_ddp(ranks: list[dict[str, Any]]) -> None:
    assert ranks[0]["synced_buffers"] == []  # the model's only buffers are compression state


@pytest.mark.slow
def test_fixed_entries_stay_frozen_under_ddp(ranks: list[dict[str, Any]]) -> None:
    state = ranks[0]["inq_state"]
    for layer in ("0", "2"):
        fixed, weight = state[f"{layer}.weight_fixed"], state[f"{layer}.weight"]
        is_fixed = ~torch.isnan(fixed)
        assert 0 < int(is_fixed.sum()) < fixed.numel()
        assert torch.equal(weight[is_fixed], fixed[is_fixed].float())
        assert not torch.equal(weight[~is_fixed], weight[~is_fixed].bfloat16().float())


@pytest.mark.slow
def test_two_processes_match_one(ranks: list[dict[str, Any]],
                                 single: dict[str, Any]) -> None:
    for name, mask in single["dns_masks"].items():
        assert torch.equal(mask, ranks[0]["dns_masks"][name]), name
    for name, value in single["inq_state"].items():
        torch.testing.assert_close(ranks[0]["inq_state"][name], value, rtol=1e-4, atol=1e-5,
                                   equal_nan=True)
    assert ranks[0]["kept"] == single["kept"]
    loss, accuracy = ranks[0]["eval"]
    assert loss == pytest.approx(single["eval"][0], rel=1e-4)
    assert accuracy == pytest.approx(single["eval"][1], abs=1 / 101 + 1e-9)


@pytest.mark.slow
def test_mismatch_names_layer_and_rank(ranks: list[dict[str, Any]]) -> None:
    for result in ranks:
        assert "layer '2' fixed values: rank 1 differs from rank 0" in result["mismatch"]
        assert "layer '0'" not in result["mismatch"]
        assert "at the test" in result["mismatch"]


@pytest.mark.slow
def test_a_user_error_on_rank_0_stops_every_rank(ranks: list[dict[str, Any]]) -> None:
    assert ranks[0]["writer_fails"] == "ConfigError: output folder 'x' is not empty"
    assert ranks[1]["writer_fails"] == ("NNCompressError: rank 0 stopped the job: output "
                                        "folder 'x' is not empty")
    assert [r["shared"] for r in ranks] == ["from rank 0", "from rank 0"]


@pytest.mark.slow
def test_failed_rank_takes_the_job_down(ranks: list[dict[str, Any]]) -> None:
    assert ranks[0]["fail_seconds"] < 30  # well before the 60 s collective timeout


def _leave(process: int, port: int, out: str) -> None:
    """Rank 0 comes late to shutdown; rank 1 notes when its own shutdown returned."""
    os.environ.update(RANK=str(process), WORLD_SIZE="2", LOCAL_RANK=str(process),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    nd.init_distributed("gloo", timeout=datetime.timedelta(seconds=60))
    if process == 0:
        time.sleep(1.0)
    came = time.time()
    nd.shutdown()
    left = time.time()
    assert not nd.is_distributed()
    (Path(out) / f"rank{process}.txt").write_text(f"{came} {left}")


@pytest.mark.slow
def test_a_normal_end_waits_for_every_rank(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_leave, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    (came_0, _), (came_1, left_1) = (
        [float(t) for t in (tmp_path / f"rank{r}.txt").read_text().split()] for r in range(2))
    assert came_0 - came_1 > 0.5  # rank 0 slept before coming
    assert left_1 >= came_0  # rank 1 did not leave before rank 0 came


def test_single_process_helpers_are_no_ops() -> None:
    net = nn.Linear(3, 2)
    assert nd.wrap(net) is net
    assert (nd.rank(), nd.world_size(), nd.is_writer()) == (0, 1, True)
    assert nd.rank_share(torch.arange(5)).tolist() == [0, 1, 2, 3, 4]
    nd.verify_ranks(net)


def test_rank_share_splits_the_global_batch() -> None:
    order = BatchOrder(50, 12, seed=1)
    for layout in ("contiguous", "strided"):
        for i in range(6):
            parts = [nd.rank_share(order.indices(i), layout, process=r, processes=3)
                     for r in range(3)]
            assert [len(p) for p in parts] == [4, 4, 4]
            assert sorted(torch.cat(parts).tolist()) == sorted(order.indices(i).tolist())
    assert nd.rank_share(torch.arange(6), "strided", process=2, processes=3).tolist() == [2, 5]


def test_batch_that_does_not_divide_names_both_numbers() -> None:
    with pytest.raises(ConfigError, match=r"batch_size 30 does not divide over 4 processes"):
        nd.check_batch_divides(30, 4)
    with pytest.raises(ConfigError, match="batch layout 'zigzag'"):
        nd.rank_share(torch.arange(4), "zigzag", process=0, processes=2)


def test_sharded_evaluation_alone_equals_evaluate() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    x, y = torch.randn(103, 5), torch.randint(0, 3, (103,))
    assert nd.evaluate_sharded(net, x, y, batch_size=10) == evaluate(net, x, y, batch_size=10)


def test_checksums_see_one_changed_bit() -> None:
    net = nnc.prepare(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), nnc.DNSConfig())
    names, before = nd.layer_checksums(net)
    assert names == ["0", "1"]
    layer = dict(nnc.compressed_layers(net))["1"]
    mask = layer.mask("weight")
    assert mask is not None
    mask[0, 0] = False
    after = nd.layer_checksums(net)[1]
    assert torch.equal(before[0], after[0])
    assert [bool(v) for v in before[1] != after[1]] == [False, True, False, False]


def test_backend_choice_is_checked() -> None:
    with pytest.raises(ConfigError, match="backend 'mpi' is not one of gloo, nccl"):
        nd.init_distributed("mpi")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="'nccl' needs CUDA"):
            nd.init_distributed("nccl")


def test_torchrun_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not nd.launched_by_torchrun()
    assert nd.init_distributed() == nd.DistContext()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "zero")
    assert nd.launched_by_torchrun()
    with pytest.raises(ConfigError, match="LOCAL_RANK='zero' is not an integer"):
        nd.init_distributed("gloo")
    assert not nd.is_distributed()


def test_nccl_is_refused_for_a_run_or_solver_on_the_cpu(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nncompress.cli import main

    code = main(["run", "demo_lenet300_100", "--out", str(tmp_path / "run"),
                 "--dist-backend", "nccl"])
    assert code == 1
    assert "use --dist-backend gloo" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    code = main(["caffe", "train", "--solver", str(tmp_path / "solver.prototxt"), "--out",
                 str(tmp_path / "caffe"), "--dist-backend", "nccl"])
    assert code == 1
    assert "nccl needs the model on a GPU, and the device is 'cpu'" in capsys.readouterr().err
    assert not (tmp_path / "caffe").exists()
