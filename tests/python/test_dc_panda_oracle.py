"""`otpd dc hash` against Panda3D 1.10 itself (the oracle), on the project's own small DC files
in tests/dc/panda-oracle/ (forward references, unknown types, struct and multiple
inheritance, molecular and redefined fields) and on every file of ../shared/dc when present,
under the dc-* settings: where Panda3D reads a file, otpd must give the same hash, and where
Panda3D refuses it (read() false), otpd must refuse it too."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OTPD = os.environ.get("OTPD_BIN", str(ROOT / "target" / "release" / "otpd"))
OWN = sorted((ROOT / "tests" / "dc" / "panda-oracle").glob("*.dc"))
SHARED = sorted((ROOT.parent / "shared" / "dc").glob("*.dc"))
SETTINGS = [(1, 1, 1), (0, 1, 1), (0, 0, 0), (1, 0, 1), (1, 1, 0)]

PANDA = r"""
import sys
from panda3d.core import loadPrcFileData, Filename
mi, vi, sb = sys.argv[2:5]
loadPrcFileData("", "dc-multiple-inheritance %s\ndc-virtual-inheritance %s\n"
                    "dc-sort-inheritance-by-file %s\nnotify-level-dcparser fatal" % (mi, vi, sb))
from panda3d.direct import DCFile
d = DCFile()
ok = d.read(Filename.fromOsSpecific(sys.argv[1]))
print("%d 0x%08x" % (1 if ok else 0, d.getHash()))
"""


def panda(path, s):
    res = subprocess.run([sys.executable, "-c", PANDA, str(path), *map(str, s)],
                         capture_output=True, text=True, check=True)
    ok, h = res.stdout.split()
    return ok == "1", h


def otpd(path, s):
    flags = ["--multiple-inheritance=%d" % s[0], "--virtual-inheritance=%d" % s[1],
             "--sort-inheritance-by-file=%d" % s[2]]
    res = subprocess.run([OTPD, "dc", "hash", *flags, str(path)], capture_output=True, text=True)
    return res.returncode, res.stdout.strip()


def compare(path):
    for s in SETTINGS:
        ok, want = panda(path, s)
        code, got = otpd(path, s)
        if ok:
            assert (code, got) == (0, want), f"{path.name} {s}"
        else:
            assert code == 2, f"{path.name} {s}: Panda3D refuses it, otpd gave {got}"


@pytest.mark.parametrize("path", OWN, ids=[p.name for p in OWN])
def test_own_files_hash_as_panda3d(path):
    compare(path)


@pytest.mark.skipif(not SHARED, reason="../shared/dc not beside the clone")
def test_shared_files_hash_as_panda3d():
    for path in SHARED:
        compare(path)
