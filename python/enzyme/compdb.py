"""A project's own build settings, from its compilation database
(``compile_commands.json``: CMake's ``CMAKE_EXPORT_COMPILE_COMMANDS``, or
Bear for Make).

For each source file it gives what changes how the file is *read*: include
directories, macro definitions, the language and its standard, and the
flags that change the language's meaning (``-fopenmp``, ``-ffast-math``,
``-fsigned-char``, ...). What only changes how the project's own build
compiles (optimisation, debug information, warnings, outputs, dependency
files, code-generation options such as ``-fPIC``) is dropped: enzyme-ffi's
build chain chooses those itself.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from .errors import CompileError

__all__ = ["CompileCommand", "read_database"]

# Flags that take their value as the next argument, kept with it.
_KEPT_WITH_VALUE = ("-I", "-isystem", "-iquote", "-idirafter", "-include", "-imacros", "-D", "-U")
# Flags whose value is the next argument, dropped with it.
_DROPPED_WITH_VALUE = ("-o", "-MF", "-MT", "-MQ", "-x", "-arch", "-target", "--serialize-diagnostics",
                       "-Xclang", "-Xlinker", "-Xassembler", "-Xpreprocessor")
# -f flags that change the language rather than the build's code generation.
_DROPPED_F = ("-fPIC", "-fpic", "-fPIE", "-fpie", "-fno-pic", "-fno-pie", "-fdiagnostics",
              "-fcolor-diagnostics", "-fno-color-diagnostics", "-fmessage-length",
              "-fprofile", "-fcoverage", "-ftest-coverage", "-fdebug", "-fsanitize",
              "-fstack-protector", "-fno-stack-protector", "-fstack-clash", "-fcf-protection",
              "-fno-omit-frame-pointer", "-fomit-frame-pointer", "-fexceptions", "-fno-exceptions",
              "-fasynchronous-unwind-tables", "-fno-asynchronous-unwind-tables", "-flto",
              "-fno-lto", "-ffunction-sections", "-fdata-sections", "-fvisibility")
_CXX_COMPILERS = ("c++", "g++", "clang++", "cxx")


@dataclass(frozen=True)
class CompileCommand:
    """One file's entry: its absolute path, language and reading flags."""

    file: str
    language: str  # "c" or "c++"
    flags: tuple[str, ...]


def _absolute(path: str, directory: str) -> str:
    return os.path.normpath(os.path.join(directory, path))


def _language(arguments: list[str], file: str) -> str:
    for i, arg in enumerate(arguments):
        if arg == "-x" and i + 1 < len(arguments):
            return "c++" if arguments[i + 1].startswith("c++") else "c"
        if arg.startswith("-x") and len(arg) > 2:
            return "c++" if arg[2:].startswith("c++") else "c"
    compiler = os.path.basename(arguments[0]) if arguments else ""
    if any(compiler == name or compiler.startswith(name + "-") for name in _CXX_COMPILERS):
        return "c++"
    from .build import CXX_SUFFIXES

    return "c++" if file.endswith(CXX_SUFFIXES) else "c"


def _reading_flags(arguments: list[str], directory: str, file: str) -> tuple[str, ...]:
    """The flags of one command that change how its file is read, with
    relative include paths made absolute."""
    kept: list[str] = []
    i = 1  # argv[0] is the compiler
    while i < len(arguments):
        arg = arguments[i]
        i += 1
        if _absolute(arg, directory) == file or arg in ("-c", "-S", "-E", "--"):
            continue
        joined = next((f for f in _KEPT_WITH_VALUE if arg == f), None)
        if joined is not None:
            if i >= len(arguments):
                break
            value = arguments[i]
            i += 1
            arg = joined + value
        flag = next((f for f in _KEPT_WITH_VALUE if arg.startswith(f)), None)
        if flag is not None:
            value = arg[len(flag):]
            if flag in ("-I", "-isystem", "-iquote", "-idirafter", "-include", "-imacros"):
                value = _absolute(value, directory)
            kept.append(flag + value if flag in ("-I", "-D", "-U") else flag)
            if flag not in ("-I", "-D", "-U"):
                kept.append(value)
            continue
        if arg in _DROPPED_WITH_VALUE:
            i += 1
            continue
        if arg.startswith("-std=") or arg in ("-ansi", "-pthread"):
            kept.append(arg)
        elif arg.startswith("-f") and not arg.startswith(_DROPPED_F):
            kept.append(arg)
        # anything else (-O*, -g*, -W*, -M*, -m*, outputs, inputs) is the build's own
    return tuple(kept)


def read_database(path: str | os.PathLike) -> dict[str, CompileCommand]:
    """The entries of a compilation database, by absolute file path (the
    first entry of a file that is listed twice).

    Raises
    ------
    CompileError
        The file cannot be read, is not JSON, or is not a list of entries
        with ``directory``, ``file`` and ``command`` or ``arguments``.

    Examples
    --------
    >>> import json, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> db = os.path.join(d, "compile_commands.json")
    >>> _ = open(db, "w").write(json.dumps([{"directory": d, "file": "a.c",
    ...     "command": "cc -Iinc -DN=3 -O2 -g -Wall -c a.c -o a.o"}]))
    >>> entry = read_database(db)[os.path.join(d, "a.c")]
    >>> entry.flags == (f"-I{d}/inc", "-DN=3") and entry.language
    'c'
    """
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CompileError(f"cannot read the compilation database {path}: {exc.strerror}.") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompileError(f"{path} is not a JSON compilation database ({exc}).") from None
    if not isinstance(entries, list):
        raise CompileError(f"{path} is not a compilation database: it must be a JSON list of "
                           "entries, as CMake (-DCMAKE_EXPORT_COMPILE_COMMANDS=ON) or Bear write.")
    commands: dict[str, CompileCommand] = {}
    for number, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("directory"), str)
                and isinstance(entry.get("file"), str)
                and (isinstance(entry.get("arguments"), list) or isinstance(entry.get("command"), str))):
            raise CompileError(f"{path}: entry {number} lacks directory, file, and command or "
                               "arguments.")
        directory = entry["directory"]
        arguments = entry.get("arguments") or shlex.split(entry["command"])
        if not all(isinstance(a, str) for a in arguments):
            raise CompileError(f"{path}: entry {number} has non-string arguments.")
        file = _absolute(entry["file"], directory)
        commands.setdefault(file, CompileCommand(file, _language(arguments, file),
                                                 _reading_flags(arguments, directory, file)))
    return commands
