"""A ForceBalance torsion-profile target whose MM minimisations hold only the driven dihedral.

ForceBalance's own ``TorsionProfile_SMIRNOFF`` target freezes the four dihedral atoms and
restrains every atom to its QC position, so bond angles and out-of-plane geometry cannot relax;
a fit to it can put into the torsion terms energy that a relaxed scan (the QC side: geomeTRIC
holds only the dihedral; and MD) releases elsewhere. ``TorsionProfileRelaxed_SMIRNOFF`` is the
same target (QC reference, weights, alignment, finite-difference gradients: ForceBalance's
code) with one change: each grid point is minimised from its QC geometry with only the driven
dihedral held by the stiff harmonic term of `bespoke_fractal.optimization.profiles`, to the same
tolerance, so the profile fitted is the profile scored.

`register()` adds the target type to ForceBalance's table; it runs in the ForceBalance process
(`runner.py`), after the compatibility patches.
"""

from __future__ import annotations

TARGET_TYPE = "TorsionProfileRelaxed_SMIRNOFF"


def register() -> bool:
    """Make TARGET_TYPE known to ForceBalance's Objective (idempotent); True when added."""
    from forcebalance import objective

    key = TARGET_TYPE.upper()
    if key in objective.Implemented_Targets:
        return False
    objective.Implemented_Targets[key] = _target_class()
    return True


def _target_class() -> type:
    from copy import deepcopy

    import numpy as np
    from forcebalance.smirnoffio import SMIRNOFF
    from forcebalance.torsion_profile import TorsionProfileTarget
    from openmm import unit

    from bespoke_fractal.optimization.profiles import dihedral_degrees, dihedral_hold, hold_at, minimise

    class HeldDihedralSMIRNOFF(SMIRNOFF):
        """The SMIRNOFF engine with the driven dihedral held instead of its atoms frozen."""

        def create_simulation(self, **kwargs):
            self.freeze_atoms = []
            self.restrain_k = 0.0
            self.held_dihedral = tuple(int(i) for i in self.target.metadata["dihedrals"][0])
            hold = dihedral_hold([self.realAtomIdxs[i] for i in self.held_dihedral])
            self.hold_index = self.system.addForce(hold)
            super().create_simulation(**kwargs)  # gives every force its group, then the Simulation

        def optimize(self, shot, crit=1e-4, disable_vsite=False, align=True, include_restraint_energy=False):
            """(MM energy kcal/mol without the hold, RMSD Å from the QC geometry, minimised frame)."""
            self.update_simulation()
            self.set_positions(shot)
            context = self.simulation.context
            start = context.getState(getPositions=True).getPositions(asNumpy=True)
            start = start.value_in_unit(unit.angstrom)[self.realAtomIdxs]
            hold = self.simulation.system.getForce(self.hold_index)
            hold_at(hold, context, dihedral_degrees(start, self.held_dihedral))
            minimise(context)
            groups = set(range(32)) - {hold.getForceGroup()}
            state = context.getState(getEnergy=True, getPositions=True, groups=groups)
            energy = state.getPotentialEnergy().value_in_unit(unit.kilocalorie_per_mole)
            positions = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)[self.realAtomIdxs]
            rmsd = float(np.sqrt(np.mean(np.sum((positions - start) ** 2, axis=1))))
            frame = deepcopy(self.mol[0])
            frame.xyzs = [np.asarray(positions)]
            return energy, rmsd, frame

    class RelaxedTorsionProfileTarget(TorsionProfileTarget):
        """TorsionProfile_SMIRNOFF with `HeldDihedralSMIRNOFF` minimisations."""

        def __init__(self, options, tgt_opts, forcefield):
            # the options ForceBalance's TorsionProfileTarget_SMIRNOFF sets, with its defaults
            self.set_option(tgt_opts, "pdb", default="conf.pdb")
            self.set_option(tgt_opts, "mol2", forceprint=True)
            self.set_option(tgt_opts, "coords", default="scan.xyz")
            self.set_option(tgt_opts, "openmm_precision", "precision", default="double", forceprint=True)
            self.set_option(tgt_opts, "openmm_platform", "platname", default="Reference", forceprint=True)
            self.engine_ = HeldDihedralSMIRNOFF
            super().__init__(options, tgt_opts, forcefield)

    return RelaxedTorsionProfileTarget
