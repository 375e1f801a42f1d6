"""Chest X-ray abnormality triage with an attention-driven Spatial Transformer Network.

Importing the package has no side effects; processes that run the pipeline set up the
tools' folders with `cxrstn.runtime.configure_tools()`.
"""

__version__ = "0.1.0"
