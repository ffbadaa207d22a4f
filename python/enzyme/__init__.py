"""enzyme-ffi: exact derivatives of C code from Python, with the Enzyme LLVM plugin.

Examples
--------
>>> import enzyme
>>> mod = enzyme.compile("double f(double x, double y) { return x*x + 3*y; }")
>>> enzyme.autodiff(enzyme.Reverse, mod.f, enzyme.Active(3.0), enzyme.Active(5.0)).derivs
(6.0, 3.0)
"""

from __future__ import annotations

__version__ = "0.1.0"

from types import ModuleType

from .activity import (
    Active,
    BatchDuplicated,
    BatchDuplicatedNoNeed,
    Const,
    Duplicated,
    DuplicatedNoNeed,
    Forward,
    ForwardMode,
    ForwardWithPrimal,
    Mode,
    Reverse,
    ReverseMode,
    ReverseSplit,
    ReverseSplitMode,
    ReverseSplitWithPrimal,
    ReverseWithPrimal,
)
from .autodiff import autodiff, autodiff_thunk, derivative
from .call import (
    Adjoint,
    CArray,
    CDType,
    CValue,
    Derivative,
    FloatArray,
    ForwardPass,
    ForwardResult,
    ReversePass,
    ReverseResult,
    Tangent,
    Tape,
    aligned_like,
    aligned_zeros,
)
from .errors import (
    ActivityError,
    ArgumentError,
    ArgumentTypeError,
    ArgumentValueError,
    BuildTimeoutError,
    CacheError,
    CompileError,
    ContractError,
    DerivativeMismatchError,
    DifferentiationError,
    EnzymeError,
    EnzymeWarning,
    FlagError,
    KernelCrashError,
    LengthError,
    LinkError,
    ModuleClosedError,
    NotPicklableError,
    OptionError,
    OptionTypeError,
    ReentrantCallError,
    ShadowError,
    ShadowTypeError,
    ShadowValueError,
    TapeError,
    ToolchainError,
    UnsupportedSignatureError,
)
from .module import GlobalNotFoundError, Kernel, KernelNotFoundError, Module, compile, get_include
from .transforms import HessianBlock, Transformed, grad, hessian, hvp, jacobian, jvp, value_and_grad, vjp
from .verify import CheckReport, check, check_functions
from .vmap import Batched, StackedDerivative, vmap

__all__ = [
    "aligned_zeros",
    "aligned_like",
    "__version__",
    "compile",
    "Module",
    "Kernel",
    "autodiff",
    "autodiff_thunk",
    "ReverseSplit",
    "ReverseSplitWithPrimal",
    "Tape",
    "derivative",
    "grad",
    "vmap",
    "value_and_grad",
    "get_include",
    "Mode",
    "Reverse",
    "ReverseWithPrimal",
    "Forward",
    "ForwardWithPrimal",
    "Const",
    "Active",
    "Duplicated",
    "DuplicatedNoNeed",
    "ReverseResult",
    "ForwardResult",
    "EnzymeError",
    "ToolchainError",
    "CompileError",
    "DifferentiationError",
    "DerivativeMismatchError",
    "EnzymeWarning",
    "ActivityError",
    "ArgumentError",
    "ArgumentTypeError",
    "ArgumentValueError",
    "ShadowError",
    "ShadowTypeError",
    "ShadowValueError",
    "UnsupportedSignatureError",
    "CacheError",
    "KernelNotFoundError",
    "LengthError",
    "KernelCrashError",
    "FlagError",
    "LinkError",
    "ModuleClosedError",
    "NotPicklableError",
    "OptionError",
    "OptionTypeError",
    "ReentrantCallError",
    "TapeError",
    "BuildTimeoutError",
    "ContractError",
    "GlobalNotFoundError",
    "BatchDuplicated",
    "BatchDuplicatedNoNeed",
    "jvp",
    "vjp",
    "jacobian",
    "hessian",
    "hvp",
    "check",
    "check_functions",
    "CheckReport",
    # the types of the API, for annotations and type checkers
    "ReverseMode",
    "ForwardMode",
    "ReverseSplitMode",
    "Transformed",
    "Batched",
    "ForwardPass",
    "ReversePass",
    "CValue",
    "Adjoint",
    "Tangent",
    "FloatArray",
    "Derivative",
    "HessianBlock",
    "StackedDerivative",
    "CArray",
    "CDType",
]


def __getattr__(name: str) -> ModuleType:
    # The bridges import their frameworks: loaded on first use
    # (enzyme.torch.function(...)), never by `import enzyme`.
    if name in ("torch", "jax", "scipy", "bridge"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'enzyme' has no attribute '{name}'")
