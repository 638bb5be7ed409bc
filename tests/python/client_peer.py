"""The headless Panda3D peers of test_client_e2e.py, with panda3d-astron unmodified:

    client_peer.py ai PORT DC                    an AI (AstronInternalRepository) on the MD
    client_peer.py client PORT DC ROOT NAME      a client (AstronClientRepository) on the CA

Each prints one line per event on stdout (the test reads them) and takes one command per line
on stdin (the test writes them); it exits when stdin closes. client.dc imports the classes of
both sides from this script (__main__).

AI events:     READY CHANNEL | CREATED ROOT BALL... | LOGIN NAME SENDER | KICK DOID N SENDER
               | CHEAT DOID N SENDER
AI commands:   score DOID N (a broadcast setScore) | eject CHANNEL CODE REASON...
Client events: HELLO | LOGGED_IN OK | GENERATED DOID PARENT ZONE COLOR | SEEN DOID...
               | SCORE DOID N | EJECT CODE REASON | LOST
Client commands: kick DOID N (clsend) | cheat DOID N (not clsend)
"""
import os
import select
import sys

from panda3d.core import loadPrcFileData

loadPrcFileData(
    "",
    "window-type none\naudio-library-name null\nserver-version e2e-test\nclient-sleep 0.001\n"
    "notify-level-AstronInternalRepository warning\nnotify-level-ClientRepositoryBase warning\n"
    "notify-level-ConnectionRepository warning\n",
)

from direct.showbase.ShowBase import ShowBase  # noqa: E402
from direct.distributed.DistributedObject import DistributedObject  # noqa: E402
from direct.distributed.DistributedObjectAI import DistributedObjectAI  # noqa: E402
from direct.distributed.DistributedObjectGlobal import DistributedObjectGlobal  # noqa: E402
from direct.distributed.DistributedObjectGlobalAI import DistributedObjectGlobalAI  # noqa: E402
from panda3d.core import ConfigVariableString, URLSpec  # noqa: E402
from panda3d_astron.repository import AstronClientRepository, AstronInternalRepository  # noqa: E402

LOGIN_MANAGER = 4665
STATESERVER = 100100
ESTABLISHED = 2
BALL_ZONE = 2
BALL_COLORS = [11, 22, 33]


def say(*words):
    print(" ".join(str(w) for w in words), flush=True)


# ---- The AI's classes -------------------------------------------------------------------------


class DistributedDistrictAI(DistributedObjectAI):
    def __init__(self, air):
        DistributedObjectAI.__init__(self, air)
        self.name = ""

    def setName(self, name):
        self.name = name

    def getName(self):
        return self.name


class DistributedBallAI(DistributedObjectAI):
    def __init__(self, air):
        DistributedObjectAI.__init__(self, air)
        self.color = 0
        self.score = 0

    def setColor(self, color):
        self.color = color

    def getColor(self):
        return self.color

    def setScore(self, score):
        self.score = score

    def getScore(self):
        return self.score

    def kick(self, strength):
        say("KICK", self.doId, strength, self.air.getMsgSender())

    def cheat(self, amount):
        say("CHEAT", self.doId, amount, self.air.getMsgSender())


class LoginManagerAI(DistributedObjectGlobalAI):
    def login(self, name):
        sender = self.air.getMsgSender()
        say("LOGIN", name, sender)
        self.air.setClientState(sender, ESTABLISHED)
        self.sendUpdateToChannel(sender, "loginResponse", [1])


class AI(AstronInternalRepository):
    GameGlobalsId = 0  # panda3d-astron 1.1.0 expects the subclass to set it

    def __init__(self, dc):
        AstronInternalRepository.__init__(self, 400000000, serverId=STATESERVER, dcFileNames=[dc], dcSuffix="AI")

    def handleConnected(self):
        say("READY", self.ourChannel)
        self.loginManager = self.generateGlobalObject(LOGIN_MANAGER, "LoginManager")
        # The root object and its balls, with doids from this AI's own channel range; the AI
        # takes them over so that their airecv fields come to it.
        self.district = DistributedDistrictAI(self)
        self.district.setName("e2e district")
        self.district.generateWithRequiredAndId(self.allocateChannel(), 0, 0)
        self.district.setAI(self.ourChannel)
        self.balls = []
        for color in BALL_COLORS:
            ball = DistributedBallAI(self)
            ball.setColor(color)
            ball.generateWithRequiredAndId(self.allocateChannel(), self.district.doId, BALL_ZONE)
            ball.setAI(self.ourChannel)
            self.balls.append(ball)
        # Tell the test once the StateServer answers for every object.
        waiting = {do.doId for do in [self.district] + self.balls}

        def located(doId, parentId, zoneId):
            waiting.discard(doId)
            if not waiting:
                say("CREATED", self.district.doId, *[b.doId for b in self.balls])

        for doId in list(waiting):
            self.getLocation(doId, located)

    def command(self, words):
        if words[0] == "score":
            self.doId2do[int(words[1])].sendUpdate("setScore", [int(words[2])])
        elif words[0] == "eject":
            self.eject(int(words[1]), int(words[2]), " ".join(words[3:]))

    def lostConnection(self):
        say("LOST")
        sys.exit(0)


# ---- The client's classes ---------------------------------------------------------------------


class DistributedDistrict(DistributedObject):
    def setName(self, name):
        pass


class DistributedBall(DistributedObject):
    def __init__(self, cr):
        DistributedObject.__init__(self, cr)
        self.color = None

    def setColor(self, color):
        self.color = color

    def announceGenerate(self):
        DistributedObject.announceGenerate(self)
        say("GENERATED", self.doId, self.parentId, self.zoneId, self.color)

    def setScore(self, score):
        say("SCORE", self.doId, score)


class LoginManager(DistributedObjectGlobal):
    def loginResponse(self, ok):
        say("LOGGED_IN", ok)
        self.cr.openInterest()


class Client(AstronClientRepository):
    def __init__(self, dc, root, name):
        # Interest may be opened under the game's root object only (DoInterestManager's rule).
        self.GameGlobalsId = root
        AstronClientRepository.__init__(self, dcFileNames=[dc])
        self.root = root
        self.name = name
        self.accept("CLIENT_HELLO_RESP", self.helloAccepted)
        self.accept("CLIENT_EJECT", self.ejected)
        self.accept("LOST_CONNECTION", self.lost)
        self.accept("ballsVisible", self.ballsVisible)

    def start(self, port):
        self.connect([URLSpec("http://127.0.0.1:%d" % port)], successCallback=self.connected,
                     failureCallback=self.failed)

    def connected(self):
        # panda3d-astron 1.1.0's sendHello() without an argument passes the ConfigVariableString
        # itself to add_string (a TypeError): hand it the server-version value.
        self.sendHello(ConfigVariableString("server-version", "").getValue())

    def failed(self, code, explanation):
        say("CONNECT_FAILED", code, explanation)
        sys.exit(1)

    def helloAccepted(self):
        say("HELLO")
        self.loginManager = self.generateGlobalObject(LOGIN_MANAGER, "LoginManager")
        self.loginManager.sendUpdate("login", [self.name])

    def openInterest(self):
        self.addInterest(self.root, BALL_ZONE, "balls", event="ballsVisible")

    def ballsVisible(self):
        balls = sorted(doId for doId, do in self.doId2do.items() if isinstance(do, DistributedBall))
        say("SEEN", *balls)

    def ejected(self, code, reason):
        say("EJECT", code, reason)

    def lost(self):
        say("LOST")
        sys.exit(0)

    def command(self, words):
        ball = self.doId2do[int(words[1])]
        if words[0] == "kick":
            ball.sendUpdate("kick", [int(words[2])])
        elif words[0] == "cheat":
            ball.sendUpdate("cheat", [int(words[2])])


# ---- Main -------------------------------------------------------------------------------------


def poll_stdin(repo):
    pending = [b""]

    def task(t):
        while select.select([sys.stdin], [], [], 0)[0]:
            data = os.read(sys.stdin.fileno(), 4096)
            if not data:
                sys.exit(0)  # the test is gone
            pending[0] += data
            *lines, pending[0] = pending[0].split(b"\n")
            for line in lines:
                if line.strip():
                    repo.command(line.decode().split())
        return t.cont

    base.taskMgr.add(task, "stdin-commands")


if __name__ == "__main__":
    mode, port, dc = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    base = ShowBase()
    if mode == "ai":
        repo = AI(dc)
        repo.connect("127.0.0.1", port)
    else:
        repo = Client(dc, int(sys.argv[4]), sys.argv[5])
        repo.start(port)
    poll_stdin(repo)
    base.run()
