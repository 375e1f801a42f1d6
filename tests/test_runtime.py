"""Importing the package has no side effects and works after any other library."""

import ast
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cxrstn.runtime import CACHE_DIR, tool_environment

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(CACHE_DIR / "home")}
    env |= {k: v for k, v in tool_environment().items() if k.startswith("YOLO")}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_importing_every_module_leaves_the_environment_alone():
    out = run_python(
        """
        import os, pkgutil, importlib
        # Libraries that set variables of their own when imported (torch, OpenCV) go first.
        import cv2, matplotlib, pandas, sklearn.metrics, torch, torchvision
        before = dict(os.environ)
        import cxrstn
        for module in pkgutil.walk_packages(cxrstn.__path__, "cxrstn."):
            importlib.import_module(module.name)
        keys = set(before) | set(os.environ)
        print(sorted(k for k in keys if before.get(k) != os.environ.get(k)))
        """
    )
    assert out.strip() == "[]"


def test_reading_images_after_ultralytics_uses_pillows_own_opener(tmp_path):
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"this is no image at all" * 10)
    out = run_python(
        f"""
        import ultralytics  # replaces PIL.Image.open with a plugin-fetching wrapper
        from PIL import Image
        from cxrstn.images import PIL_OPEN, ImageError, read_image
        assert Image.open.__module__ != "PIL.Image"
        assert PIL_OPEN.__module__ == "PIL.Image"
        try:
            read_image({str(bad)!r})
        except ImageError as error:
            print(error)
        """
    )
    assert "not_an_image.png: not a recognised image format" in out


def test_configure_tools_keeps_values_already_set(monkeypatch):
    from cxrstn.runtime import configure_tools

    monkeypatch.setenv("MPLCONFIGDIR", "/somewhere/else")
    monkeypatch.delenv("TORCH_HOME", raising=False)
    configure_tools()
    import os

    assert os.environ["MPLCONFIGDIR"] == "/somewhere/else"
    assert os.environ["TORCH_HOME"] == str(CACHE_DIR / "torch")


def test_every_stage_configures_the_tools_before_importing_anything_else():
    """numpy reads its SIMD pin and matplotlib its folder once, when first imported."""
    for script in sorted((ROOT / "stages").glob("*.py")):
        body = ast.parse(script.read_text()).body
        docstring = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
        first, second = body[int(docstring) : int(docstring) + 2]
        assert isinstance(first, ast.ImportFrom) and first.module == "cxrstn.runtime", script
        assert ast.unparse(second) == "configure_tools()", script


def test_configure_tools_holds_numpy_to_its_avx2_kernels():
    out = run_python(
        """
        from cxrstn.runtime import configure_tools
        configure_tools()
        import numpy._core._multiarray_umath as umath
        print([f for f in ("X86_V4", "AVX512_ICL", "AVX512_SPR") if umath.__cpu_features__[f]])
        """
    )
    assert out.strip() == "[]"


HOLDS = ("NPY_DISABLE_CPU_FEATURES", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")
SHOW_HOLDS = f"""
    import os
    from cxrstn.runtime import configure_tools
    configure_tools()
    print({{k: os.environ.get(k) for k in {HOLDS}}})
    """


def run_stage_start(extra: dict[str, str], code: str = SHOW_HOLDS) -> str:
    """Run `code` as a stage starts, in this environment without any SIMD variable, plus
    `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in (*HOLDS, "CXRSTN_SIMD")}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env | extra,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_stage_holds_every_library_to_avx2_unless_lifted_and_a_set_value_wins():
    from cxrstn.runtime import NUMPY_AVX2_PIN

    held = {
        "NPY_DISABLE_CPU_FEATURES": NUMPY_AVX2_PIN,
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_CBWR": "AVX2",
    }
    assert run_stage_start({}) == str(held)
    assert run_stage_start({"CXRSTN_SIMD": "native"}) == str(dict.fromkeys(HOLDS))
    # A value already in the environment wins, held or lifted.
    assert run_stage_start({"ATEN_CPU_CAPABILITY": "default"}) == str(
        held | {"ATEN_CPU_CAPABILITY": "default"}
    )
    lifted_but_set = run_stage_start({"CXRSTN_SIMD": "native", "MKL_CBWR": "COMPATIBLE"})
    assert lifted_but_set == str(dict.fromkeys(HOLDS) | {"MKL_CBWR": "COMPATIBLE"})


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 holds")
def test_torch_runs_its_avx2_kernels_in_a_stage():
    said = run_stage_start(
        {},
        """
        from cxrstn.runtime import configure_tools
        configure_tools()
        import torch
        print(torch.backends.cpu.get_cpu_capability())
        """,
    )
    assert said == "AVX2"
