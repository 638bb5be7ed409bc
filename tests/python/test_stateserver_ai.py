"""An unmodified Panda3D AI (panda3d-astron) generating, updating, moving, reading back and
deleting an object on otpd's StateServer, watched from the object's zones over a raw socket."""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
OTPD = os.environ.get("OTPD_BIN", os.path.join(HERE, "..", "..", "target", "release", "otpd"))
DC = os.path.join(HERE, "ai.dc")
CONTROL = 100100
DOID, PARENT, ZONE, NEW_ZONE = 300000001, 200000000, 10, 11


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def otpd():
    port = free_port()
    d = tempfile.mkdtemp()
    conf = os.path.join(d, "cluster.ron")
    with open(conf, "w") as f:
        f.write(
            '(cores: 2, pin_cores: false, dc_files: ["%s"], '
            'messagedirector: (bind: Some("127.0.0.1:%d")), roles: [StateServer(control: %d)])'
            % (DC, port, CONTROL)
        )
    proc = subprocess.Popen([OTPD, "--cluster", conf], stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port
    proc.kill()
    proc.wait()


def frame(body):
    return struct.pack("<H", len(body)) + body


def datagram(recipient, sender, msgtype, payload=b""):
    return frame(struct.pack("<BQQH", 1, recipient, sender, msgtype) + payload)


class Watcher:
    """A raw MD participant subscribed to channels, confirmed by a probe from a second socket."""

    def __init__(self, port, channels):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.buf = b""
        probe = socket.create_connection(("127.0.0.1", port))
        for c in channels:
            self.s.sendall(frame(struct.pack("<BQHQ", 1, 1, 9000, c)))
            deadline = time.time() + 5
            while True:
                probe.sendall(datagram(c, 1, 4242))
                got = self.recv(0.1)
                if got is not None:
                    break
                assert time.time() < deadline, "subscription never took effect"
        probe.close()
        while self.recv(0.2) is not None:
            pass

    def recv(self, timeout=10.0):
        """(recipients, sender, msgtype, payload) of the next datagram, or None."""
        deadline = time.time() + timeout
        while True:
            if len(self.buf) >= 2:
                (n,) = struct.unpack_from("<H", self.buf)
                if len(self.buf) >= 2 + n:
                    body, self.buf = self.buf[2 : 2 + n], self.buf[2 + n :]
                    count = body[0]
                    recipients = struct.unpack_from("<%dQ" % count, body, 1)
                    sender, msgtype = struct.unpack_from("<QH", body, 1 + 8 * count)
                    return recipients, sender, msgtype, body[1 + 8 * count + 10 :]
            left = deadline - time.time()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def until(self, msgtype, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.recv(deadline - time.time())
            if got is None:
                break
            if got[2] == msgtype:
                return got
        raise AssertionError("no datagram of type %d" % msgtype)


def test_an_ai_generates_updates_moves_reads_and_deletes_an_object(otpd):
    old_zone = (PARENT << 32) | ZONE
    new_zone = (PARENT << 32) | NEW_ZONE
    watcher = Watcher(otpd, [old_zone, new_zone])
    peer = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "ai_peer.py"), str(otpd), "stateserver", DC, str(DOID), str(PARENT), str(ZONE), str(NEW_ZONE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        deadline = time.time() + 30
        while time.time() < deadline and not any(l.startswith("DELETED") for l in lines):
            line = peer.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
        ready = [l for l in lines if l.startswith("READY")]
        assert ready, lines
        ai_channel = int(ready[0].split()[1])
        obj = [l for l in lines if l.startswith("OBJECT")]
        assert obj, lines
        # Read back: the new location, the required name and the broadcast ram position.
        assert obj[0].startswith("OBJECT %d %d %d DistributedObject " % (DOID, PARENT, NEW_ZONE)), obj[0]
        assert "('setName', ('alice',))" in obj[0], obj[0]
        assert "('setPos', ((1, -2, 3),))" in obj[0], obj[0]
        # What the zones saw: the entry, the update with the AI as sender, the move, the delete.
        enter = watcher.until(2042)
        assert enter[0] == (old_zone,) and struct.unpack_from("<III", enter[3]) == (DOID, PARENT, ZONE)
        update = watcher.until(2020)
        assert update[1] == ai_channel
        assert struct.unpack_from("<I", update[3])[0] == DOID
        assert update[3][6:] == struct.pack("<hhh", 1, -2, 3)
        moved = watcher.until(2041)
        assert struct.unpack_from("<5I", moved[3]) == (DOID, PARENT, NEW_ZONE, PARENT, ZONE)
        # It now keeps a ram field (setPos): the entry is the _OTHER form, carrying it.
        entered = watcher.until(2043)
        assert entered[0] == (new_zone,)
        assert struct.unpack_from("<III", entered[3]) == (DOID, PARENT, NEW_ZONE)
        assert entered[3].endswith(struct.pack("<H", 1) + entered[3][-8:-6] + struct.pack("<hhh", 1, -2, 3))
        deleted = watcher.until(2032)
        assert deleted[0] == (new_zone,) and deleted[1] == ai_channel
    finally:
        peer.kill()
        peer.wait()
