"""The parameter model (issue 10), without clang: for every pattern the code
generator produces, each slot's writability is what C's rules say it must
be, the C fast path's plan is exactly the model, and the cdef declares what
the model was read from (one generator emits both)."""

from __future__ import annotations

import itertools

import numpy as np
from pycparser import c_ast, c_parser

from enzyme.activity import (
    Active,
    BatchDuplicated,
    Const,
    Duplicated,
    DuplicatedNoNeed,
    Forward,
    ForwardWithPrimal,
    Reverse,
    ReverseWithPrimal,
    resolve_activities,
)
from enzyme.codegen import generate_derivative
from enzyme.errors import EnzymeError
from enzyme.params import FAST_FORMATS, FAST_VALUES, Role, fast_plan_specs
from enzyme.signature import CType, Param, Signature


def _pointer(base: str, dtype: str, const: bool) -> CType:
    spelling = f"{'const ' if const else ''}{base} *"
    return CType("pointer", spelling, base, dtype, const=const)


def _scalar(base: str, dtype: str) -> CType:
    return CType("scalar", base, base, dtype)


PARAMS = {
    "const double *": _pointer("double", "float64", True),
    "double *": _pointer("double", "float64", False),
    "const float *": _pointer("float", "float32", True),
    "float *": _pointer("float", "float32", False),
    "const long *": _pointer("long", "int64", True),
    "double": _scalar("double", "float64"),
    "float": _scalar("float", "float32"),
    "size_t": _scalar("unsigned long", "uint64"),
    "unsigned int": _scalar("unsigned int", "uint32"),
    "char": _scalar("char", "int8"),
    "int": _scalar("int", "int32"),
    "_Bool": _scalar("_Bool", "bool"),
}
RETURNS = {"double": _scalar("double", "float64"), "float": _scalar("float", "float32"),
           "void": CType("void", "void")}


def _patterns():
    """(signature, mode, kinds, width) for many parameter lists and activities."""
    names = list(PARAMS)
    for i, combo in enumerate(itertools.combinations(names, 3)):
        for rname, rtype in RETURNS.items():
            sig = Signature(f"k{i}_{rname}", tuple(Param(f"p{j}", PARAMS[c]) for j, c in enumerate(combo)),
                            rtype, "<test>:1")
            for mode in (Forward, Reverse, ForwardWithPrimal, ReverseWithPrimal):
                for width in (1, 2):
                    kinds = []
                    for p in sig.params:
                        if not p.ctype.carries_derivative:
                            kinds.append(Const)
                        elif width > 1:
                            kinds.append(BatchDuplicated if p.ctype.is_pointer else Const)
                        elif p.ctype.is_pointer:
                            kinds.append(DuplicatedNoNeed if mode is Forward and rname == "void"
                                         and p.ctype.const is False else Duplicated)
                        else:
                            kinds.append(Active if mode.reverse else Duplicated)
                    yield sig, mode, tuple(kinds), width


CASES = list(_patterns())


def _declared(cdef: str, entry: str) -> list[tuple[str, bool, bool]]:
    """(name, is a pointer, pointee is const) of each parameter of ``entry``
    as the cdef declares it, read by a C parser (not by the generator)."""
    for node in c_parser.CParser().parse(cdef).ext:
        if node.name == entry:
            out = []
            for param in node.type.args.params:
                pointer = isinstance(param.type, c_ast.PtrDecl)
                quals = param.type.type.quals if pointer else []
                out.append((param.name, pointer, "const" in quals))
            return out
    raise AssertionError(f"{entry} is not declared in {cdef!r}")


def test_the_patterns_cover_what_the_issue_names():
    kinds = {c.dtype for sig, *_ in CASES for c in (p.ctype for p in sig.params)}
    assert {"uint64", "uint32", "int8", "bool", "float32", "float64"} <= kinds
    assert len(CASES) > 1000


def test_fast_plan_equals_the_model_for_every_generated_pattern():
    checked = planned = 0
    for sig, mode, kinds, width in CASES:
        try:
            spec = resolve_activities(sig, mode, kinds, None, width)
        except EnzymeError:
            continue  # a pattern the activity rules refuse: nothing is generated
        wrapper = generate_derivative(spec)
        slots = wrapper.params
        where = f"{sig.name} {spec.pattern}"
        # what the C declares is what the model says, parameter by parameter
        declared = _declared(wrapper.cdef, wrapper.entry)
        assert [(s.name, s.pointer, s.pointer and not s.writable) for s in slots] == declared, where
        for slot in slots:
            # writability by C's rules, independently of the generator
            if slot.role is Role.PRIMAL:
                assert slot.writable == (slot.ctype.is_pointer and not slot.ctype.const), where
            elif slot.role is Role.SHADOW:
                expected = slot.ctype.is_pointer and (spec.reverse or not slot.ctype.const)
                assert slot.writable == expected, where
            elif slot.role.is_output:
                assert slot.writable, where
            else:
                assert slot.role is Role.SEED and not slot.pointer, where
        checked += 1
        plan = fast_plan_specs(slots)
        calls = [s for s in slots if s.role in (Role.PRIMAL, Role.SHADOW)]
        if plan is None:
            assert any(s.dtype not in FAST_VALUES and s.dtype not in FAST_FORMATS or
                       (not s.pointer and s.dtype not in FAST_VALUES) for s in calls), where
            continue
        planned += 1
        specs, nseeds, seed_value, outs = plan
        assert len(specs) == len(calls), where
        for spec_row, slot in zip(specs, calls):
            kind, value, formats, itemsize, writable, low, high = spec_row
            if slot.pointer:
                assert kind == 0 and formats == FAST_FORMATS[slot.dtype], where
                assert itemsize == np.dtype(slot.dtype).itemsize, where
                assert writable == int(slot.writable), where
            elif slot.ctype.is_float:
                assert kind == 1 and value == FAST_VALUES[slot.dtype] and not writable, where
            else:
                info = np.iinfo(slot.dtype)
                assert (kind, low, high) == (2, int(info.min), int(info.max)), where
                assert not writable, where
        assert nseeds == sum(s.role is Role.SEED for s in slots), where
        assert outs == tuple(FAST_VALUES[s.dtype] for s in slots if s.role.is_output), where
    assert checked > 500 and planned > 200, (checked, planned)


def test_split_mode_slots_follow_the_same_rules():
    from enzyme.activity import ReverseSplit
    from enzyme.codegen import generate_split
    checked = 0
    for sig, mode, kinds, width in CASES:
        if mode is not Reverse or width != 1:
            continue
        try:
            spec = resolve_activities(sig, ReverseSplit, kinds, None, 1)
        except EnzymeError:
            continue
        split = generate_split(spec, 64)
        for slot in split.params:
            if slot.role is Role.PRIMAL:
                assert slot.writable == (slot.ctype.is_pointer and not slot.ctype.const)
            elif slot.role is Role.SHADOW:
                assert slot.writable  # reverse mode accumulates into every shadow
        for entry in (split.forward_entry, split.reverse_entry):
            assert _declared(split.cdef, entry) == [
                (s.name, s.pointer, s.pointer and not s.writable) for s in split.entry_params]
        checked += 1
    assert checked > 100
