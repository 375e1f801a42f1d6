"""Importing the package has no side effects and works after any other library."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

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
