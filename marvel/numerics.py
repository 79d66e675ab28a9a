"""CPU numerics: which code paths and how many threads compute a run's numbers.

``numerics=portable`` (the default) gives the same numbers for the same seed and config on every
x86-64 CPU with AVX2, Intel or AMD, whatever its core count: each library whose arithmetic a
result depends on runs code that every such CPU executes alike (``PORTABLE_SETTINGS``), and torch
computes on one thread. ``numerics=native`` lets each library pick the fastest code for the CPU
and torch use several threads: faster, with numbers that depend on the CPU model and the thread
count.

The libraries read these settings from the environment when they load, so a process computes in
one mode, fixed when numpy and torch are first imported. ``import marvel`` selects the mode named
by ``MARVEL_NUMERICS`` (default portable); ``run.py`` selects the one on its command line first.
Processes a run starts (launcher and evaluation workers) inherit it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
from collections.abc import Mapping
from typing import Any

from marvel.choices import Choice
from marvel.errors import ConfigError, MarvelError


class Numerics(Choice):
    """The ``numerics`` setting: the same numbers on every CPU, or the CPU's fastest code."""

    portable = "portable"
    native = "native"


MODES = Numerics.values()
MODE_VARIABLE = "MARVEL_NUMERICS"

# Each one changes results when left out (benchmarks/README.md: issue 28's leave-one-out table).
PORTABLE_SETTINGS = {
    # torch's vector math (MKL's exp, log, tanh, ...): its SSE2 branch, the one MKL runs alike on
    # Intel and AMD (its AVX2 branch is Intel-only: on AMD, MKL then quietly picks its own code);
    # the networks' matrix products go to OpenBLAS instead, which runs at AVX2 speed on both
    "MKL_CBWR": "COMPATIBLE",
    # numpy's BLAS (OpenBLAS: the networks' matrix products, marvel/nets.py, and np.linalg.norm
    # in the envs): its Haswell kernels, on one thread (a second one splits the sums)
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENBLAS_NUM_THREADS": "1",
    # numpy's own SIMD loops (arctan2, exp, log, ... in the envs): AVX2 code, not AVX-512's
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}
LIBRARIES = ("numpy", "torch")  # they read PORTABLE_SETTINGS when they load

_in_effect: str | None = None  # the mode numpy and torch load (or loaded) under; None: unknown


def environment(mode: str, base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``base`` with ``mode``'s settings: what a process that computes in ``mode`` starts with."""
    if mode not in MODES:
        raise ConfigError(f"numerics: got {mode!r}; valid: {', '.join(MODES)}")
    env = {key: value for key, value in base.items() if PORTABLE_SETTINGS.get(key) != value}
    if mode == "portable":
        env |= PORTABLE_SETTINGS
    return env | {MODE_VARIABLE: mode}


def select(mode: str) -> None:
    """Make this process compute in ``mode``: set the environment numpy and torch read when they
    load, and pass it on to the processes it starts. Refused once either library has loaded
    under another mode."""
    global _in_effect
    env = environment(mode)
    loaded = [name for name in LIBRARIES if name in sys.modules]
    if loaded and any(os.environ.get(key) != env.get(key) for key in PORTABLE_SETTINGS):
        raise MarvelError(
            f"numerics={mode} cannot take effect: {' and '.join(loaded)} already loaded with "
            f"other CPU code paths; import marvel before them, or set {MODE_VARIABLE}={mode}"
        )
    for key in (*PORTABLE_SETTINGS, MODE_VARIABLE):
        if key in env:
            os.environ[key] = env[key]
        else:
            os.environ.pop(key, None)
    _in_effect = mode


def in_effect() -> str | None:
    """The mode this process computes in; None: numpy or torch loaded before marvel set it."""
    return _in_effect


def select_at_import() -> None:
    """``import marvel``: the mode ``MARVEL_NUMERICS`` names (default portable), where it can
    still take effect; ``require`` refuses a run where it could not."""
    with contextlib.suppress(MarvelError):
        select(os.environ.get(MODE_VARIABLE, "portable"))


def from_command_line(argv: list[str]) -> str | None:
    """The mode a ``numerics=`` override among ``argv`` names, or None without one."""
    values = [
        arg.split("=", 1)[1].strip("'\"")
        for arg in argv
        if re.fullmatch(r"(\+\+)?numerics=.*", arg)
    ]
    if not values:
        return None
    if any(sep in values[-1] for sep in ",()"):
        raise MarvelError(
            "numerics takes one value per command (portable or native): it is fixed when the "
            "process starts; run one command per mode"
        )
    return values[-1]


def require(mode: str) -> None:
    """Refuse a run whose config asks for ``mode`` in a process that computes in another."""
    if _in_effect == mode:
        return
    if _in_effect is None:
        raise MarvelError(
            f"numerics={mode} does not hold in this process: numpy or torch loaded before marvel "
            f"could set their CPU code paths; import marvel first, or set {MODE_VARIABLE}={mode}"
        )
    raise MarvelError(
        f"numerics={mode}, but this process computes with numerics={_in_effect}, fixed when numpy "
        f"and torch loaded: give numerics={mode} on run.py's command line (not in a config "
        "file), one mode per command"
    )


def torch_threads(mode: str, requested: int) -> int:
    """torch's intra-op threads for a run: one under ``portable`` (torch splits a sum of over
    32768 elements between its threads); ``requested`` under ``native`` (0: torch's default)."""
    return 1 if mode == "portable" else requested


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux)."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def platform_gap() -> str | None:
    """Why this machine is outside the portable guarantee (not x86-64, no AVX2), or None."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return f"not an x86-64 CPU ({machine})"
    from numpy._core._multiarray_umath import __cpu_features__

    if not __cpu_features__.get("AVX2"):
        return "a CPU without AVX2"
    return None


def identity() -> str:
    """What numbers computed in this process depend on, for cache keys: ``portable`` where the
    guarantee holds, else also the CPU model and torch's thread count."""
    if _in_effect == "portable" and platform_gap() is None:
        return "portable"
    import torch

    return f"{_in_effect}: {cpu_model()}, {torch.get_num_threads()} torch threads"


def describe() -> dict[str, Any]:
    """This process's numerics for a run's metadata: the mode, its settings, torch's threads,
    the CPU, and whether the portable guarantee covers it."""
    import torch

    gap = platform_gap()
    return {
        "mode": _in_effect,
        "settings": {key: os.environ.get(key) for key in PORTABLE_SETTINGS},
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "portable_guarantee": _in_effect == "portable" and gap is None,
        **({"outside_guarantee": gap} if gap else {}),
    }
