"""The exception hierarchy of enzyme-ffi.

Every failure the package knows about is raised as a subclass of
:class:`EnzymeError`. Errors about the *value* or *type* of something the
user passed are also the matching builtin (``TypeError``/``ValueError``), so
code that already catches those keeps working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (verify imports this module: for the annotation only)
    from .verify import CheckReport

__all__ = [
    "EnzymeError",
    "ToolchainError",
    "CompileError",
    "DifferentiationError",
    "ActivityError",
    "ArgumentError",
    "ArgumentTypeError",
    "ArgumentValueError",
    "ShadowError",
    "ShadowTypeError",
    "ShadowValueError",
    "UnsupportedSignatureError",
    "TapeError",
    "NotPicklableError",
    "LengthError",
    "ModuleClosedError",
    "KernelCrashError",
    "ReentrantCallError",
    "OptionError",
    "OptionTypeError",
    "BuildTimeoutError",
    "ContractError",
    "CacheError",
    "FlagError",
    "LinkError",
    "DerivativeMismatchError",
    "EnzymeWarning",
]


class EnzymeError(Exception):
    """Base class of every error raised by enzyme-ffi."""


class ToolchainError(EnzymeError):
    """clang, opt or the Enzyme plugin is missing, broken or mismatched."""


class CompileError(EnzymeError):
    """clang rejected the C sources.

    Attributes
    ----------
    diagnostics : tuple of str
        One entry per error, each ``file:line:col: error: message`` followed
        by the offending source line.
    """

    def __init__(self, message: str, diagnostics: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.diagnostics = diagnostics


class DifferentiationError(EnzymeError):
    """Enzyme could not differentiate a kernel, or a tool died while trying.

    Attributes
    ----------
    kernel : str
        The C function being differentiated.
    pattern : str
        The mode and activity pattern, e.g. ``Reverse(Duplicated, Const)``.
    enzyme_message : str
        Enzyme's (or the tool's) own words.
    code, hint : str
        For a failure in the catalogue (``enzyme.diagnostics.CATALOGUE``), its
        short name and what to do; empty otherwise.
    """

    def __init__(self, message: str, kernel: str = "", pattern: str = "",
                 enzyme_message: str = "", hint: str = "", code: str = "") -> None:
        super().__init__(message)
        self.kernel = kernel
        self.pattern = pattern
        self.enzyme_message = enzyme_message
        self.hint = hint
        self.code = code


class ActivityError(EnzymeError, TypeError):
    """An activity annotation does not fit the parameter it is applied to."""


class ArgumentError(EnzymeError):
    """A primal argument does not fit its C parameter."""


class ArgumentTypeError(ArgumentError, TypeError):
    """A primal argument has the wrong kind or dtype."""


class ArgumentValueError(ArgumentError, ValueError):
    """A primal argument has the right type but an unusable value."""


class ShadowError(EnzymeError):
    """A shadow (derivative) buffer does not match its primal."""


class ShadowTypeError(ShadowError, TypeError):
    """A shadow has the wrong kind or dtype."""


class ShadowValueError(ShadowError, ValueError):
    """A shadow has the wrong shape, layout, writeability or aliases its primal."""


class LengthError(ShadowValueError):
    """An array (primal or shadow) is shorter than its length contract
    (``ENZYME_LEN`` in C, ``sizes=`` in Python)."""


class BuildTimeoutError(EnzymeError, TimeoutError):
    """A compile step ran longer than ``ENZYME_COMPILE_TIMEOUT`` seconds and was stopped."""


class ModuleClosedError(EnzymeError, RuntimeError):
    """A kernel or derivative of a module that was closed was called."""


class OptionError(EnzymeError, ValueError):
    """An option of compile() has a value it cannot use (a NUL byte in a
    flag, a name that is not a C identifier, text that is not UTF-8)."""


class OptionTypeError(OptionError, TypeError):
    """An option of compile() has the wrong type (one string where a list of
    strings is expected)."""


class KernelCrashError(EnzymeError, RuntimeError):
    """A native call of a module compiled with ``isolate=True`` ended its
    worker process (a signal such as SIGSEGV or SIGABRT); the interpreter is
    unaffected and the next call starts a new worker. ``signal`` is the
    signal's name."""

    def __init__(self, message: str, signal: str = "") -> None:
        super().__init__(message)
        self.signal = signal


class ReentrantCallError(EnzymeError, RuntimeError):
    """A derivative was asked for from inside its own build or first-use
    check on the same thread (typically from a signal handler): refused,
    since waiting for itself would never end."""


class TapeError(EnzymeError, TypeError):
    """A split-mode tape used in a way it cannot be (copied, pickled)."""


class NotPicklableError(EnzymeError, TypeError):
    """An object that holds this process's memory (a split-mode tape, a
    derivative made outside the public API) was pickled or copied."""


class ContractError(EnzymeError, ValueError):
    """A length contract cannot be used: unknown parameter, or an expression
    outside the small language contracts are written in."""


class UnsupportedSignatureError(EnzymeError, TypeError):
    """A kernel uses a C type that enzyme-ffi cannot pass yet."""


class FlagError(CompileError, ValueError):
    """A flag in ``flags=`` changes what clang produces (``-o``, ``-E``,
    ``-c``, ``-M...``, ...): the build chain decides its outputs itself."""


class LinkError(CompileError):
    """Linking a module's library failed (a missing ``-l`` library, an
    undefined symbol): the linker's words, not Enzyme's."""


class CacheError(EnzymeError):
    """The compile cache cannot be used (never raised for a corrupt entry,
    which is rebuilt instead)."""



class DerivativeMismatchError(EnzymeError, ArithmeticError):
    """A derivative failed its self-check: forward and reverse mode disagree
    (the dot-product test), and central differences do not side with the
    mode that was called. ``report`` is the :class:`enzyme.verify.CheckReport`."""

    def __init__(self, message: str, report: CheckReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class EnzymeWarning(UserWarning):
    """Something enzyme-ffi could not do fully and says so rather than stay
    silent (e.g. a derivative it could not verify)."""
