"""fastnn.save / fastnn.load: one .npz file holding a model's parameters and architecture;
save_checkpoint / load_checkpoint: the same plus an optimizer's whole state and the epoch.

This module owns the architecture records: the registry of module types that can be
rebuilt (fastnn's own, registered as they are defined), the record of each kind of module
(a leaf: its type and constructor config; a Sequential: its children; a Graph: its modules,
nodes and edges) and rebuilding a model from a record.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ._typing import PathLike

if TYPE_CHECKING:
    from .nn.module import Module
    from .optim import Optimizer

_T = TypeVar("_T", bound=type)

__all__ = ["save", "load", "save_checkpoint", "load_checkpoint", "Checkpoint"]

FORMAT = "fastnn-model"
VERSION = 1
_META = "__fastnn__"
_PREFIX = "param:"
_BUF = "buffer:"        # a module's buffers (BatchNorm1d's running statistics), listed in
                        # the metadata's "buffers" (absent in files without any)

# type name -> class, for the module types fastnn.load may rebuild (fastnn's own: Module
# registers each subclass defined in the fastnn package)
_TYPES = {}


def register(cls: _T) -> _T:
    _TYPES.setdefault(cls.__name__, cls)


# ------------------------------------------------------------------ architecture records
def record(m):
    """The architecture record of module m (JSON values)."""
    from .nn import Graph, Sequential
    if isinstance(m, Sequential):
        names = [n for n, c in m._modules.items() if c is not None]
        rec = {"type": "Sequential", "config": {}, "children": [record(c) for c in m]}
        if names != [str(i) for i in range(len(names))]:
            rec["names"] = names
        return rec
    if isinstance(m, Graph):
        return _graph_record(m)
    cfg = m._arch()
    if cfg is None or _TYPES.get(type(m).__name__) is not type(m):
        raise TypeError(f"fastnn.save: {type(m).__name__} cannot be saved with its "
                        "architecture (only fastnn's own modules can); save "
                        "model.state_dict() with numpy.savez instead")
    return {"type": type(m).__name__, "config": cfg}


def _graph_record(g):
    """{"type": "Graph", "modules": [each distinct module once], "nodes": [{"input":
    name[, "features": n]} or {"module": index into modules, "inputs": [[node, port],
    ...]}], "outputs": [[node, port], ...]}: a module used at several nodes is listed
    once, so the loaded graph shares it again."""
    mods, index, nodes = [], {}, []
    for r in g._recs:
        if r.module is None:
            nd = {"input": r.name}
            if r.feats[0] is not None:
                nd["features"] = r.feats[0]
        else:
            k = index.get(id(r.module))
            if k is None:
                k = index[id(r.module)] = len(mods)
                mods.append(record(r.module))
            nd = {"module": k, "inputs": [[j, p] for j, p in r.inputs]}
        nodes.append(nd)
    return {"type": "Graph", "config": {}, "modules": mods, "nodes": nodes,
            "outputs": [[j, p] for j, p in g._outputs]}


def _build_graph(cls, rec, where):
    """Rebuild a Graph from its record.  Raises ValueError/TypeError on an inconsistent
    record (including a cycle)."""
    mods = rec.get("modules")
    nodes = rec.get("nodes")
    outs = rec.get("outputs")
    if not isinstance(mods, list) or not isinstance(nodes, list) or \
            not isinstance(outs, list):
        raise ValueError(f"bad Graph record at {where} (needs modules, nodes and outputs)")
    built = [_build(m, f"{where}.modules[{k}]") for k, m in enumerate(mods)]

    def ref(r):
        if not (isinstance(r, list) and len(r) == 2 and
                all(isinstance(v, int) and not isinstance(v, bool) for v in r)):
            raise ValueError(f"bad edge {r!r} at {where}")
        return (r[0], r[1])

    g = cls()
    for i, nd in enumerate(nodes):
        if not isinstance(nd, dict):
            raise ValueError(f"bad node {i} at {where}")
        if "input" in nd:
            g.input(nd["input"], features=nd.get("features"))
        else:
            k = nd.get("module")
            if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < len(built) \
                    or not isinstance(nd.get("inputs"), list):
                raise ValueError(f"bad node {i} at {where}")
            g._append("Graph", built[k], [ref(r) for r in nd["inputs"]])
    g._outputs.extend(ref(r) for r in outs)
    g._build_plan()          # checks every edge and that there is no cycle
    return g


def save(model: Module, path: PathLike) -> None:
    """Write ``model``'s architecture and parameters to ``path`` (an .npz file, written
    exactly at the path given).  The write is atomic: a temporary file in the same
    directory is renamed over ``path`` once complete, so a crash never leaves a partial
    file.  Only fastnn's own modules (and containers of them) can be saved this way.

    Parameters
    ----------
    model : Module
        A fastnn module or container of fastnn modules (each parameter used once).
    path : str or os.PathLike
        The file to write (replaced if it exists).

    Raises
    ------
    TypeError
        For a module type fastnn cannot rebuild from a record (a user-defined Module).
    """
    from .nn import Module
    if not isinstance(model, Module):
        raise TypeError(f"fastnn.save: expected a fastnn Module, got {type(model).__name__}")
    _check_unshared(model)
    arch = record(model)
    named = list(model.named_parameters())
    meta = {"format": FORMAT, "version": VERSION, "arch": arch,
            "parameters": [n for n, _ in named]}
    arrays = {_PREFIX + n: p.data for n, p in named}
    _put_buffers(model, meta, arrays)
    arrays[_META] = np.array(json.dumps(meta))
    _write_npz(path, arrays)


def _put_buffers(model, meta, arrays):
    bufs = list(model.named_buffers())
    if bufs:
        meta["buffers"] = [n for n, _ in bufs]
        arrays.update((_BUF + n, b) for n, b in bufs)


def _get_buffers(z, meta, state):
    names = meta.get("buffers", [])
    missing = [n for n in names if _BUF + n not in z.files]
    if missing:
        raise _LoadError(f"buffers {missing} are listed but missing")
    state.update((n, z[_BUF + n]) for n in names)


def _write_npz(path, arrays):
    """Write arrays to path atomically (a temporary file in the same directory, renamed
    over path once complete and synced)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastnn-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _check_unshared(model):
    """The architecture record lists modules by position, so a module with parameters used
    at two places (shared weights) would load as two independent copies: refuse it.  (A
    shared parameter-free module, e.g. one ReLU used twice, loads as two equal ones.)"""
    where = {}

    def walk(m, path):
        if id(m) in where and next(iter(m.parameters()), None) is not None:
            raise ValueError(f"fastnn.save: {type(m).__name__} at {path or 'the root'} is the "
                             f"same module as at {where[id(m)] or 'the root'} (shared "
                             "weights); saving shared modules is not supported -- save "
                             "model.state_dict() with numpy.savez instead")
        where[id(m)] = path
        for n, c in m.named_children():
            walk(c, f"{path}.{n}" if path else n)

    walk(model, "")


class _LoadError(ValueError):
    pass


CHECKPOINT_FORMAT = "fastnn-checkpoint"
_KINDS = {FORMAT: "model file", CHECKPOINT_FORMAT: "checkpoint"}
_READERS = {FORMAT: "fastnn.load", CHECKPOINT_FORMAT: "fastnn.load_checkpoint"}


def _metadata(z, fmt, writer):
    """The JSON metadata of an open .npz written by `writer` in format `fmt`, checked."""
    if not hasattr(z, "files") or _META not in z.files:
        raise _LoadError(f"no fastnn metadata (was it written by {writer}?)")
    meta = json.loads(str(z[_META][()]))
    got = meta.get("format") if isinstance(meta, dict) else None
    if got != fmt:
        hint = (f" (a {_KINDS[got]} is read with {_READERS[got]})" if got in _KINDS else "")
        raise _LoadError(f"not a fastnn {_KINDS[fmt]}{hint}")
    if meta.get("version") != VERSION:
        raise _LoadError(f"format version {meta.get('version')!r} is not supported "
                         f"(this fastnn reads version {VERSION})")
    return meta


@contextlib.contextmanager
def _reading(who, what):
    """Every way a file can fail to read (truncated, corrupt, not ours, inconsistent) as one
    ValueError naming the caller; a missing file stays a FileNotFoundError."""
    try:
        yield
    except FileNotFoundError:
        raise
    except _LoadError as e:
        raise ValueError(f"{who}: {e}") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, TypeError,
            json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{who}: not a readable fastnn {what} "
                         f"({type(e).__name__}: {e})") from None


def _build(rec, where="model"):
    if not isinstance(rec, dict) or "type" not in rec:
        raise _LoadError(f"bad architecture record at {where}")
    name = rec["type"]
    cls = _TYPES.get(name)
    if cls is None:
        raise _LoadError(f"unknown module type {name!r} at {where}")
    cfg = rec.get("config", {})
    if not isinstance(cfg, dict):
        raise _LoadError(f"bad config for {name} at {where}")
    from .nn import Graph
    if issubclass(cls, Graph):
        # nodes and edges
        try:
            return _build_graph(cls, rec, where)
        except _LoadError:
            raise
        except (TypeError, ValueError, KeyError) as e:
            raise _LoadError(f"bad {name} record at {where}: {e}") from None
    if "children" in rec:
        kids = [_build(c, f"{where}[{i}]") for i, c in enumerate(rec["children"])]
        names = rec.get("names")
        if names is not None:
            if not isinstance(names, list) or len(names) != len(kids):
                raise _LoadError(f"bad child names at {where}")
            return cls(OrderedDict(zip(names, kids)), **cfg)
        return cls(*kids, **cfg)
    return cls(**cfg)


def load(path: PathLike) -> Module:
    """Rebuild a model saved with fastnn.save (no user code needed).  A truncated, corrupt
    or inconsistent file raises ValueError; no partially loaded model is ever returned.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``fastnn.save``.

    Returns
    -------
    Module
        The rebuilt model, in training mode.

    Raises
    ------
    ValueError
        For a file fastnn did not write or that is truncated, corrupt or inconsistent.
    """
    path = os.fspath(path)
    who = f"fastnn.load({path!r})"
    with _reading(who, "model file"):
        with np.load(path, allow_pickle=False) as z:
            meta = _metadata(z, FORMAT, "fastnn.save")
            names = meta["parameters"]
            missing = [n for n in names if _PREFIX + n not in z.files]
            if missing:
                raise _LoadError(f"parameters {missing} are listed but missing")
            state = {n: z[_PREFIX + n] for n in names}
            _get_buffers(z, meta, state)
            model = _build(meta["arch"])
    try:
        model.load_state_dict(state, strict=True)
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{who}: the parameters do not fit the architecture: {e}") from None
    return model.train()


# --------------------------------------------------------------------------- checkpoints
_OPT = "opt:"


class Checkpoint:
    """What load_checkpoint returns: ``model``, ``optimizer``, ``epoch`` (or None) and
    ``extra`` (the JSON values given to save_checkpoint).

    Parameters
    ----------
    model : Module
        The restored model.
    optimizer : Optimizer or None
        The restored optimizer (None when the checkpoint has none).
    epoch : int or None
        The recorded epoch.
    extra : dict
        The extra values.
    """

    def __init__(self, model: Module, optimizer: Optimizer | None, epoch: int | None,
                 extra: dict[str, Any]) -> None:
        self.model, self.optimizer, self.epoch, self.extra = model, optimizer, epoch, extra

    def __repr__(self) -> str:
        return (f"Checkpoint(model={type(self.model).__name__}, optimizer="
                f"{self.optimizer!r}, epoch={self.epoch!r})")


def _optimizer_types():
    from . import optim
    return {c.__name__: c for c in (optim.SGD, optim.Adam, optim.AdamW, optim.RMSprop)}


def save_checkpoint(path: PathLike, model: Module, optimizer: Optimizer | None,
                    epoch: int | None = None, **extra: Any) -> None:
    """Write a training checkpoint -- the model (architecture and parameters, as fastnn.save),
    the optimizer's whole state (hyperparameters, step count, every buffer; which of the
    model's parameters it updates, in its order) and ``epoch`` -- to one .npz file,
    atomically.  ``extra``: more JSON-serialisable values to keep (e.g. best_loss=0.3).

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (atomically replaced).
    model : Module
        The model (as for ``fastnn.save``).
    optimizer : Optimizer or None
        The optimizer whose state is kept (None: the model only).
    epoch : int, optional
        The epoch to record.
    **extra
        JSON-serialisable values to keep.
    """
    from .nn import Module
    who = "fastnn.save_checkpoint"
    if not isinstance(model, Module):
        raise TypeError(f"{who}: expected a fastnn Module, got {type(model).__name__}")
    types = _optimizer_types()
    if type(optimizer) not in types.values():
        raise TypeError(f"{who}: optimizer must be one of fastnn's {sorted(types)}, got "
                        f"{type(optimizer).__name__}")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer))):
        raise TypeError(f"{who}: epoch must be an int or None, got {epoch!r}")
    _check_unshared(model)
    named = list(model.named_parameters())
    index = {id(p): n for n, p in named}
    missing = [i for i, p in enumerate(optimizer.params) if id(p) not in index]
    if missing:
        raise ValueError(f"{who}: the optimizer's params{missing} are not parameters of the "
                         "model")
    sd = optimizer.state_dict()
    keys = type(optimizer)._state_names
    hyper = {k: v for k, v in sd.items() if k not in keys}
    arrays = {_PREFIX + n: p.data for n, p in named}
    for k in keys:
        for i, b in enumerate(sd[k]):
            if b is not None:
                arrays[f"{_OPT}{k}:{i}"] = b
    meta = {"format": CHECKPOINT_FORMAT, "version": VERSION, "arch": record(model),
            "parameters": [n for n, _ in named],
            "optimizer": {"type": type(optimizer).__name__, "state": hyper,
                          "params": [index[id(p)] for p in optimizer.params]},
            "epoch": None if epoch is None else int(epoch), "extra": extra}
    _put_buffers(model, meta, arrays)
    try:
        arrays[_META] = np.array(json.dumps(meta))
    except TypeError as e:
        raise TypeError(f"{who}: extra values must be JSON-serialisable ({e})") from None
    _write_npz(path, arrays)


def load_checkpoint(path: PathLike, model: Module | None = None,
                    optimizer: Optimizer | None = None) -> Checkpoint:
    """Read a checkpoint written by save_checkpoint.  Returns a Checkpoint with a rebuilt
    model and optimizer; or pass your own ``model`` / ``optimizer`` (of the same
    architecture / type and shapes) to restore them in place -- everything is checked
    before either changes.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``save_checkpoint``.
    model : Module, optional
        Restore the parameters into this model instead of rebuilding one.
    optimizer : Optimizer, optional
        Restore the state into this optimizer (over ``model``'s parameters).

    Returns
    -------
    Checkpoint
        ``.model``, ``.optimizer`` (None when none was saved), ``.epoch``, ``.extra``.

    Raises
    ------
    ValueError
        For a file that is not a checkpoint, or a model/optimizer that does not match it.
    """
    path = os.fspath(path)
    who = f"fastnn.load_checkpoint({path!r})"
    with _reading(who, "checkpoint"):
        with np.load(path, allow_pickle=False) as z:
            meta = _metadata(z, CHECKPOINT_FORMAT, "fastnn.save_checkpoint")
            names = meta["parameters"]
            state = {n: z[_PREFIX + n] for n in names}
            _get_buffers(z, meta, state)
            fresh = _build(meta["arch"])
            om = meta["optimizer"]
            cls = _optimizer_types().get(om["type"])
            if cls is None:
                raise _LoadError(f"unknown optimizer type {om['type']!r}")
            osd = dict(om["state"])
            n_opt = len(om["params"])
            for k in cls._state_names:
                osd[k] = [z[f"{_OPT}{k}:{i}"] if f"{_OPT}{k}:{i}" in z.files else None
                          for i in range(n_opt)]
            epoch, extra = meta.get("epoch"), meta.get("extra", {})
    try:
        fresh.load_state_dict(state, strict=True)
        by_name = dict(fresh.named_parameters())
        fopt = cls([by_name[n] for n in om["params"]], **_ctor_args(cls, osd))
        fopt.load_state_dict(osd)
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{who}: the checkpoint is inconsistent: {e}") from None
    if model is None and optimizer is None:
        return Checkpoint(fresh.train(), fopt, epoch, extra)
    # restore in place: check that both fit before changing either
    if model is not None:
        mine = dict(model.named_parameters())
        if set(mine) != set(by_name) or any(mine[n].shape != p.shape or mine[n].dtype != p.dtype
                                            for n, p in by_name.items()):
            raise ValueError(f"{who}: the model does not have the checkpoint's parameters "
                             f"(names, shapes and dtypes must match)")
    if optimizer is not None:
        if type(optimizer) is not cls:
            raise TypeError(f"{who}: the checkpoint holds a {cls.__name__}, got a "
                            f"{type(optimizer).__name__}")
        if [(p.shape, p.dtype) for p in optimizer.params] != \
                [(p.shape, p.dtype) for p in fopt.params]:
            raise ValueError(f"{who}: the optimizer's parameters do not match the "
                             "checkpoint's (shapes, dtypes and order)")
    if model is not None:
        model.load_state_dict(fresh.state_dict(), strict=True)
    if optimizer is not None:
        optimizer.load_state_dict(fopt.state_dict())
    return Checkpoint(model if model is not None else fresh.train(),
                      optimizer if optimizer is not None else fopt, epoch, extra)


def _ctor_args(cls, sd):
    """Constructor arguments for cls from a state_dict (the hyperparameters it takes)."""
    import inspect
    ps = inspect.signature(cls.__init__).parameters
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in sd.items()
            if k in ps and k != "params"}

