"""The phantom: seeded chest radiograph look-alikes in the four original dataset formats.

The default data of the pipeline, so that `dvc repro` runs the very code paths real data
takes (see DESIGN.md sections 4 and 5). Modules, from shapes to files:

- `geometry`: the chest as polygons in thorax coordinates and the frame placing it;
- `render`: attenuation layers, exposure, noise (the scene);
- `findings`: the 12 CheXpert findings, support devices, TB and JSRT nodules;
- `lettering`: burned-in text and its label-correlation rule;
- `radiograph`: `render_frontal` / `render_lateral`, an image with its exact masks;
- `labels`: CheXpert label sampling in the proportions of the paper's Table I;
- `datasets`: planning, parallel rendering and the writers of every format (`generate`);
- `sheet`: the contact sheet shown beside real radiographs.
"""

from cxrstn.phantom.datasets import generate
from cxrstn.phantom.radiograph import Radiograph, render_frontal, render_lateral
from cxrstn.phantom.sheet import contact_sheet

__all__ = ["Radiograph", "contact_sheet", "generate", "render_frontal", "render_lateral"]
