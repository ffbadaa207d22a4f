"""The catalogue of Enzyme failures users meet, and what to do about each.

Enzyme reports a failure on opt's stderr, often after pages of IR and
type-analysis dumps. :func:`explain` finds Enzyme's own words in that text
and matches them against known failures, so the exception can say what
happened and how to fix it. Each entry is exercised by a test with real C.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Failure", "CATALOGUE", "explain"]


@dataclass(frozen=True)
class Failure:
    code: str
    pattern: re.Pattern
    what: str
    hint: str


def _entry(code: str, pattern: str, what: str, hint: str) -> Failure:
    return Failure(code, re.compile(pattern), what, hint)


CATALOGUE: tuple[Failure, ...] = (
    _entry("unknown-binary-operator", r"cannot handle unknown binary operator",
           "integer arithmetic (shifts, and/or/xor) on the bits of a floating-point value, which "
           "has no derivative Enzyme knows: bit tricks such as a fast inverse square root, or "
           "type punning through an integer or a union",
           "do that arithmetic on floating-point values, or give the function doing it a custom "
           "derivative: ENZYME_CUSTOM_DERIVATIVE / ENZYME_CUSTOM_GRADIENT in C, or "
           "enzyme.compile(..., forward_rules=, reverse_rules=)"),
    _entry("no-body", r"No (augmented forward pass|forward mode derivative|reverse pass|derivative)"
                      r" found for",
           "a called function has no body in this module (a library call, or a function "
           "defined in a source that was not compiled with it)",
           "compile its source with the module (sources=[...]), mark it inactive if it does "
           "not affect derivatives (inactive=[...] or ENZYME_INACTIVE_FUNCTION), or register "
           "a rule for it (forward_rules= / reverse_rules=)"),
    _entry("openmp-forward", r"visitOMPCall.*found_ow",
           "forward mode of an OpenMP parallel region, which this Enzyme version cannot "
           "differentiate (it asserts; reverse mode of the same `parallel for` works)",
           "use reverse mode for this kernel (grad, vjp, jacobian(mode=Reverse)), with "
           "`#pragma clang loop unroll(disable)` right after the `omp parallel for` (without it "
           "reverse mode asserts too), or compile a copy of the source without -fopenmp for "
           "forward-mode derivatives"),
    _entry("openmp-reduction", r"unhandled openmp function:.*__kmpc_(reduce|end_reduce)",
           "an OpenMP reduction clause, which this Enzyme version cannot differentiate",
           "write the loop as `#pragma omp parallel for` into an array of partial results, with "
           "`#pragma clang loop unroll(disable)` right after it (Enzyme v0.0.289 asserts on the "
           "runtime-unrolled parallel loop), and sum that array serially"),
    _entry("openmp-other", r"unhandled openmp function",
           "an OpenMP construct this Enzyme version cannot differentiate",
           "keep parallel regions to plain `parallel for` loops without reductions, each with "
           "`#pragma clang loop unroll(disable)`, or move the construct out of the differentiated "
           "code"),
    _entry("unknown-intrinsic", r"cannot handle (\(\w+\) )?unknown intrinsic",
           "a vector or target intrinsic (e.g. AVX _mm256_* calls) Enzyme has no rule for",
           "write the loop in plain C (LLVM's own vectorizer emits generic vector IR, which "
           "Enzyme differentiates), or give the function a custom derivative"),
    _entry("type-conflict", r"Illegal updateAnalysis|Cannot deduce type|cannot deduce type|"
                            r"Cannot deduce single type",
           "Enzyme's type analysis could not tell (or found conflicting) types for some memory, "
           "typically floating-point data handled as bytes or through void*",
           "copy and access doubles as doubles (memcpy with the right type, no char loops), or "
           "try enzyme.compile(..., loose_types=True) (lets Enzyme guess; check the numbers)"),
    _entry("global-without-shadow", r"doesn't have marked shadow global|"
                                    r"To = Constant; From = Value\]: Assertion .isa<To>",
           "Enzyme takes a global variable for one that may hold values the derivative depends "
           "on, and it has no shadow (enzyme-ffi gives one to every non-static, non-const global "
           "of floating type; a static or hidden-visibility global, or a pointer or struct of "
           "pointers, gets none)",
           "if it carries no derivative (a table of function pointers, a counter, an RNG state), "
           "mark it inactive (ENZYME_INACTIVE_GLOBAL or inactive_globals=[...]); if it does, make "
           "it a non-static, visible global of floating type (it then gets a shadow, mod.shadows[name]), or "
           "const when it never changes"),
    _entry("activity", r"Cannot (compute|handle) .*activ|active.*constant|constant.*active|"
                       r"runtime activity",
           "Enzyme could not decide statically which values are active",
           "try enzyme.compile(..., runtime_activity=True), or pass scratch buffers that hold "
           "active values as Duplicated rather than Const"),
    _entry("return-type", r"Cannot cast return type of gradient",
           "the declared return type of an __enzyme_* call does not match what Enzyme returns",
           "in your own C, declare the entry call's exact return type (a struct of the active "
           "scalars' adjoints); enzyme-ffi's generated calls return void"),
    _entry("tool-crash", r"Assertion .* failed|LLVM ERROR|Segmentation fault|Stack dump",
           "opt crashed inside Enzyme or LLVM (an internal error, not a bug in your code as such)",
           "simplify or split the kernel, try runtime_activity=True or loose_types=True, or give "
           "the offending function a custom derivative; please report it with the kernel"),
)

# The same Enzyme failure when no bit trick is in sight: SROA assembled a small
# struct mixing float and integer fields in one integer (`x.sroa.0.insert...`),
# as the C ABI passes or returns such a struct in an integer register.
_STRUCT_IN_INTEGER = re.compile(r"cannot handle unknown binary operator:\s+%[\w.]*\.insert[\w.]* = ")
_BIT_TRICKS = next(f for f in CATALOGUE if f.code == "unknown-binary-operator")
_STRUCT_IN_INTEGER_FAILURE = Failure(
    _BIT_TRICKS.code, _BIT_TRICKS.pattern,
    "a small struct mixing float and integer fields is passed or returned by value, which the C "
    "ABI does in an integer register: the floats' bits are packed into an integer with shifts "
    "and ors, which Enzyme cannot differentiate",
    "pass or return such a struct through a pointer, or lay it out so that floats and integers "
    "do not share an 8-byte word (or make it larger than 16 bytes, which the ABI passes in "
    "memory)")

# Lines of IR and type-analysis dumps that Enzyme prints before its message.
_NOISE = re.compile(r"^\s*(#\d+ |\d+\.\s+Program arguments|Stack dump:|PLEASE submit|%|store |ret |"
                    r"br |call |tail call |define |declare |\}|!|attributes |; |constant(inst|arg)\[|"
                    r"[\w.]+:\s+; preds|<analysis>|</analysis>|ptr %|i\d+ |double |float )")


def explain(stderr: str) -> tuple[str, Failure | None]:
    """Enzyme's own message (dumps removed) and the catalogue entry it matches."""
    lines = [ln.rstrip() for ln in stderr.splitlines() if ln.strip() and not _NOISE.match(ln)]
    failure = next((f for f in CATALOGUE if f.pattern.search(stderr)), None)
    if failure is _BIT_TRICKS and _STRUCT_IN_INTEGER.search(stderr):
        failure = _STRUCT_IN_INTEGER_FAILURE
    key = [ln for ln in lines if failure is not None and failure.pattern.search(ln)]
    head = [ln for ln in lines if any(word in ln for word in
                                      ("error:", "Enzyme:", "ld:", "undefined reference"))][:6]
    chosen = list(dict.fromkeys(head + key)) or lines[:20]
    message = "\n".join(line[:600] for line in chosen[:12])
    return (message or stderr.strip()[-2000:]), failure
