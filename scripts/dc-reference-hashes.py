#!/usr/bin/env python3
"""Regenerates otp-dc/tests/dc/expected.tsv: the hash the Panda3D wheel computes for each of
the project's test DC files under every combination of the dc-multiple-inheritance,
dc-virtual-inheritance and dc-sort-inheritance-by-file settings (one process per reading, as
Panda3D's parser keeps state after an error). Needs `pip install panda3d`."""
import glob
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DC_DIR = os.path.join(HERE, "..", "otp-dc", "tests", "dc")
PROBE = """
import sys
from panda3d.core import loadPrcFileData, Filename
mi, vi, so = sys.argv[2:5]
loadPrcFileData("", "dc-multiple-inheritance %s\\ndc-virtual-inheritance %s\\ndc-sort-inheritance-by-file %s\\n" % (mi, vi, so))
from panda3d.direct import DCFile
d = DCFile()
if not d.read(Filename.fromOsSpecific(sys.argv[1])):
    print("ERROR")
else:
    print("0x%08x" % d.getHash())
"""


def main():
    rows = []
    for path in sorted(glob.glob(os.path.join(DC_DIR, "*.dc"))):
        for mi in (1, 0):
            for vi in (1, 0):
                for so in (1, 0):
                    out = subprocess.run(
                        [sys.executable, "-c", PROBE, path, str(mi), str(vi), str(so)],
                        capture_output=True, text=True,
                    ).stdout.strip().splitlines()
                    rows.append("%s\t%d\t%d\t%d\t%s" % (os.path.basename(path), mi, vi, so, out[-1] if out else "ERROR"))
    with open(os.path.join(DC_DIR, "expected.tsv"), "w") as f:
        f.write("# file\tmultiple_inheritance\tvirtual_inheritance\tsort_inheritance_by_file\thash (Panda3D wheel)\n")
        f.write("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
