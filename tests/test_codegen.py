"""Narrow unit tests of wrapper generation (no toolchain needed): the C
definition and the cffi cdef come from one generator and must agree."""

from __future__ import annotations

import itertools

import pytest

from enzyme.activity import (
    Active,
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
from enzyme.signature import CType, Param, Signature

DBL = CType("scalar", "double", "double", "float64")
FLT = CType("scalar", "float", "float", "float32")
INT = CType("scalar", "int", "int", "int32")
CPTR = CType("pointer", "const double *", "double", "float64", const=True)
PTR = CType("pointer", "float *", "float", "float32")
SIG = Signature("k", (Param("x", DBL), Param("y", FLT), Param("n", INT), Param("a", CPTR),
                      Param("b", PTR)), DBL, "k.c:1")

REVERSE_KINDS = [(Active, Const), (Active, Const), (Const,), (Const, Duplicated),
                 (Const, Duplicated, DuplicatedNoNeed)]
FORWARD_KINDS = [(Duplicated, Const), (Duplicated, Const), (Const,), (Const, Duplicated),
                 (Const, Duplicated, DuplicatedNoNeed)]


def _patterns():
    for mode in (Reverse, ReverseWithPrimal):
        for kinds in itertools.product(*REVERSE_KINDS):
            for ret in (None, Const):
                yield mode, kinds, ret
    for mode in (Forward, ForwardWithPrimal):
        for kinds in itertools.product(*FORWARD_KINDS):
            for ret in (None, Const):
                yield mode, kinds, ret


@pytest.mark.parametrize("mode, kinds, ret", list(_patterns()))
def test_cdef_matches_c_definition(mode, kinds, ret):
    spec = resolve_activities(SIG, mode, kinds, ret)
    wrapper = generate_derivative(spec)
    definition = next(line.replace("__attribute__((noinline)) ", "")
                      for line in wrapper.c_source.splitlines()
                      if f"void {wrapper.entry}(" in line)
    entry_cdef, packed_cdef = wrapper.cdef.splitlines()
    assert definition.rstrip(" {") == entry_cdef.rstrip(";")
    # the packed twin passes every parameter through one slot array, in order
    assert packed_cdef == f"void {wrapper.packed_entry}(void **);"
    packed = next(line for line in wrapper.c_source.splitlines()
                  if line.startswith(f"void {wrapper.packed_entry}("))
    assert packed.count("s[") == len(wrapper.params)
    # every out-pointer is written after the Enzyme call
    for param in wrapper.params:
        if param.role.endswith("_out"):
            name = param.c_decl.split("*")[-1].strip()
            assert f"*{name} = " in wrapper.c_source
    # only pointers and Duplicated scalars carry shadows
    shadows = [p for p in wrapper.params if p.role == "shadow"]
    assert len(shadows) == sum(a.has_shadow for a in spec.args)


def test_same_request_same_code_different_request_different_entry():
    a = generate_derivative(resolve_activities(SIG, Reverse, [Active, Const, Const, Const, Const]))
    b = generate_derivative(resolve_activities(SIG, Reverse, [Active, Const, Const, Const, Const]))
    c = generate_derivative(resolve_activities(SIG, Reverse, [Const, Active, Const, Const, Const]))
    assert a == b
    assert a.entry != c.entry
