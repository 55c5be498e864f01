"""Seeded mutations of Caffe net prototxts, each tagged with whether the result is still valid.

A mutation edits the text of a net (one of the LeNet fixtures, or a net a test writes): a number
set to a hostile value, a field inserted, deleted or misspelt, a layer renamed to another's name.
``invalid`` is True when Caffe itself would refuse the result (or nncompress must, for its
resources), False when the result is a valid net, None when it depends on details the generator
does not track. :func:`classify` runs one mutated net and names its outcome.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).parents[1].parent / "shared" / "fixtures" / "caffe" / "mnist"

HOSTILE = (0, -1, 3, 100, 999_999_999, 2_147_483_647, 10 ** 20, 2 ** 31)
NUMERIC = ("num_output", "kernel_size", "stride", "pad", "group", "dilation", "local_size", "dim")
PARAM_MESSAGES = ("convolution_param", "inner_product_param", "pooling_param",
                  "dns_convolution_param", "dns_inner_product_param", "inq_convolution_param",
                  "inq_inner_product_param")
# a child interpreter: every mutation of seed 14 classified under an address-space limit of
# what it uses plus 1 GiB, so a huge allocation fails instead of swapping
LIMITED_CHILD = r"""
import json, resource, sys
import torch
torch.set_num_threads(1)
from tests.caffe_mutations import base_nets, classify, mutations
bases = base_nets()
assert all(classify(text) == "accepted" for text in bases.values())
with open("/proc/self/status") as status:
    used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (used + (1 << 30), resource.RLIM_INFINITY))
print(json.dumps([[m.detail, m.invalid, classify(m.text)]
                  for m in mutations(bases, seed=14, count=330)]))
"""
_FIELD = re.compile(r"^(\s*)([a-z_]+)(\s*:\s*)(\S+)\s*$")
_OPEN = re.compile(r"^\s*([a-z_]+)\s*\{")


@dataclass
class Mutation:
    """One mutated net: what was done, the text, and whether Caffe would refuse it."""

    kind: str
    detail: str
    text: str
    invalid: bool | None


def base_nets() -> dict[str, str]:
    """The LeNet net prototxts of the shared fixtures, by file name (empty when absent)."""
    if not FIXTURES.is_dir():
        return {}
    return {p.name: p.read_text(encoding="utf-8")
            for p in sorted(FIXTURES.glob("lenet_train_test*.prototxt"))}


def _enclosing(lines: list[str], index: int) -> str:
    """The name of the innermost message that line ``index`` sits in."""
    depth = 0
    for i in range(index - 1, -1, -1):
        depth += lines[i].count("}") - lines[i].count("{")
        if depth < 0:
            m = _OPEN.match(lines[i])
            return m.group(1) if m else ""
    return ""


def _set_number(lines: list[str], rng: random.Random) -> tuple[str, bool | None] | None:
    spots = [i for i, line in enumerate(lines)
             if (m := _FIELD.match(line)) and m.group(2) in NUMERIC]
    if not spots:
        return None
    i = rng.choice(spots)
    m = _FIELD.match(lines[i])
    assert m is not None
    name, value = m.group(2), rng.choice(HOSTILE)
    lines[i] = f"{m.group(1)}{name}{m.group(3)}{value}"
    refused = value > 10 ** 9 or value < 0 or (value == 0 and name != "pad")
    invalid: bool | None = True if refused else None
    return f"{name}: {value}", invalid


def _insert(lines: list[str], rng: random.Random) -> tuple[str, bool | None] | None:
    spots = [i for i, line in enumerate(lines)
             if (m := _OPEN.match(line)) and m.group(1) in ("convolution_param", "pooling_param")]
    if not spots:
        return None
    i = rng.choice(spots)
    name, value = rng.choice((("pad", 100), ("pad", 2), ("group", 3), ("group", 7),
                              ("stride", 0), ("dilation", 0)))
    lines.insert(i + 1, f"    {name}: {value}")
    return f"{name}: {value} in {_OPEN.match(lines[i]).group(1)}", (  # type: ignore[union-attr]
        True if value == 0 or name == "group" else None)


def _typo(lines: list[str], rng: random.Random) -> tuple[str, bool | None] | None:
    spots = [i for i, line in enumerate(lines)
             if _FIELD.match(line) and _enclosing(lines, i) in PARAM_MESSAGES]
    if not spots:
        return None
    i = rng.choice(spots)
    m = _FIELD.match(lines[i])
    assert m is not None
    name = m.group(2)
    cut = rng.randrange(1, len(name))
    typo = name[:cut] + name[cut + 1:] if rng.random() < 0.5 else name[:cut] + "x" + name[cut:]
    lines[i] = f"{m.group(1)}{typo}{m.group(3)}{m.group(4)}"
    return f"{name} -> {typo} in {_enclosing(lines, i)}", True


def _delete(lines: list[str], rng: random.Random) -> tuple[str, bool | None] | None:
    spots = [i for i, line in enumerate(lines)  # the layer's own fields, not its fillers'
             if (m := _FIELD.match(line)) and m.group(2) in ("top", "bottom", "type")
             and _enclosing(lines, i) == "layer"]
    if not spots:
        return None
    i = rng.choice(spots)
    removed = lines.pop(i).strip()
    return f"removed {removed}", True


def _rename(lines: list[str], rng: random.Random) -> tuple[str, bool | None] | None:
    names = [i for i, line in enumerate(lines) if re.match(r"^  name:", line)]
    if len(names) < 2:
        return None
    i, j = rng.sample(names, 2)
    old, new = lines[i].strip(), lines[j].strip()
    lines[i] = lines[j]
    # the fixtures' Data layers share one name across phases; other duplicates meet in a phase
    return f"{old} -> {new}", old != new  # another layer's name: both meet in some phase


MUTATORS = {"number": _set_number, "insert": _insert, "typo": _typo, "delete": _delete,
            "rename": _rename}


def mutations(bases: dict[str, str], seed: int, count: int) -> Iterator[Mutation]:
    """``count`` seeded mutations of the given net texts (round robin over the mutators)."""
    rng = random.Random(seed)
    kinds = sorted(MUTATORS)
    made = 0
    while made < count:
        kind = kinds[made % len(kinds)]
        name = rng.choice(sorted(bases))
        lines = bases[name].splitlines()
        result = MUTATORS[kind](lines, rng)
        if result is None:
            continue
        made += 1
        yield Mutation(kind, f"{name}: {result[0]}", "\n".join(lines) + "\n", result[1])


def classify(text: str) -> str:
    """Build the net (input 1x28x28) and run one TEST batch: ``accepted``, ``refused``
    (an nncompress error), ``huge`` (an allocation failed) or ``traceback``."""
    import torch

    from nncompress.errors import NNCompressError
    from nncompress.interop.caffe_net import from_text

    try:
        net = from_text(text, input_shape=(1, 28, 28)).eval()
        with torch.no_grad():
            net(torch.zeros(2, 1, 28, 28))
    except NNCompressError:
        return "refused"
    except MemoryError:
        return "huge"
    except Exception as exc:
        text = str(exc)
        return "huge" if "alloc" in text or "overflow" in text.lower() else "traceback"
    return "accepted"
