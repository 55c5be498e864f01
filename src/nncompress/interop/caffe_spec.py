"""The layer list of a Caffe net prototxt, normalized: current ``layer`` and legacy ``layers``.

Each layer becomes a :class:`LayerSpec` (name, type, bottoms, tops, phase rules, per-blob
``lr_mult``/``decay_mult``, loss weights). DNS and INQ layer types of the seed
(``DNSConvolution``, ``DNSInnerProduct``, ``INQConvolution``, ``INQInnerProduct``) and Guo's
(``CConvolution``, ``CInnerProduct``) are split into their base type plus a :class:`Compression`
holding the parameters, with the seed's proto defaults for absent fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from nncompress.dns import DNSConfig
from nncompress.errors import ConfigError
from nncompress.inq import INQConfig
from nncompress.interop.prototxt import Field, Message, PrototxtError

__all__ = ["COMPRESSION_TYPES", "Compression", "LayerSpec", "ParamSpec", "layer_specs",
           "module_key", "phase_included"]

# type -> (base type, kind, name of its parameter message)
COMPRESSION_TYPES: dict[str, tuple[str, str, str]] = {
    "DNSConvolution": ("Convolution", "dns", "dns_convolution_param"),
    "DNSInnerProduct": ("InnerProduct", "dns", "dns_inner_product_param"),
    "CConvolution": ("Convolution", "dns", "cconvolution_param"),
    "CInnerProduct": ("InnerProduct", "dns", "cinner_product_param"),
    "INQConvolution": ("Convolution", "inq", "inq_convolution_param"),
    "INQInnerProduct": ("InnerProduct", "inq", "inq_inner_product_param"),
}

# Guo's code hard-codes the hysteresis band at 0.9/1.1; the seed made it a field (0.95/1.05).
_GUO_ALPHA = (0.9, 1.1)

# legacy V1 enum names of the layer types we run
_V1_TYPES = {
    "ACCURACY": "Accuracy", "CONCAT": "Concat", "CONVOLUTION": "Convolution", "DATA": "Data",
    "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData", "ELTWISE": "Eltwise", "FLATTEN": "Flatten",
    "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "POOLING": "Pooling", "RELU": "ReLU",
    "SIGMOID": "Sigmoid", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "TANH": "TanH",
}
_V1_NUMBERS = {4: "Convolution", 14: "InnerProduct", 17: "Pooling", 18: "ReLU", 19: "Sigmoid",
               23: "TanH", 6: "Dropout", 15: "LRN", 25: "Eltwise", 3: "Concat", 8: "Flatten",
               22: "Split", 20: "Softmax", 21: "SoftmaxWithLoss", 1: "Accuracy", 5: "Data",
               32: "DummyData", 36: "Silence", 7: "EuclideanLoss", 27: "SigmoidCrossEntropyLoss"}


@dataclass
class ParamSpec:
    """Training multipliers of one blob (``param { lr_mult decay_mult }``)."""

    lr_mult: float = 1.0
    decay_mult: float = 1.0
    name: str = ""


@dataclass
class Compression:
    """The DNS or INQ parameters of a layer, as written in its ``*_param`` message.

    For INQ, ``portions`` is the ``(previous, current)`` pair of accumulated portions; a single
    value means ``(0, value)``.
    """

    kind: str
    values: dict[str, Any]
    where: str

    def config(self) -> DNSConfig | INQConfig:
        """The matching :class:`~nncompress.DNSConfig` or :class:`~nncompress.INQConfig`.

        Raises:
            ConfigError: a value is out of range; the message names the prototxt location.
        """
        try:
            if self.kind == "dns":
                return DNSConfig(**self.values)
            return INQConfig(num_quantum_values=self.values["num_quantum_values"])
        except ConfigError as exc:
            raise ConfigError(f"{self.where}: {exc}") from None

    @property
    def portions(self) -> tuple[float, float]:
        """INQ only: ``(previous, current)`` accumulated portions."""
        previous, current = self.values["portions"]
        return float(previous), float(current)


@dataclass
class LayerSpec:
    """One layer of a net prototxt, normalized across the current and the legacy format."""

    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    msg: Message
    where: str
    include: list[Message] = field(default_factory=list)
    exclude: list[Message] = field(default_factory=list)
    params: list[ParamSpec] = field(default_factory=list)
    loss_weights: list[float] = field(default_factory=list)
    compression: Compression | None = None
    written_type: str = ""

    def param(self, index: int) -> ParamSpec:
        """The multipliers of blob ``index`` (Caffe's defaults when not written)."""
        return self.params[index] if index < len(self.params) else ParamSpec()


def phase_included(spec: LayerSpec, phase: str) -> bool:
    """Caffe's include/exclude rules for a net state of ``phase``, level 0 and no stages.

    Example:
        >>> from nncompress.interop.prototxt import parse_text
        >>> net = parse_text('layer { name: "a" type: "ReLU" include { phase: TEST } }')
        >>> [phase_included(layer_specs(net)[0], p) for p in ("TRAIN", "TEST")]
        [False, True]
    """
    def met(rule: Message) -> bool:
        if rule.has("phase") and rule.get_enum("phase", ("TRAIN", "TEST"), "TEST") != phase:
            return False
        min_level, max_level = rule.get_int("min_level"), rule.get_int("max_level")
        if (min_level is not None and min_level > 0) or (max_level is not None and max_level < 0):
            return False
        return not rule.has("stage")

    if spec.include:
        return any(met(r) for r in spec.include)
    return not any(met(r) for r in spec.exclude)


def layer_specs(net: Message) -> list[LayerSpec]:
    """The layers of a parsed net prototxt, in file order.

    Raises:
        PrototxtError: a field has the wrong kind, or the file mixes ``layer`` and ``layers``.

    Example:
        >>> from nncompress.interop.prototxt import parse_text
        >>> [s.type for s in layer_specs(parse_text('layers { name: "r" type: RELU }'))]
        ['ReLU']
    """
    if net.has("layer") and net.has("layers"):
        where = net.all("layers")[0].where
        raise PrototxtError(where, "the net mixes 'layer' and the legacy 'layers'; use one")
    specs = _net_inputs(net)
    specs += [_spec(m) for m in net.messages("layer")]
    specs += [_legacy_spec(m) for m in net.messages("layers")]
    return specs


def _net_inputs(net: Message) -> list[LayerSpec]:
    """The deprecated net-level ``input`` / ``input_shape`` / ``input_dim`` as one Input layer."""
    names = net.strs("input")
    if not names:
        return []
    shapes = [m.ints("dim") for m in net.messages("input_shape")]
    dims = net.ints("input_dim")
    if not shapes and dims:
        shapes = [dims[i:i + 4] for i in range(0, len(dims), 4)]
    if len(shapes) not in (1, len(names)):
        raise PrototxtError(net.where, f"the net has {len(names)} inputs and {len(shapes)} "
                            "input shapes")
    where = net.all("input")[0].where
    param = Message(where=where, fields=[
        Field("shape", Message(where=where, fields=[Field("dim", d, where) for d in shape]),
              where) for shape in shapes])
    msg = Message(where=where, fields=[Field("input_param", param, where)])
    return [LayerSpec(name="input", type="Input", bottoms=[], tops=names, msg=msg, where=where,
                      written_type="Input")]


def _spec(msg: Message) -> LayerSpec:
    written = msg.get_str("type", "") or ""
    spec = LayerSpec(
        name=msg.get_str("name", "") or "", type=written, bottoms=msg.strs("bottom"),
        tops=msg.strs("top"), msg=msg, where=msg.where, include=msg.messages("include"),
        exclude=msg.messages("exclude"), loss_weights=msg.floats("loss_weight"),
        written_type=written,
        params=[ParamSpec(_or(p.get_float("lr_mult"), 1.0), _or(p.get_float("decay_mult"), 1.0),
                          p.get_str("name", "") or "") for p in msg.messages("param")])
    if written in COMPRESSION_TYPES:
        base, kind, param_name = COMPRESSION_TYPES[written]
        spec.type = base
        sub = msg.message(param_name) or Message(where=msg.where)
        where = sub.where if msg.has(param_name) else msg.where
        guo = written.startswith("C")
        spec.compression = _dns(sub, where, guo) if kind == "dns" else _inq(sub, where)
    return spec


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _dns(sub: Message, where: str, guo: bool) -> Compression:
    alpha_low, alpha_high = _GUO_ALPHA if guo else (0.95, 1.05)
    values = {
        "c_rate": _or(sub.get_float("c_rate"), 1.0),
        "gamma": _or(sub.get_float("gamma"), 0.001),
        "power": _or(sub.get_float("power"), 1.0),
        "iter_stop": sub.get_int("iter_stop", 10_000_000),
        "alpha_low": _or(sub.get_float("alpha_low"), alpha_low),
        "alpha_high": _or(sub.get_float("alpha_high"), alpha_high),
    }
    return Compression("dns", values, where)


def _inq(sub: Message, where: str) -> Compression:
    portions = sub.floats("portion")
    if not portions:
        raise PrototxtError(where, "an INQ layer needs 'portion' (the accumulated portion, or "
                            "the pair previous, current; e.g. portion: 0.0 portion: 0.3)")
    if len(portions) > 2:
        raise PrototxtError(sub.all("portion")[2].where,
                            "'portion' takes at most two values (previous, current)")
    pair = (0.0, portions[0]) if len(portions) == 1 else (portions[0], portions[1])
    if not 0 <= pair[0] <= pair[1] <= 1:  # (0, 0): train with nothing quantized yet
        raise PrototxtError(sub.all("portion")[0].where,
                            f"portions {list(pair)} must satisfy 0 <= previous <= current <= 1")
    values = {"portions": pair, "num_quantum_values": sub.get_int("num_quantum_values", 8)}
    return Compression("inq", values, where)


def _legacy_spec(msg: Message) -> LayerSpec:
    f = msg.last("type")
    written = "" if f is None else str(f.value)
    if f is not None and isinstance(f.value, int):
        layer_type = _V1_NUMBERS.get(f.value, f"V1 type {f.value}")
    else:
        layer_type = _V1_TYPES.get(written, written.title().replace("_", ""))
    lrs, decays = msg.floats("blobs_lr"), msg.floats("weight_decay")
    params = [ParamSpec(lrs[i] if i < len(lrs) else 1.0, decays[i] if i < len(decays) else 1.0)
              for i in range(max(len(lrs), len(decays)))]
    return LayerSpec(
        name=msg.get_str("name", "") or "", type=layer_type, bottoms=msg.strs("bottom"),
        tops=msg.strs("top"), msg=msg, where=msg.where, include=msg.messages("include"),
        exclude=msg.messages("exclude"), loss_weights=msg.floats("loss_weight"),
        params=params, written_type=written)


def module_key(name: str, taken: set[str]) -> str:
    """A valid, unused PyTorch attribute name for Caffe layer ``name`` (``conv1/3x3`` ->
    ``conv1_3x3``).

    Example:
        >>> module_key("inception_3a/1x1", set())
        'inception_3a_1x1'
    """
    key = re.sub(r"\W", "_", name) or "layer"
    if key[0].isdigit():
        key = f"l_{key}"
    base, n = key, 2
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    return key
