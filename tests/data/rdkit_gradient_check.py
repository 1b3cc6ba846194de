"""Print: whether the rdkit fix applied, and analytic / finite-difference gradient ratios and the
energy scale of qcengine's rdkit harness before and after it (run as a script: it patches qcengine)."""

import numpy as np
import qcelemental as qcel
import qcengine

from bespoke_fractal.compat.qcengine import fix_rdkit_units

METHANOL = "C 0 0 0\nO 1.42 0 0\nH -0.5 0.9 0\nH -0.5 -0.9 0.1\nH -0.4 0 -1.0\nH 1.7 0.9 0"
DATA = qcel.models.Molecule.from_data(METHANOL).dict()
DATA["connectivity"] = [(0, 1, 1), (0, 2, 1), (0, 3, 1), (0, 4, 1), (1, 5, 1)]


def run(geometry, driver):
    molecule = qcel.models.Molecule(**{**DATA, "geometry": geometry})
    model = {"method": "mmff94"}
    return qcengine.compute({"molecule": molecule, "driver": driver, "model": model}, "rdkit").return_result


def ratio() -> float:
    x = np.array(DATA["geometry"]).reshape(-1, 3)
    analytic = np.array(run(x, "gradient")).reshape(-1, 3)[0, 0]
    plus, minus = x.copy(), x.copy()
    plus[0, 0] += 1e-4
    minus[0, 0] -= 1e-4
    return analytic / ((run(plus, "energy") - run(minus, "energy")) / 2e-4)


geometry = np.array(DATA["geometry"])
before, energy_before = ratio(), run(geometry, "energy")
print(fix_rdkit_units(), before, ratio(), run(geometry, "energy") / energy_before)
