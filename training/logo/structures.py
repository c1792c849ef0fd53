"""Chemical structure drawings (skeletal formulae) as hard negatives.

Commons holds many skeletal formulae: thin line art with a few atom labels on white, which a
detector that never saw one calls a logo. RDKit (PyPI ``rdkit``) ships the SMILES of 4,999
compounds, the first of the NCI open database, in its data directory; each chosen compound
is one source, laid out and drawn by RDKit itself, with the variation uploads have: canvas
size and shape, line width, coloured or black atom labels, a transparent background, PNG or
JPEG.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rdkit import Chem, RDConfig, RDLogger
from rdkit.Chem import rdDepictor
from rdkit.Chem.Draw import rdMolDraw2D

from training.logo.imaging import encode, log_uniform

SMILES = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
SOURCE_FILE = "rdkit/Data/NCI/first_5K.smi"
LICENCE = "public domain (NCI open database compound); drawing: RDKit, BSD-3-Clause"
CAP = 600  # compounds drawn, a seeded subset: the kind's share of the build time
# Fewer heavy atoms is a bare ring or chain; more draws as an unreadable tangle at 224 px.
_HEAVY_ATOMS = (6, 60)


@dataclass(frozen=True)
class Structure:
    smiles: str
    nsc: str  # the compound's NCI number: its id


def read_structures(seed: int) -> Iterator[Structure]:
    """The compounds RDKit can parse, of a drawable size, ``CAP`` of them chosen with ``seed``."""
    RDLogger.DisableLog("rdApp.*")  # a few of the SMILES do not parse; they are skipped
    found = []
    for line in SMILES.read_text().splitlines():
        smiles, nsc = line.split()
        mol = Chem.MolFromSmiles(smiles)
        if mol is not None and _HEAVY_ATOMS[0] <= mol.GetNumHeavyAtoms() <= _HEAVY_ATOMS[1]:
            found.append(Structure(smiles, nsc))
    keep = sorted(np.random.default_rng([seed, 5000]).choice(len(found), size=min(CAP, len(found)), replace=False))
    yield from (found[i] for i in keep)


def render_structure(structure: Structure, rng: np.random.Generator) -> tuple[bytes, dict]:
    mol = Chem.MolFromSmiles(structure.smiles)
    rdDepictor.Compute2DCoords(mol)
    width = round(log_uniform(rng, 160, 900))
    height = round(width * rng.uniform(0.5, 1.0))
    drawer = rdMolDraw2D.MolDraw2DCairo(width, height)
    options = drawer.drawOptions()
    params = {"size": [width, height], "line_width": round(float(rng.uniform(1.0, 4.0)), 2),
              "black_atoms": bool(rng.random() < 0.5), "transparent": bool(rng.random() < 0.3)}
    options.bondLineWidth = params["line_width"]
    if params["black_atoms"]:
        options.useBWAtomPalette()
    options.clearBackground = not params["transparent"]
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    with Image.open(io.BytesIO(drawer.GetDrawingText())) as drawn:
        img = drawn.convert("RGBA" if params["transparent"] else "RGB")
    data, encoding = encode(img, rng, jpeg_share=0.2)
    return data, {**params, **encoding}
