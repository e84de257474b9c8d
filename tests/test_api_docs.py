"""The public API's docstrings follow one convention (numpydoc): every public function,
method and class that takes arguments documents each of them in a ``Parameters`` section,
and every function that returns something has a ``Returns`` section."""
import inspect
import re

import pytest

import fastnn
from fastnn import init, ops
from fastnn.optim import lr_scheduler


def _public():
    seen = {}
    for mod, names in ((fastnn, fastnn.__all__), (init, init.__all__),
                       (lr_scheduler, lr_scheduler.__all__),
                       (ops, [n for n in dir(ops) if callable(getattr(ops, n))
                              and getattr(getattr(ops, n), "__module__", "") == ops.__name__
                              and not n.startswith("_")])):
        for n in names:
            o = getattr(mod, n)
            if callable(o) and not isinstance(o, type(fastnn)):
                seen.setdefault(f"{mod.__name__}.{n}", o)
    return seen


PUBLIC = _public()


def _section(doc, title):
    m = re.search(rf"^{title}\n-{{{len(title)}}}\n(.*?)(?=^\w[\w ]*\n-+\n|\Z)", doc,
                  re.S | re.M)
    return m.group(1) if m else None


def _documented_names(section):
    names = set()
    for line in section.splitlines():
        if line and not line.startswith(" "):
            head = line.split(" : ")[0]
            for part in head.split(","):
                names.add(part.strip().lstrip("*"))
    return names


def _params(o):
    f = o.__init__ if inspect.isclass(o) else o
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return []
    return [p for p in sig.parameters.values() if p.name not in ("self", "cls")]


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_docstring_documents_parameters(name):
    o = PUBLIC[name]
    params = _params(o)
    if inspect.isclass(o) and (o.__init__ is object.__init__ or
                               issubclass(o, BaseException)):
        params = []
    doc = inspect.getdoc(o) or ""
    assert doc.strip(), f"{name} has no docstring"
    if not params:
        return
    section = _section(doc, "Parameters")
    assert section is not None, f"{name}: the docstring has no 'Parameters' section"
    missing = [p.name for p in params if p.name not in _documented_names(section)]
    assert not missing, f"{name}: parameters {missing} are not documented"


@pytest.mark.parametrize("name", sorted(n for n, o in PUBLIC.items()
                                        if not inspect.isclass(o)))
def test_public_function_documents_its_return(name):
    o = PUBLIC[name]
    ret = inspect.signature(o).return_annotation
    if ret in ("None", None, inspect.Signature.empty):
        return
    doc = inspect.getdoc(o) or ""
    assert _section(doc, "Returns") is not None, \
        f"{name} returns {ret} but its docstring has no 'Returns' section"
