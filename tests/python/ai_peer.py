"""A headless Panda3D AI (panda3d-astron's AstronInternalRepository, unmodified) driven by
the otpd tests. Usage: ai_peer.py PORT MODE [ARGS...]; prints READY once connected, then one
line per event; the test reads stdout."""
import sys

from panda3d.core import loadPrcFileData

loadPrcFileData("", "window-type none\naudio-library-name null\nnotify-level-AstronInternalRepository warning\n")

from direct.showbase.ShowBase import ShowBase  # noqa: E402
from direct.distributed.PyDatagram import PyDatagram  # noqa: E402
from direct.distributed import DistributedObjectAI as _doai  # noqa: E402
from panda3d_astron.repository import AstronInternalRepository  # noqa: E402

PORT = int(sys.argv[1])
MODE = sys.argv[2]
DC = sys.argv[3]
TEST_MSGTYPE = 4242


class DistributedObjectAI(_doai.DistributedObjectAI):
    """The AI view of ai.dc's DistributedObject (the class name must be the dclass's + AI)."""

    def __init__(self, air):
        _doai.DistributedObjectAI.__init__(self, air)
        self.name = ""
        self.pos = [0, 0, 0]

    def setName(self, name):
        self.name = name

    def getName(self):
        return self.name

    def setPos(self, pos):
        self.pos = pos

    def getPos(self):
        return self.pos


class AI(AstronInternalRepository):
    GameGlobalsId = 0  # panda3d-astron 1.1.0 expects the subclass to set it

    def __init__(self, base_channel, server_id=None):
        AstronInternalRepository.__init__(self, base_channel, serverId=server_id, dcFileNames=[DC], dcSuffix="AI")

    def handleConnected(self):
        print("READY %d" % self.ourChannel, flush=True)
        if MODE == "listen":
            self.registerForChannel(int(sys.argv[4]))
            # Confirm the subscription through the MD before telling the test.
            dg = PyDatagram()
            dg.addServerHeader(int(sys.argv[4]), self.ourChannel, TEST_MSGTYPE)
            dg.addString("self-check")
        elif MODE == "send":
            target = int(sys.argv[4])
            for text in sys.argv[5:]:
                dg = PyDatagram()
                dg.addServerHeader(target, self.ourChannel, TEST_MSGTYPE)
                dg.addString(text)
                self.send(dg)
            print("SENT", flush=True)
        elif MODE == "stateserver":
            # ARGS: DOID PARENT ZONE NEW_ZONE. Generate, update, move, read back, delete.
            doid, parent, zone, new_zone = (int(a) for a in sys.argv[4:8])
            do = DistributedObjectAI(self)
            do.setName("alice")
            do.generateWithRequiredAndId(doid, parent, zone)
            do.sendUpdate("setPos", [[1, -2, 3]])
            do.b_setLocation(parent, new_zone)
            self.do = do

            def got(doId, parentId, zoneId, dclass, fields):
                print("OBJECT %d %d %d %s %r" % (doId, parentId, zoneId, dclass.getName(), sorted(fields.items())), flush=True)
                do.requestDelete()
                print("DELETED", flush=True)

            self.getObject(doid, got)
        elif MODE == "postremove":
            target = int(sys.argv[4])
            dg = PyDatagram()
            dg.addServerHeader(target, self.ourChannel, TEST_MSGTYPE)
            dg.addString("post-remove of %d" % self.ourChannel)
            self.addPostRemove(dg)
            print("REGISTERED", flush=True)

    def handleDatagram(self, di):
        msgtype = self.getMsgType()
        if msgtype == TEST_MSGTYPE:
            print("GOT %s" % di.getString(), flush=True)
        else:
            AstronInternalRepository.handleDatagram(self, di)

    def lostConnection(self):
        print("LOST", flush=True)
        sys.exit(0)


base = ShowBase()
air = AI(400000000 + (hash(MODE) & 0xFFFF) * 1000, 100100 if MODE == "stateserver" else None)
air.connect("127.0.0.1", PORT)
base.run()
