"""Bespoke proper-torsion parameters for the target bonds of one molecule.

Every proper torsion quartet (a, b, c, d) around a target bond b-c gets a bespoke parameter.
Quartets share one parameter when they are symmetry-equivalent in the parent (the three H-C-C-H
of a methyl side, the quartets of symmetry-equivalent bonds), and when the QC data cannot tell
them apart: quartets that are equivalent in the fragment they are fitted on, and the quartets of
targets whose fragments have the same torsion drive (the middle bonds of decane).

A SMIRKS is written for each such class from the environment the parent and the fragment share:
the four tagged atoms and the heavy atoms around them, out to as many bonds as it takes to match
no other torsion of the parent, each atom with the primitives (element, aromaticity, connectivity
X, hydrogen count, formal charge, ring membership) on which the parent atom and its fragment atom
agree; where they differ (next to a capping atom) both values are allowed (an OR), or for
aromaticity and ring membership left out. Capping atoms are never required. If the whole shared
environment still matches another torsion of the parent, the tagged atoms also get recursive
SMARTS of their whole parent and fragment environments; if even that fails, `SMIRKSError`.

Every SMIRKS is checked with the toolkit's own RDKit matching (MDL aromaticity): it must match
exactly its own quartets in the parent, and in each fragment all of its own quartets around the
driven bond; and with all bespoke parameters in order (the last match wins), every quartet around
a driven bond must end up with its own parameter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from openff.toolkit import ForceField, Molecule
from openff.toolkit.utils.rdkit_wrapper import RDKitToolkitWrapper
from openff.units import unit
from rdkit import Chem

from bespoke_fractal.errors import BespokeFractalError
from bespoke_fractal.schema.fits import BespokeTorsion
from bespoke_fractal.schema.fragments import Fragment, TorsionTarget
from bespoke_fractal.schema.workflow import BespokeOptimizationSchema

Quartet = tuple[int, int, int, int]

MAX_PERIODICITY = 4
_TOOLKIT = RDKitToolkitWrapper()
_BOND_ORDER = {
    Chem.BondType.SINGLE: "-",
    Chem.BondType.DOUBLE: "=",
    Chem.BondType.TRIPLE: "#",
    Chem.BondType.AROMATIC: ":",
}


class SMIRKSError(BespokeFractalError):
    """No SMIRKS tells a target torsion apart from the other torsions of the parent."""


# ---- public API ------------------------------------------------------------------------------


def bespoke_torsions(
    schema: BespokeOptimizationSchema, initial: ForceField, min_depth: int = 1
) -> list[BespokeTorsion]:
    """The torsion parameters to fit for every target of `schema`.

    Each SMIRKS holds the shared environment out to at least `min_depth` bonds from its tagged
    atoms (further where needed to match no other torsion of the parent).

    With ``generate_bespoke_terms`` new SMIRKS are made (ids ``bf-t<target>-<bond>-q<class>``);
    without it the parameters of `initial` that the target torsions match are returned (ids and
    SMIRKS unchanged) to be refitted. With ``expand_torsion_terms`` every parameter has
    periodicities 1-4 (phase 0 for odd, 180 for even), k taken from the matched initial term.
    """
    parent = _Side.of(schema.parent_molecule())
    labels = _torsion_labels(initial, parent.molecule)
    expand = schema.smirks_settings.expand_torsion_terms
    if not schema.smirks_settings.generate_bespoke_terms:
        return _initial_parameters(schema, parent, labels, expand)

    targets = schema.targets
    all_target_quartets = {
        index: {_canonical(q) for bond in target.parent_bonds for q in parent.quartets(bond)}
        for index, target in enumerate(targets)
    }
    members = [
        _Member.of(index, target, schema.fragmentation.fragments[target.fragment], parent)
        for index, target in enumerate(targets)
    ]
    groups: dict[str, list[_Member]] = defaultdict(list)
    for member in members:
        groups[member.target.identity.key].append(member)
    torsions = []
    for group in groups.values():
        builder = _GroupSMIRKS(group, parent, min_depth)
        for number, parameter_class in enumerate(builder.classes(all_target_quartets)):
            initial_parameter = labels[parameter_class.parent_quartets[0]]
            periodicity, phase, k, idivf = _terms(initial_parameter, expand)
            fragment_torsions = parameter_class.fragment_quartets()
            torsions.append(
                BespokeTorsion(
                    id=builder.parameter_id(parameter_class, number),
                    smirks=parameter_class.smirks,
                    target_index=min(fragment_torsions),
                    target_indices=sorted(fragment_torsions),
                    periodicity=periodicity,
                    phase=phase,
                    k=k,
                    idivf=idivf,
                    parent_torsions=parameter_class.parent_quartets,
                    fragment_torsions=fragment_torsions,
                    initial_id=initial_parameter.id,
                )
            )
    torsions.sort(key=lambda t: t.target_index)  # stable: classes stay in order
    _check_fragments(members, parent, torsions)
    return torsions


def _check_fragments(members: list[_Member], parent: _Side, torsions: list[BespokeTorsion]) -> None:
    """Every torsion around a driven bond must get, of all the bespoke parameters (the last
    match wins), one made for it; another target's parameter winning there is an error."""
    for member in members:
        winner: dict[Quartet, BespokeTorsion] = {}
        for torsion in torsions:
            for quartet in member.fragment.matches(torsion.smirks):
                winner[quartet] = torsion
        for instance in member.driven_quartets(parent):
            quartet = _canonical(instance.fragment)
            torsion = winner.get(quartet)
            if torsion is None or quartet not in torsion.fragment_torsions.get(member.index, []):
                raise SMIRKSError(
                    f"target {member.index}: fragment torsion {quartet} is matched by "
                    f"{torsion.id if torsion else 'no bespoke parameter'}, not by its own"
                )


def add_bespoke_torsions(initial: ForceField, torsions: list[BespokeTorsion]) -> ForceField:
    """A copy of `initial` with `torsions` in its ProperTorsions.

    A torsion whose SMIRKS the force field already has replaces that parameter in place (a
    refit of an initial parameter); the others are appended at the end, so that they win over
    every initial parameter (in SMIRNOFF the last match wins).
    """
    force_field = ForceField(initial.to_string(), load_plugins=False, allow_cosmetic_attributes=True)
    handler = force_field.get_parameter_handler("ProperTorsions")
    for torsion in torsions:
        kwargs = {
            "smirks": torsion.smirks,
            "id": torsion.id,
            "periodicity": list(torsion.periodicity),
            "phase": [value * unit.degree for value in torsion.phase],
            "k": [value * unit.kilocalorie_per_mole for value in torsion.k],
            "idivf": list(torsion.idivf),
        }
        existing = next((i for i, p in enumerate(handler.parameters) if p.smirks == torsion.smirks), None)
        if existing is None:
            handler.add_parameter(kwargs)
            continue
        del handler.parameters[existing]
        if existing < len(handler.parameters):
            handler.add_parameter(kwargs, before=existing)
        else:
            handler.add_parameter(kwargs)
    return force_field


# ---- molecules as RDKit graphs ---------------------------------------------------------------


@dataclass
class _Side:
    """A molecule with the RDKit graph the toolkit matches SMIRKS against (MDL aromaticity)."""

    molecule: Molecule
    rdmol: Chem.Mol
    ranks: list[int]

    @classmethod
    def of(cls, molecule: Molecule) -> _Side:
        rdmol = _TOOLKIT._connection_table_to_rdkit(molecule, aromaticity_model="OEAroModel_MDL")
        ranks = list(Chem.CanonicalRankAtoms(rdmol, breakTies=False, includeChirality=False))
        return cls(molecule, rdmol, ranks)

    def neighbours(self, atom: int) -> list[int]:
        return sorted(n.GetIdx() for n in self.rdmol.GetAtomWithIdx(atom).GetNeighbors())

    def bond(self, i: int, j: int) -> Chem.Bond | None:
        return self.rdmol.GetBondBetweenAtoms(i, j)

    def heavy(self, atom: int) -> bool:
        return self.rdmol.GetAtomWithIdx(atom).GetAtomicNum() > 1

    def quartets(self, bond: tuple[int, int]) -> list[Quartet]:
        """Every proper torsion around `bond`, oriented as the bond is given."""
        b, c = bond
        return [
            (a, b, c, d) for a in self.neighbours(b) if a != c for d in self.neighbours(c) if d not in (b, a)
        ]

    def key(self, quartet: Quartet) -> tuple[int, ...]:
        """Symmetry class of a quartet (graph symmetry, either direction)."""
        forward = tuple(self.ranks[i] for i in quartet)
        return min(forward, forward[::-1])

    def matches(self, smirks: str) -> set[Quartet]:
        return {_canonical(q) for q in _TOOLKIT._find_smarts_matches(self.rdmol, smirks)}


def _canonical(quartet: Iterable[int]) -> Quartet:
    quartet = tuple(quartet)
    return min(quartet, quartet[::-1])


def _atom_primitives(atom: Chem.Atom) -> tuple[str, ...]:
    return (
        f"#{atom.GetAtomicNum()}",
        "a" if atom.GetIsAromatic() else "A",
        f"X{atom.GetTotalDegree()}",
        f"H{atom.GetTotalNumHs(includeNeighbors=True)}",
        f"{atom.GetFormalCharge():+d}",
        "R" if atom.IsInRing() else "!R",
    )


def _bond_primitives(bond: Chem.Bond) -> tuple[str, str]:
    order = ":" if bond.GetIsAromatic() else _BOND_ORDER.get(bond.GetBondType(), "~")
    return order, ("@" if bond.IsInRing() else "!@")


def _combine(values: list[tuple[str, ...]], binary: set[int]) -> list[list[str]]:
    """Per slot, the values the instances take; binary slots (aromatic or not, in a ring or not)
    are left out (empty) when the instances differ."""
    slots = []
    for slot, options in enumerate(zip(*values, strict=True)):
        distinct = list(dict.fromkeys(options))
        slots.append([] if len(distinct) > 1 and slot in binary else distinct)
    return slots


def _atom_smarts(values: list[tuple[str, ...]], tag: int = 0, extra: str = "") -> str:
    """One SMARTS atom matching every atom whose primitives are in `values`: primitives all
    share are ANDed, differing ones become OR-groups."""
    if all(v[0] == "#1" for v in values):
        charges = {v[4] for v in values}
        text = "#1" + (charges.pop() if len(charges) == 1 and "+0" not in charges else "")
    else:
        slots = _combine(values, binary={1, 5})
        head = "".join(s[0] for s in slots if len(s) == 1)
        text = ";".join([head or "*"] + [",".join(s) for s in slots if len(s) > 1])
    if extra:
        text += ";" + extra
    return f"[{text}:{tag}]" if tag else f"[{text}]"


def _bond_smarts(values: list[tuple[str, str]]) -> str:
    orders, rings = _combine(values, binary={1})
    parts = [",".join(orders)] + rings
    return ";".join(parts) if len(orders) > 1 else "".join(parts)


def _write_smarts(labels: list[str], bonds: dict[tuple[int, int], str]) -> str:
    """SMARTS of a connected graph (`bonds` keyed by sorted node pairs), written from node 0;
    nodes 0-3 (the tagged atoms) are kept on the main chain."""
    adjacency: dict[int, list[int]] = defaultdict(list)
    for u, v in bonds:
        adjacency[u].append(v)
        adjacency[v].append(u)
    for node in adjacency:  # untagged branches first, the next tagged atom last
        adjacency[node].sort(key=lambda v: (v < 4, v))
    parent: dict[int, int | None] = {0: None}
    children: dict[int, list[int]] = defaultdict(list)
    rings: dict[int, list[tuple[int, bool]]] = defaultdict(list)  # node -> [(other end, opens)]
    seen: set[frozenset[int]] = set()

    def visit(node: int) -> None:
        for other in adjacency[node]:
            edge = frozenset((node, other))
            if edge in seen:
                continue
            seen.add(edge)
            if other in parent:  # a ring closure back to an atom written earlier
                rings[other].append((node, True))
                rings[node].append((other, False))
            else:
                parent[other] = node
                children[node].append(other)
                visit(other)

    visit(0)
    open_digits: dict[frozenset[int], int] = {}

    def emit(node: int) -> str:
        text = labels[node]
        for other, opens in rings[node]:
            edge = frozenset((node, other))
            if opens:
                open_digits[edge] = min(set(range(1, 100)) - set(open_digits.values()))
                digit = open_digits[edge]
            else:
                digit = open_digits.pop(edge)
                text += bonds[(min(edge), max(edge))]
            text += str(digit) if digit < 10 else f"%{digit}"
        kids = children[node]
        for kid in kids:
            branch = bonds[(min(node, kid), max(node, kid))] + emit(kid)
            text += branch if kid == kids[-1] else f"({branch})"
        return text

    return emit(0)


# ---- the SMIRKS of a group of targets ---------------------------------------------------------


@dataclass
class _Member:
    """One target: its fragment and how the fragment's atoms stand for the parent's."""

    index: int
    target: TorsionTarget
    fragment: _Side
    to_parent: dict[int, int]  # fragment atom -> parent atom (capping atoms absent)
    caps: dict[int, int]  # capping atom bonded to the driven bond -> the parent atom it replaces
    driven: tuple[int, int]  # parent atoms of the driven bond, in fragment dihedral order
    fragment_bond: tuple[int, int]

    @classmethod
    def of(cls, index: int, target: TorsionTarget, fragment: Fragment, parent: _Side) -> _Member:
        to_parent = dict(fragment.parent_atoms)
        side = _Side.of(fragment.to_molecule())
        fragment_bond = (target.fragment_dihedral[1], target.fragment_dihedral[2])
        driven = (to_parent[fragment_bond[0]], to_parent[fragment_bond[1]])
        mapped = set(to_parent.values())
        caps = {}
        for f_atom, p_atom in zip(fragment_bond, driven, strict=True):
            capping = [n for n in side.neighbours(f_atom) if n not in to_parent]
            cut = [n for n in parent.neighbours(p_atom) if n not in mapped]
            if len(capping) != len(cut):
                raise SMIRKSError(
                    f"target {index}: fragment atom {f_atom} has {len(capping)} capping atoms where "
                    f"parent atom {p_atom} has {len(cut)} neighbours outside the fragment"
                )
            caps.update(zip(capping, cut, strict=True))
        return cls(index, target, side, to_parent, caps, driven, fragment_bond)

    def parent_of(self, f_atom: int) -> int:
        """The parent atom a fragment atom stands for; -1 for capping atoms further out."""
        return self.to_parent.get(f_atom, self.caps.get(f_atom, -1))

    def driven_quartets(self, parent: _Side) -> list[_Instance]:
        to_fragment = {p: f for f, p in self.to_parent.items()} | {p: f for f, p in self.caps.items()}
        return [
            _Instance(self.index, tuple(to_fragment[p] for p in quartet), quartet)
            for quartet in parent.quartets(self.driven)
        ]

    def label(self, parent: _Side) -> str:
        b, c = self.target.parent_bond
        atoms = parent.molecule.atoms
        return f"t{self.index}-{atoms[b].symbol}{b}-{atoms[c].symbol}{c}"


@dataclass(frozen=True)
class _Instance:
    """A torsion around a driven bond: target, fragment atoms and the parent atoms they stand for."""

    target: int
    fragment: Quartet
    parent: Quartet


@dataclass
class _Pattern:
    """The atoms of a SMIRKS; nodes 0-3 are the tagged atoms. atoms[node][i] is the (fragment
    atom, parent atom) of instance i at that node; targets[i] the target of instance i."""

    atoms: list[list[tuple[int, int]]]
    edges: list[tuple[int, int]]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.atoms)


@dataclass
class _Class:
    """Torsions that share one parameter."""

    instances: list[_Instance]  # around the driven bonds
    parent_quartets: list[Quartet]  # canonical; around every parent bond of the targets
    smirks: str = ""

    def fragment_quartets(self) -> dict[int, list[Quartet]]:
        found: dict[int, list[Quartet]] = defaultdict(list)
        for instance in self.instances:
            found[instance.target].append(_canonical(instance.fragment))
        return {target: sorted(quartets) for target, quartets in sorted(found.items())}


class _GroupSMIRKS:
    """Parameter classes and their SMIRKS for targets driven on the same fragment torsion (one
    target, or several whose QC drives are one and the same and so cannot be told apart)."""

    def __init__(self, members: list[_Member], parent: _Side, min_depth: int = 1):
        self.members = {member.index: member for member in members}
        self.parent = parent
        self.min_depth = min_depth

    def parameter_id(self, cls: _Class, number: int) -> str:
        targets = sorted({i.target for i in cls.instances})
        return "bf-" + "-".join(self.members[t].label(self.parent) for t in targets) + f"-q{number}"

    def classes(self, all_target_quartets: dict[int, set[Quartet]]) -> list[_Class]:
        """The parameter classes of the group, each with a verified SMIRKS."""
        driven = [i for member in self.members.values() for i in member.driven_quartets(self.parent)]
        groups = _UnionFind(len(driven))
        parent_keys: dict[tuple[int, ...], int] = {}
        fragment_keys: dict[tuple[int, ...], int] = {}
        for n, instance in enumerate(driven):
            fragment = self.members[instance.target].fragment
            groups.union(n, parent_keys.setdefault(self.parent.key(instance.parent), n))
            groups.union(n, fragment_keys.setdefault(fragment.key(instance.fragment), n))
        own = set().union(*(all_target_quartets[index] for index in self.members))
        while True:
            classes = self._make_classes(driven, groups)
            merge = next((m for m in (self._write(c, classes, own) for c in classes) if m), None)
            if merge is None:
                return classes
            groups.union(*(driven.index(c.instances[0]) for c in merge))

    def _make_classes(self, driven: list[_Instance], groups: _UnionFind) -> list[_Class]:
        members: dict[int, list[_Instance]] = defaultdict(list)
        for n, instance in enumerate(driven):
            members[groups.find(n)].append(instance)
        root_of_key = {self.parent.key(i.parent): root for root, insts in members.items() for i in insts}
        quartets: dict[int, set[Quartet]] = defaultdict(set)
        for member in self.members.values():
            for bond in member.target.parent_bonds:
                for quartet in self.parent.quartets(bond):
                    root = root_of_key.get(self.parent.key(quartet))
                    if root is None:
                        raise SMIRKSError(
                            f"target {member.index}: torsion {quartet} of bond {bond} has no "
                            f"counterpart around the driven bond {member.target.parent_bond}"
                        )
                    quartets[root].add(_canonical(quartet))
        ordered = sorted(members.items(), key=lambda item: min(i.parent for i in item[1]))
        return [
            _Class(sorted(insts, key=lambda i: i.parent), sorted(quartets[root])) for root, insts in ordered
        ]

    def _write(self, cls: _Class, classes: list[_Class], own: set[Quartet]) -> tuple[_Class, _Class] | None:
        """Give `cls` a verified SMIRKS, or return two classes that must be merged."""
        wanted = set(cls.parent_quartets)
        size, depth = -1, self.min_depth
        while True:
            pattern = self._pattern(cls.instances, depth)
            smirks = self._smirks(pattern)
            extra = self.parent.matches(smirks) - wanted
            if not extra or len(pattern) == size:
                break
            size, depth = len(pattern), depth + 1
        if extra - own:  # still matches torsions of other bonds: pin the tagged atoms
            smirks = self._smirks(pattern, pin=True)
            extra = self.parent.matches(smirks) - wanted
            if extra - own:
                raise SMIRKSError(
                    f"no SMIRKS from the fragment tells parent torsion {cls.parent_quartets[0]} "
                    f"apart from {sorted(extra - own)[0]}"
                )
        if extra:  # matches another class of this group in the parent
            return cls, next(c for c in classes if extra & set(c.parent_quartets))
        missing = wanted - self.parent.matches(smirks)
        if missing:
            raise SMIRKSError(f"SMIRKS {smirks} does not match parent torsions {sorted(missing)}")
        for index, quartets in cls.fragment_quartets().items():
            member = self.members[index]
            around = {_canonical(i.fragment) for i in member.driven_quartets(self.parent)}
            found = member.fragment.matches(smirks) & around
            if not set(quartets) <= found:
                raise SMIRKSError(
                    f"target {index}: SMIRKS {smirks} does not match fragment torsions "
                    f"{sorted(set(quartets) - found)}"
                )
            if found != set(quartets):  # the fragment cannot tell two classes apart
                other = next(
                    c
                    for c in classes
                    if c is not cls
                    and any(i.target == index and _canonical(i.fragment) in found for i in c.instances)
                )
                return cls, other
        cls.smirks = smirks
        return None

    # -- patterns

    def _pattern(self, instances: list[_Instance], depth: int) -> _Pattern:
        """The environment of the first instance out to `depth` bonds from its tagged atoms; the
        depth is lowered until every other instance has that environment too."""
        while True:
            pattern = self._grow(instances[0], depth)
            aligned = [self._align(pattern, instances[0], instance) for instance in instances[1:]]
            if all(atoms is not None for atoms in aligned):
                for instance, atoms in zip(instances[1:], aligned, strict=True):
                    for node, pair in enumerate(atoms):
                        pattern.atoms[node].append(pair)
                    pattern.targets.append(instance.target)
                return pattern
            if depth == 0:
                raise SMIRKSError(f"torsions {[i.parent for i in instances]} cannot share one SMIRKS")
            depth -= 1

    def _grow(self, instance: _Instance, depth: int) -> _Pattern:
        """Tagged atoms plus the heavy fragment atoms (with a parent atom) within `depth` bonds."""
        member = self.members[instance.target]
        nodes = list(instance.fragment)
        level = dict.fromkeys(nodes, 0)
        queue = [a for a in nodes if a in member.to_parent]
        while queue:
            atom = queue.pop(0)
            if level[atom] >= depth:
                continue
            for other in member.fragment.neighbours(atom):
                if other in level or other not in member.to_parent or not member.fragment.heavy(other):
                    continue
                if self.parent.bond(member.to_parent[atom], member.to_parent[other]) is None:
                    continue
                level[other] = level[atom] + 1
                nodes.append(other)
                queue.append(other)
        index = {atom: node for node, atom in enumerate(nodes)}
        edges = []
        for u, atom in enumerate(nodes):
            for other in member.fragment.neighbours(atom):
                v = index.get(other)
                if v is not None and v > u:
                    if self.parent.bond(member.parent_of(atom), member.parent_of(other)) is not None:
                        edges.append((u, v))
        atoms = [[(atom, member.parent_of(atom))] for atom in nodes]
        for node in range(4):
            atoms[node][0] = (instance.fragment[node], instance.parent[node])
        return _Pattern(atoms, edges, [instance.target])

    def _align(
        self, pattern: _Pattern, first: _Instance, instance: _Instance
    ) -> list[tuple[int, int]] | None:
        """The atoms of `instance` at every node of `pattern` (made on `first`), found by matching
        the pattern, with exact and then element-only atoms, in the instance's fragment."""
        source, member = self.members[first.target].fragment, self.members[instance.target]
        orientations = {instance.fragment: instance.parent, instance.fragment[::-1]: instance.parent[::-1]}
        for strict in (True, False):
            labels = []
            for node, pairs in enumerate(pattern.atoms):
                atom = source.rdmol.GetAtomWithIdx(pairs[0][0])
                values = [_atom_primitives(atom) if strict else (f"#{atom.GetAtomicNum()}",) * 6]
                labels.append(_atom_smarts(values, tag=node + 1))
            query = _write_smarts(labels, dict.fromkeys(pattern.edges, "~"))
            matches = _TOOLKIT._find_smarts_matches(member.fragment.rdmol, query)
            for match in sorted(matches, key=lambda m: tuple(m[:4]) != instance.fragment):
                tagged = tuple(match[:4])
                if tagged not in orientations:
                    continue
                pairs = [(f, member.parent_of(f)) for f in match]
                pairs[:4] = list(zip(tagged, orientations[tagged], strict=True))
                if any(p < 0 for _, p in pairs):
                    continue
                if all(self.parent.bond(pairs[u][1], pairs[v][1]) is not None for u, v in pattern.edges):
                    return pairs
        return None

    def _smirks(self, pattern: _Pattern, pin: bool = False) -> str:
        """SMIRKS of `pattern`: at each node every primitive its atoms (fragment and parent, of
        every instance) share, OR-groups where they differ; with `pin`, the tagged atoms also
        carry recursive SMARTS of their whole parent and fragment environments."""
        fragments = [self.members[target].fragment for target in pattern.targets]
        labels = []
        for node, pairs in enumerate(pattern.atoms):
            values = []
            for fragment, (f_atom, p_atom) in zip(fragments, pairs, strict=True):
                values.append(_atom_primitives(fragment.rdmol.GetAtomWithIdx(f_atom)))
                values.append(_atom_primitives(self.parent.rdmol.GetAtomWithIdx(p_atom)))
            extra = ""
            if pin and node < 4:
                environments = {_environment(self.parent, p) for _, p in pairs}
                environments |= {
                    _environment(fragment, f) for fragment, (f, _) in zip(fragments, pairs, strict=True)
                }
                extra = ",".join(f"$({e})" for e in sorted(environments))
            labels.append(_atom_smarts(values, tag=node + 1 if node < 4 else 0, extra=extra))
        bonds = {}
        for u, v in pattern.edges:
            values = []
            for fragment, (fu, pu), (fv, pv) in zip(
                fragments, pattern.atoms[u], pattern.atoms[v], strict=True
            ):
                values.append(_bond_primitives(fragment.bond(fu, fv)))
                values.append(_bond_primitives(self.parent.bond(pu, pv)))
            bonds[(u, v)] = _bond_smarts(values)
        return _write_smarts(labels, bonds)


def _environment(side: _Side, atom: int) -> str:
    """Recursive-SMARTS body: `atom` and every heavy atom of `side`, rooted at `atom`."""
    nodes = [atom] + [
        a.GetIdx() for a in side.rdmol.GetAtoms() if a.GetAtomicNum() > 1 and a.GetIdx() != atom
    ]
    index = {a: n for n, a in enumerate(nodes)}
    labels = [_atom_smarts([_atom_primitives(side.rdmol.GetAtomWithIdx(a))]) for a in nodes]
    bonds = {}
    for bond in side.rdmol.GetBonds():
        u, v = index.get(bond.GetBeginAtomIdx()), index.get(bond.GetEndAtomIdx())
        if u is not None and v is not None:
            bonds[(min(u, v), max(u, v))] = _bond_smarts([_bond_primitives(bond)])
    return _write_smarts(labels, bonds) if bonds else labels[0]


class _UnionFind:
    def __init__(self, size: int):
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


# ---- parameter values ------------------------------------------------------------------------


def _torsion_labels(force_field: ForceField, molecule: Molecule) -> dict[Quartet, object]:
    """Canonical quartet -> the ProperTorsions parameter `force_field` assigns it."""
    labels = force_field.label_molecules(molecule.to_topology())[0]["ProperTorsions"]
    return {_canonical(key): parameter for key, parameter in labels.items()}


def _terms(parameter, expand: bool) -> tuple[list[int], list[float], list[float], list[float]]:
    """(periodicity, phase in degrees, k in kcal/mol, idivf) for a bespoke copy of `parameter`."""
    periodicity = [int(n) for n in parameter.periodicity]
    phase = [float(p.m_as(unit.degree)) for p in parameter.phase]
    k = [float(value.m_as(unit.kilocalorie_per_mole)) for value in parameter.k]
    idivf = [float(d) for d in parameter.idivf] if parameter.idivf else [1.0] * len(k)
    if not expand:
        return periodicity, phase, k, idivf
    expanded = []
    for n in range(1, MAX_PERIODICITY + 1):
        reference = 0.0 if n % 2 else 180.0
        total = 0.0
        for term_n, term_phase, term_k, term_idivf in zip(periodicity, phase, k, idivf, strict=True):
            if term_n != n:
                continue
            offset = (term_phase - reference) % 360.0
            if min(offset, 360.0 - offset) < 1e-6:
                total += term_k / term_idivf
            elif abs(offset - 180.0) < 1e-6:
                total -= term_k / term_idivf
        expanded.append(total)
    periods = list(range(1, MAX_PERIODICITY + 1))
    return periods, [0.0 if n % 2 else 180.0 for n in periods], expanded, [1.0] * MAX_PERIODICITY


def _initial_parameters(
    schema: BespokeOptimizationSchema, parent: _Side, labels: dict[Quartet, object], expand: bool
) -> list[BespokeTorsion]:
    """The initial parameters the target torsions match, each once, in order of first use
    (target_index: the first target that uses it)."""
    parameters: dict[str, object] = {}
    quartets: dict[str, set[Quartet]] = defaultdict(set)
    targets: dict[str, set[int]] = defaultdict(set)
    for index, target in enumerate(schema.targets):
        for bond in target.parent_bonds:
            for quartet in parent.quartets(bond):
                parameter = labels[_canonical(quartet)]
                parameters.setdefault(parameter.id, parameter)
                quartets[parameter.id].add(_canonical(quartet))
                targets[parameter.id].add(index)
    torsions = []
    for identifier, parameter in parameters.items():
        periodicity, phase, k, idivf = _terms(parameter, expand)
        torsions.append(
            BespokeTorsion(
                id=identifier,
                smirks=parameter.smirks,
                target_index=min(targets[identifier]),
                target_indices=sorted(targets[identifier]),
                periodicity=periodicity,
                phase=phase,
                k=k,
                idivf=idivf,
                parent_torsions=sorted(quartets[identifier]),
                initial_id=identifier,
            )
        )
    return torsions
