"""Portable CPU numerics (marvel/numerics.py): the settings hold in every process a run starts,
the mode is fixed per process and refused where it cannot hold, native is one override away,
and the networks' products on OpenBLAS have torch's gradients. Same numbers on every CPU: the
golden test (test_golden.py)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from marvel import nets, numerics
from marvel.errors import MarvelError
from tests.helpers import read_summary, run_cli

SMOKE = ("budget=smoke",)


def test_this_process_computes_portably() -> None:
    """conftest imports marvel before numpy and torch, so their settings hold here."""
    assert numerics.in_effect() == "portable"
    assert all(os.environ[k] == v for k, v in numerics.PORTABLE_SETTINGS.items())
    from numpy._core._multiarray_umath import __cpu_features__

    assert not __cpu_features__["X86_V4"]  # numpy's AVX-512 loops are off (or absent)
    libtorch = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    if libtorch.is_file():  # MKL reports its branch: 3 = MKL_CBWR_COMPATIBLE
        assert ctypes.CDLL(str(libtorch)).mkl_serv_cbwr_get(1) == 3


@pytest.mark.parametrize(
    ("argv", "mode"),
    [
        (["env=CarRun"], None),
        (["numerics=native"], "native"),
        (["++numerics='native'", "seed=1"], "native"),
        (["numerics=portable"], "portable"),
    ],
)
def test_mode_from_the_command_line(argv: list[str], mode: str | None) -> None:
    assert numerics.from_command_line(argv) == mode


def test_one_mode_per_command() -> None:
    with pytest.raises(MarvelError, match="one value per command"):
        numerics.from_command_line(["-m", "numerics=portable,native"])


def test_child_environments() -> None:
    base = {"PATH": "/bin", "MKL_CBWR": "AVX2", "OPENBLAS_CORETYPE": "Haswell"}
    portable = numerics.environment("portable", base)
    assert portable == {"PATH": "/bin", **numerics.PORTABLE_SETTINGS, "MARVEL_NUMERICS": "portable"}
    native = numerics.environment("native", base)  # a setting of the user's own stays
    assert native == {"PATH": "/bin", "MKL_CBWR": "AVX2", "MARVEL_NUMERICS": "native"}


def test_a_mode_that_cannot_hold_is_refused() -> None:
    """numpy loaded before marvel: portable cannot take effect, and a run says so."""
    code = (
        "import numpy, marvel\n"
        "from marvel import numerics\n"
        "assert numerics.in_effect() is None\n"
        "numerics.require('portable')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in numerics.PORTABLE_SETTINGS}
    env.pop(numerics.MODE_VARIABLE, None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "import marvel first" in proc.stderr


def test_threads_follow_the_mode() -> None:
    assert numerics.torch_threads("portable", 0) == numerics.torch_threads("portable", 1) == 1
    assert numerics.torch_threads("native", 0) == 0 and numerics.torch_threads("native", 3) == 3


def test_native_run(tmp_path: Path) -> None:
    """numerics=native: torch's own code and threads, recorded, with a cache of its own."""
    cache = tmp_path / "cache"
    run_cli(
        "numerics=native",
        "experiment=marvel",
        "env=BallCircle",
        "logger=none",
        *SMOKE,
        f"paths.cache_dir={cache}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    summary = read_summary(tmp_path / "run")
    assert summary["numerics"] == "native"
    assert summary["metadata"]["numerics"]["mode"] == "native"
    assert not summary["metadata"]["numerics"]["portable_guarantee"]
    assert all(v is None for v in summary["metadata"]["numerics"]["settings"].values())
    assert summary["torch_threads"] == torch.get_num_threads()  # torch's default there too
    collect = ("stage=collect", "env=BallCircle", f"paths.cache_dir={cache}")
    run_cli(*collect, *SMOKE, f"hydra.run.dir={tmp_path / 'collect'}")
    assert len(list((cache / "datasets").glob("*.hdf5"))) == 2  # one per numerics mode


@pytest.mark.parametrize("shape", [(11, 7), (3, 4, 7)])
def test_openblas_linear_has_torch_gradients(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    layer, x = nets.Linear(7, 5), torch.randn(*shape, requires_grad=True)
    assert nets.on_openblas(x)
    got = layer(x)
    want = torch.nn.functional.linear(x, layer.weight, layer.bias)
    grads = torch.autograd.grad((got**2).sum(), (x, layer.weight, layer.bias))
    expected = torch.autograd.grad((want**2).sum(), (x, layer.weight, layer.bias))
    torch.testing.assert_close(got, want)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e)


def test_openblas_ensemble_has_torch_gradients() -> None:
    torch.manual_seed(0)
    layer = nets.EnsembleLinear(2, 7, 5)
    x = torch.randn(11, 7, requires_grad=True)
    stacked = x.unsqueeze(0).expand(2, -1, -1)  # as CriticEnsemble feeds it
    got, want = layer(stacked), torch.baddbmm(layer.bias, stacked, layer.weight)
    grads = torch.autograd.grad((got**2).sum(), (x, layer.weight, layer.bias))
    expected = torch.autograd.grad((want**2).sum(), (x, layer.weight, layer.bias))
    torch.testing.assert_close(got, want)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e)


def test_openblas_products_are_numpys() -> None:
    """The products are numpy's OpenBLAS's, bit for bit (not torch's MKL)."""
    a, b = torch.randn(64, 256), torch.randn(256, 256)
    assert np.array_equal(nets.matmul(a, b).numpy(), a.numpy() @ b.numpy())
