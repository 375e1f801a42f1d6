"""Do the data stages write the same bytes on an AVX2 and an AVX-512 CPU?

    python bench/simd.py [--keep DIR]

Runs the data stages (phantom, binarize, resize, split, thorax_boxes, crop) three times in
copies of this working tree, one after the other, and prints each output's md5:
  native  as a stage runs by default: numpy held to its AVX2 kernels by
          `cxrstn.runtime.configure_tools`, every other library free to use AVX-512;
  avx2    an AVX2 machine, emulated: numpy, torch (ATEN_CPU_CAPABILITY, oneDNN), OpenCV and
          OpenBLAS all held to AVX2;
  avx512  the pin lifted (NPY_DISABLE_CPU_FEATURES=""): what the stages wrote before it.
On an AVX-512 CPU, native == avx2 shows the data stages agree across the two kinds of
CPU, and avx512 shows what the pin prevents. On an AVX2-only CPU all three are the same
run. The crop stage uses one detector (trained once, in the native run), so that only the
crop itself is compared. About 12 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrstn.runtime import NUMPY_AVX2_PIN  # noqa: E402

STAGES = {
    "phantom": ["data/phantom"],
    "binarize": ["data/labels.csv"],
    "resize": ["data/resized"],
    "split": ["data/folds.csv"],
    "thorax_boxes": ["data/thorax"],
    "crop": ["data/crops", "data/crops.csv"],
}
OPENCV_AVX512 = "AVX512_SKX,AVX512_COMMON,AVX512_KNL,AVX512_KNM,AVX512_CNL,AVX512_CLX,AVX512_ICL"
SETTINGS = {
    "native": {},
    "avx2": {
        "NPY_DISABLE_CPU_FEATURES": NUMPY_AVX2_PIN,
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "OPENCV_CPU_DISABLE": OPENCV_AVX512,
        "OPENBLAS_CORETYPE": "Haswell",
    },
    "avx512": {"NPY_DISABLE_CPU_FEATURES": ""},
}
# Variables a caller's shell may hold that would blur the comparison.
CLEARED = (
    "NPY_DISABLE_CPU_FEATURES",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "OPENCV_CPU_DISABLE",
    "OPENBLAS_CORETYPE",
)


def md5(path: Path) -> str:
    """md5 of a file, or of a folder's relative paths and file contents in sorted order."""
    digest = hashlib.md5()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def copy_tree(dest: Path) -> None:
    """The working tree's code and parameters, without data, models or reports."""
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if name.split("/")[0] in ("data", "models", "reports") or not (ROOT / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)


def run(setting: str, dest: Path, detector: Path | None) -> dict[str, str]:
    """The data stages in `dest` under one setting; md5 per output."""
    copy_tree(dest)
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env |= SETTINGS[setting] | {"PYTHONPATH": str(dest)}
    hashes = {}
    for stage, outputs in STAGES.items():
        if stage == "crop":
            if detector is None:
                print(f"  {setting}: train_detector", flush=True)
                subprocess.run(
                    [sys.executable, "stages/train_detector.py"],
                    cwd=dest,
                    env=env,
                    check=True,
                    capture_output=True,
                )
            else:
                (dest / "models").mkdir(exist_ok=True)
                shutil.copy2(detector, dest / "models/detector.pt")
        print(f"  {setting}: {stage}", flush=True)
        subprocess.run(
            [sys.executable, f"stages/{stage}.py"],
            cwd=dest,
            env=env,
            check=True,
            capture_output=True,
        )
        for output in outputs:
            hashes[output] = md5(dest / output)
    return hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", metavar="DIR", help="keep the three copies in DIR (new folder)")
    args = parser.parse_args()
    if args.keep:
        Path(args.keep).mkdir(parents=True)
    folder = contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory()
    with folder as tmp:
        results, detector = {}, None
        for setting in SETTINGS:
            dest = Path(tmp) / setting
            dest.mkdir()
            results[setting] = run(setting, dest, detector)
            detector = detector or dest / "models/detector.pt"
    print(f"{'output':20s}" + "".join(f"{s:>12s}" for s in SETTINGS) + "   native == avx2")
    for output in results["native"]:
        cells = [results[s][output] for s in SETTINGS]
        same = "yes" if cells[0] == cells[1] else "NO"
        print(f"{output:20s}" + "".join(f"{c[:10]:>12s}" for c in cells) + f"   {same}")
    differ = [o for o in results["native"] if results["native"][o] != results["avx2"][o]]
    sys.exit(f"differ between native and avx2: {differ}" if differ else 0)


if __name__ == "__main__":
    main()
