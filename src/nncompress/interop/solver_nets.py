"""The net a solver trains, from any of Caffe's forms: ``net``, ``net_param``, ``train_net`` /
``train_net_param`` with ``test_net`` / ``test_net_param``.

One file (``net`` or ``net_param``) holds both phases, chosen by the layers' include/exclude rules.
Separate train and test nets are joined into one: the train net's TRAIN-phase layers and the test
net's TEST-phase layers, each kept to its phase; layers of the same name share their blobs, as
Caffe shares the test net's weights with the train net by layer name.
"""

from __future__ import annotations

from pathlib import Path

from nncompress.errors import FormatError
from nncompress.interop.caffe_spec import layer_specs, phase_included
from nncompress.interop.prototxt import Field, Ident, Message, PrototxtError, parse_file
from nncompress.interop.solver import SolverSettings

__all__ = ["solver_net"]

_INPUT_FIELDS = ("input", "input_shape", "input_dim")


def _find(settings: SolverSettings, name: str) -> Path:
    """Caffe opens net files from its working directory; files moved out of a Caffe tree usually
    sit beside the solver, so the solver's folder and the bare file name there are tried too."""
    folder = Path(settings.path).parent
    tried = [Path(name), folder / name, folder / Path(name).name]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise FormatError(f"net prototxt not found: {name} (tried "
                      f"{', '.join(str(t) for t in dict.fromkeys(tried))}); give --net")


def _one(msg: Message, name: str) -> Field | None:
    found = msg.all(name)
    if len(found) > 1:
        raise PrototxtError(found[1].where, f"the solver gives '{name}' {len(found)} times; "
                            "one net per phase is supported")
    return found[0] if found else None


def _net(settings: SolverSettings, msg: Message, file_field: str,
         param_field: str) -> tuple[Message, Path] | None:
    path_f, inline = _one(msg, file_field), _one(msg, param_field)
    if path_f is not None and inline is not None:
        raise PrototxtError(inline.where, f"give '{file_field}' or '{param_field}', not both")
    if inline is not None:
        if not isinstance(inline.value, Message):
            raise PrototxtError(inline.where, f"'{param_field}' expects a net {{ ... }}")
        return inline.value, Path(settings.path)
    if path_f is not None:
        path = _find(settings, msg.get_str(file_field) or "")
        return parse_file(path, "net prototxt"), path
    return None


def _phase_only(net: Message, phase: str) -> list[Field]:
    """The layer fields of ``net`` that run in ``phase``, each limited to that phase."""
    kind = "layers" if net.has("layers") else "layer"
    specs = layer_specs(Message(where=net.where, fields=[f for f in net.fields
                                                         if f.name == kind]))
    out = []
    for f, spec in zip(net.all(kind), specs):
        if not phase_included(spec, phase):
            continue
        assert isinstance(f.value, Message)
        rule = Message(where=f.where, fields=[Field("phase", Ident(phase), f.where)])
        kept = [g for g in f.value.fields if g.name not in ("include", "exclude")]
        out.append(Field(kind, Message(where=f.value.where,
                                       fields=[*kept, Field("include", rule, f.where)]), f.where))
    return out


def _join(train: Message, test: Message) -> Message:
    if (train.has("layer") and test.has("layers")) or (train.has("layers") and test.has("layer")):
        raise PrototxtError(test.where, "the train net and the test net use different layer "
                            "formats ('layer' and the legacy 'layers'); upgrade one of them")
    head = [f for f in train.fields if f.name == "name" or f.name in _INPUT_FIELDS]
    return Message(where=train.where,
                   fields=head + _phase_only(train, "TRAIN") + _phase_only(test, "TEST"))


def solver_net(settings: SolverSettings, net: str | Path | None = None) -> tuple[Message, Path]:
    """The parsed net to train and the path it came from (for relative files such as means).

    Args:
        settings: the solver, as read by :func:`~nncompress.interop.solver.read_solver`.
        net: a net prototxt replacing the solver's net fields (``--net``).

    Raises:
        FormatError: a file is missing (naming every path tried), or the solver names no net.
        PrototxtError: conflicting or repeated net fields.

    Example:
        >>> msg, path = solver_net(read_solver("lenet_solver.prototxt"))  # doctest: +SKIP
    """
    if net is not None:
        path = Path(net)
        if not path.is_file():
            raise FormatError(f"net prototxt not found: {path}")
        return parse_file(path, "net prototxt"), path
    msg = settings.msg or Message(where=settings.path)
    both = _net(settings, msg, "net", "net_param")
    train = _net(settings, msg, "train_net", "train_net_param")
    test = _net(settings, msg, "test_net", "test_net_param")
    if both is not None and (train is not None or test is not None):
        where = (msg.all("train_net") + msg.all("train_net_param") + msg.all("test_net")
                 + msg.all("test_net_param"))[0].where
        raise PrototxtError(where, "the solver gives 'net' and also a train or test net; give "
                            "'net' alone, or 'train_net' with 'test_net'")
    if both is not None:
        return both
    if train is None:
        raise FormatError(f"{settings.path}: the solver names no net; give --net NET.prototxt")
    if test is None:
        return _join(train[0], Message(where=train[0].where)), train[1]
    return _join(train[0], test[0]), train[1]
