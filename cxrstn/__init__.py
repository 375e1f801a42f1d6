"""Chest X-ray abnormality triage with an attention-driven Spatial Transformer Network.

Importing the package points the caches of matplotlib and ultralytics into the project
(`.cache/`), so that a run writes nothing outside the project folder and never waits on
the network. Values already set in the environment win.
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = PROJECT_ROOT / ".cache"

for _key, _value in {
    "MPLCONFIGDIR": CACHE_DIR / "matplotlib",
    "YOLO_CONFIG_DIR": CACHE_DIR / "ultralytics",
    "TORCH_HOME": CACHE_DIR / "torch",
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "false",
    "DVC_NO_ANALYTICS": "1",
}.items():
    os.environ.setdefault(_key, str(_value))

from PIL import Image  # noqa: E402

if Image.open.__module__ != "PIL.Image":
    raise ImportError("import cxrstn before ultralytics: it replaces PIL.Image.open")
# Pillow's own opener. Importing ultralytics replaces Image.open with a wrapper that, on a
# file Pillow cannot identify, tries to fetch and register a HEIF plugin instead of raising.
PIL_OPEN = Image.open

__version__ = "0.1.0"
