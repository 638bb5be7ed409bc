"""Unmodified Panda3D AIs (panda3d-astron) against otpd's MessageDirector."""
import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
OTPD = os.environ.get("OTPD_BIN", os.path.join(HERE, "..", "..", "target", "release", "otpd"))
DC = os.path.join(HERE, "ai.dc")


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
        f.write('(cores: 2, pin_cores: false, messagedirector: (bind: Some("127.0.0.1:%d")))' % port)
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


class Peer:
    def __init__(self, port, mode, *args):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "ai_peer.py"), str(port), mode, DC] + [str(a) for a in args],
            stdout=subprocess.PIPE,
            text=True,
        )

    def expect(self, prefix, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError("peer never printed %r" % prefix)

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def test_two_ais_exchange_datagrams_through_otpd(otpd):
    channel = 77001
    listener = Peer(otpd, "listen", channel)
    listener.expect("READY")
    time.sleep(0.3)
    sender = Peer(otpd, "send", channel, "hello", "world")
    sender.expect("SENT")
    assert listener.expect("GOT") == "GOT hello"
    assert listener.expect("GOT") == "GOT world"
    sender.kill()
    listener.kill()


def test_an_ai_post_remove_fires_when_its_process_is_killed(otpd):
    channel = 77002
    listener = Peer(otpd, "listen", channel)
    listener.expect("READY")
    time.sleep(0.3)
    doomed = Peer(otpd, "postremove", channel)
    ready = doomed.expect("READY")
    doomed.expect("REGISTERED")
    time.sleep(0.3)
    doomed.kill()
    got = listener.expect("GOT")
    assert got == "GOT post-remove of %s" % ready.split()[1]
    listener.kill()
