"""Process start-up: where the tools keep their files, and how a stage ends on bad input.

Importing the package changes nothing. A process that runs the pipeline's code (a stage
script or the `cxrstn` command) calls `configure_tools()` first, before matplotlib,
ultralytics or DVC are imported, so that they write only inside the project (`.cache/`)
and never wait on the network. Values already set in the environment win.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = PROJECT_ROOT / ".cache"
# numpy's dispatch targets above AVX2 (X86_V3), as numpy 2.x names them
NUMPY_AVX2_PIN = "X86_V4 AVX512_ICL AVX512_SPR"
SIMD_HOLD = {
    # numpy picks its SIMD kernels when first imported. Its AVX-512 exp, log1p, sin...
    # differ from the AVX2 ones in the last bit, which moved 31 of the phantom's 258 files
    # between CPUs.
    "NPY_DISABLE_CPU_FEATURES": NUMPY_AVX2_PIN,
    # torch's own vectorised kernels (sampling, resizing, reductions, Adam).
    "ATEN_CPU_CAPABILITY": "avx2",
    # oneDNN's convolutions and pooling: their AVX-512 kernels block and sum differently.
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    # MKL's matrix products (the dense layers): its AVX2 code path on every x86-64 CPU,
    # Intel or AMD (conditional numerical reproducibility), not the one it picks per CPU.
    "MKL_CBWR": "AVX2",
}
"""What holds every library that computes on the CPU to one instruction set, so that a stage
writes the same bytes on any x86-64 CPU with AVX2 (bench/simd.py; docs/architecture.md).
Each cost nothing measurable on a training stage. `CXRSTN_SIMD=native` lifts them all."""


def tool_environment() -> dict[str, str]:
    """The environment variables `configure_tools` sets when they are not set already (the
    SIMD holds only unless CXRSTN_SIMD=native)."""
    return {
        "MPLCONFIGDIR": str(CACHE_DIR / "matplotlib"),
        "YOLO_CONFIG_DIR": str(CACHE_DIR / "ultralytics"),
        "TORCH_HOME": str(CACHE_DIR / "torch"),
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "false",
        "DVC_NO_ANALYTICS": "1",
        # torch's CPU threads (OpenMP) busy-wait for each other for about 300,000 spins by
        # default: on a machine whose cores are shared, 2 threads then ran 10-20x slower
        # than 1; 1,000 spins keep their speed on free cores and lose nothing when shared.
        "GOMP_SPINCOUNT": "1000",
    } | ({} if os.environ.get("CXRSTN_SIMD") == "native" else SIMD_HOLD)


def configure_tools() -> None:
    """Point matplotlib's, ultralytics' and torch's folders into the project, offline."""
    for key, value in tool_environment().items():
        os.environ.setdefault(key, value)


def run_stage(main) -> None:
    """Run a stage's `main`; bad input ends it with one line naming the file and the problem.

    Readers raise ValueError/FileNotFoundError (ImageError is a ValueError) with the file
    in the message, so the line is all a user needs. Set CXRSTN_TRACEBACK=1 for the full
    traceback when debugging the code itself.
    """
    try:
        main()
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get("CXRSTN_TRACEBACK"):
            raise
        raise SystemExit(f"error: {error}") from None
