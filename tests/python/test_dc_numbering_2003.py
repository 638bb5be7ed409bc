"""The 2003 client's field numbers, from an oracle otpd did not write: Panda3D 1.10 reading the
DC file with `dc-multiple-inheritance 0` (the 2003 rule), against `otpd dc fields --era 2003`
and `otpd dc fields` on a cluster read the same way. Every field of every class is compared."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OTPD = os.environ.get("OTPD_BIN", str(ROOT / "target" / "release" / "otpd"))
SHARED_TOON = ROOT.parent / "shared" / "dc" / "toon-2003.dc"

# One process per file: Panda3D reads its dc-* settings while parsing.
PANDA = r"""
import json, sys
from panda3d.core import loadPrcFileData, Filename
loadPrcFileData("", "dc-multiple-inheritance 0")
from panda3d.direct import DCFile
d = DCFile()
assert d.read(Filename.fromOsSpecific(sys.argv[1]))
out = {}
for i in range(d.getNumClasses()):
    c = d.getClass(i)
    if c.isStruct():
        continue
    fields = [(c.getInheritedField(j).getName(), c.getInheritedField(j).getNumber())
              for j in range(c.getNumInheritedFields())]
    out[c.getName()] = {"number": c.getNumber(), "fields": fields}
print(json.dumps(out))
"""


def panda_numbers(path):
    res = subprocess.run([sys.executable, "-c", PANDA, str(path)], capture_output=True,
                         text=True, check=True)
    return json.loads(res.stdout)


def otpd_numbers(path, *flags):
    res = subprocess.run([OTPD, "dc", "fields", *flags, str(path)], capture_output=True,
                         text=True, check=True)
    out, cls = {}, None
    for line in res.stdout.splitlines():
        if line.startswith("dclass "):
            _, number, name = line.split()[:3]
            cls = out.setdefault(name, {"number": int(number), "fields": []})
        elif line.startswith("struct "):
            cls = None
        elif cls is not None:
            number, name = line.split()[:2]
            cls["fields"].append([name, int(number)])
    return out


def check(path):
    oracle = panda_numbers(path)
    assert oracle, "Panda3D read no classes"
    total = sum(len(c["fields"]) for c in oracle.values())
    for flags in (["--era", "2003"], ["--multiple-inheritance=0", "--virtual-inheritance=0",
                                      "--sort-inheritance-by-file=0"]):
        ours = otpd_numbers(path, *flags)
        assert set(ours) == set(oracle)
        for name, c in oracle.items():
            assert ours[name]["number"] == c["number"], name
            assert ours[name]["fields"] == [list(f) for f in c["fields"]], name
    return total


def test_the_projects_toontown_schema_numbers_as_panda3d_without_multiple_inheritance():
    assert check(ROOT / "tests" / "dc" / "toon.dc") > 10


@pytest.mark.skipif(not SHARED_TOON.exists(), reason="../shared/dc/toon-2003.dc not beside the clone")
def test_toontowns_2003_schema_numbers_as_panda3d_without_multiple_inheritance():
    # 79 classes, 815 inherited fields: every one compared.
    assert check(SHARED_TOON) == 815
