"""The dependency direction of the design, enforced on the source.

dsp -> nothing of ours; simulator -> nothing of ours (but dsp.config, the one pure
config mechanism every config file is checked with); edge -> dsp, simulator;
cloud -> dsp; models -> dsp (models.training also simulator); cloud and models
never import each other (they meet only at the endpoint contract and the
bundle manifest); models.serving imports neither models.training nor
simulator, so a served bundle loads without training code; pumpwatch wires
everything. The edge stays light enough for an ARM gateway.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"dsp", "simulator", "edge", "cloud", "models", "pumpwatch"}
ALLOWED = {
    "dsp": set(),
    "simulator": set(),
    "edge": {"dsp", "simulator"},
    "cloud": {"dsp"},
    "models": {"dsp"},
    "pumpwatch": OURS,
}
# Third-party imports allowed in the packages an edge gateway installs.
EDGE_THIRD_PARTY = {"numpy", "scipy", "msgspec", "zstandard", "paho", "awscrt", "awsiot"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _modules(pkg: str) -> list[Path]:
    return sorted((ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("pkg", sorted(OURS))
def test_packages_depend_only_downward(pkg: str) -> None:
    bad = []
    for path in _modules(pkg):
        allowed = set(ALLOWED[pkg]) | {pkg}
        rel = path.relative_to(ROOT)
        if rel.parts[:2] == ("models", "training"):
            allowed.add("simulator")  # training data comes from the simulator
        for name in _imports(path):
            top = name.split(".")[0]
            if name == "dsp.config":
                continue  # the one config mechanism: pure, and what every config file uses
            if top in OURS and top not in allowed:
                bad.append(f"{rel} imports {name}")
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_pipeline_side_of_cloud_never_imports_the_model_side() -> None:
    bad = []
    for path in _modules("cloud"):
        rel = path.relative_to(ROOT)
        if rel.parts[:2] == ("cloud", "model"):
            continue
        bad += [f"{rel} imports {n}" for n in _imports(path) if n.startswith("models.serving")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("pkg", ["dsp", "simulator", "edge"])
def test_edge_install_stays_light(pkg: str) -> None:
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for path in _modules(pkg):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in stdlib or top in OURS or top in EDGE_THIRD_PARTY or top == "__future__":
                continue
            bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "heavy or undeclared imports on the edge:\n" + "\n".join(bad)


def test_dsp_does_no_io() -> None:
    banned = {"os", "io", "socket", "logging", "time", "pathlib", "subprocess", "threading"}
    bad = [
        f"{p.relative_to(ROOT)} imports {n}"
        for p in _modules("dsp")
        for n in _imports(p)
        if n.split(".")[0] in banned
    ]
    assert not bad, "\n".join(bad)
