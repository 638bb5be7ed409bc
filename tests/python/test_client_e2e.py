"""End to end through otpd's ClientAgent: an unmodified Panda3D AI (panda3d-astron's
AstronInternalRepository) hosts an UberDOG and a few objects, unmodified Panda3D clients
(AstronClientRepository) log in through the UberDOG, see the objects, exchange updates, and
are ejected: by otpd for sending a field they may not, and by the AI."""
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
OTPD = os.environ.get("OTPD_BIN", os.path.join(HERE, "..", "..", "target", "release", "otpd"))
DC = os.path.join(HERE, "client.dc")
PEER = os.path.join(HERE, "client_peer.py")
VERSION = "e2e-test"  # client_peer.py's server-version
LOGIN_MANAGER = 4665
FORBIDDEN_FIELD = 118  # CLIENT_DISCONNECT_FORBIDDEN_FIELD
BALL_ZONE = 2
BALL_COLORS = [11, 22, 33]  # as client_peer.py creates them
TIMEOUT = 10


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(proc, port):
    deadline = time.time() + TIMEOUT
    while True:
        assert proc.poll() is None, "otpd exited with %s" % proc.returncode
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            assert time.time() < deadline, "otpd never listened on %d" % port
            time.sleep(0.02)


@pytest.fixture
def otpd():
    md, ca = free_port(), free_port()
    d = tempfile.mkdtemp()
    conf = os.path.join(d, "cluster.ron")
    with open(conf, "w") as f:
        f.write(
            """(cores: 2, pin_cores: false, dc_files: ["%s"],
 uberdogs: [(id: %d, class: "LoginManager", anonymous: true)],
 messagedirector: (bind: Some("127.0.0.1:%d")),
 roles: [
   StateServer(control: 100100),
   ClientAgent((bind: "127.0.0.1:%d", version: "%s", channels: (min: 1000000, max: 1009999),
                add_interest: "enabled", relocate: false, heartbeat_timeout_ms: 0)),
 ])"""
            % (DC, LOGIN_MANAGER, md, ca, VERSION)
        )
    proc = subprocess.Popen([OTPD, "--cluster", conf], stderr=subprocess.DEVNULL)
    try:
        wait_listening(proc, md)
        wait_listening(proc, ca)
        yield md, ca
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)


class Peer:
    """A client_peer.py process: its stdout lines are read by a thread into a queue (so every
    wait has a timeout), and every line is kept in `lines`."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [sys.executable, PEER] + [str(a) for a in args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines = []
        self.unread = []
        self.queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.queue.put(line.strip())
        self.queue.put(None)

    def expect(self, prefix, timeout=TIMEOUT):
        """The words after `prefix` of the first line starting with it not yet expected; other
        lines are left for later expects (and all are kept in `lines`)."""
        for i, words in enumerate(self.unread):
            if words[0] == prefix:
                del self.unread[i]
                return words[1:]
        deadline = time.time() + timeout
        while True:
            try:
                line = self.queue.get(timeout=max(0.0, deadline - time.time()))
            except queue.Empty:
                raise AssertionError("peer never printed %r; it printed %r" % (prefix, self.lines))
            if line is None:
                self.queue.put(None)
                raise AssertionError("peer exited before printing %r; it printed %r" % (prefix, self.lines))
            self.lines.append(line)
            words = line.split() or [""]
            if words[0] == prefix:
                return words[1:]
            self.unread.append(words)

    def command(self, *words):
        self.proc.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.proc.stdin.flush()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def peers():
    started = []

    def start(*args):
        p = Peer(*args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


def login(peers, ca, root, name, ai):
    """A client that says HELLO, logs in through the UberDOG, is set ESTABLISHED by the AI and
    opens interest in the balls' zone; returns it, its channel and the doids it saw."""
    client = peers("client", ca, DC, root, name)
    client.expect("HELLO")
    got_name, channel = ai.expect("LOGIN")
    assert got_name == name
    assert client.expect("LOGGED_IN") == ["1"]
    seen = [int(d) for d in client.expect("SEEN")]
    return client, int(channel), seen


def test_panda3d_client_and_ai_through_the_client_agent(otpd, peers):
    md, ca = otpd
    ai = peers("ai", md, DC)
    ai.expect("READY")
    root, *balls = (int(d) for d in ai.expect("CREATED"))
    assert len(balls) == len(BALL_COLORS)

    # HELLO, login through the anonymous UberDOG, ESTABLISHED by the AI, interest in zone 2.
    alice, alice_channel, seen = login(peers, ca, root, "alice", ai)
    assert 1000000 <= alice_channel <= 1009999
    assert seen == sorted(balls)
    generated = {}
    for _ in balls:
        doid, parent, zone, color = (int(w) for w in alice.expect("GENERATED"))
        generated[doid] = (parent, zone, color)
    assert generated == {b: (root, BALL_ZONE, c) for b, c in zip(balls, BALL_COLORS)}

    # A broadcast update from the AI reaches the client.
    ai.command("score", balls[0], -1234)
    assert alice.expect("SCORE") == [str(balls[0]), "-1234"]

    # A clsend airecv field from the client reaches the AI, which learns who sent it.
    alice.command("kick", balls[1], 7)
    assert ai.expect("KICK") == [str(balls[1]), "7", str(alice_channel)]

    # A field that is airecv but not clsend: otpd ejects the client with 118.
    alice.command("cheat", balls[1], 5)
    code, *reason = alice.expect("EJECT")
    assert int(code) == FORBIDDEN_FIELD, reason
    alice.expect("LOST")

    # A second client, ejected by the AI (CLIENTAGENT_EJECT) with its own code and reason.
    bob, bob_channel, seen = login(peers, ca, root, "bob", ai)
    assert bob_channel != alice_channel
    assert seen == sorted(balls)
    # Its kick takes the path alice's forbidden field would have taken to the AI (client
    # agent, then the ball on the StateServer): once it arrives, that field would have too.
    bob.command("kick", balls[1], 9)
    assert ai.expect("KICK") == [str(balls[1]), "9", str(bob_channel)]
    ai.command("eject", bob_channel, 999, "Kicked out by the AI")
    assert bob.expect("EJECT") == ["999", "Kicked", "out", "by", "the", "AI"]
    bob.expect("LOST")

    assert not [line for line in ai.lines if line.startswith("CHEAT")], ai.lines
