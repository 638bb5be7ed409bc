"""The operator's web page (GET / on the admin listener) in a real browser: headless Chromium
(Debian's chromium and chromedriver) driven with selenium. A scripted 2003 client logs in and
types a wish name (names reviewed by hand); the operator signs in on the page with the token
(a wrong one shows the 401), sees the client and the pending name, approves the name (the
client's next avatar list shows it approved), sends the client's toon a system message with
the message form, and kicks the client with its Kick button (the client gets GO_GET_LOST 151,
then the connection closes), rejects another name and bans its
account with the ban form (its client is kicked, "Look up" shows the ban). A player-typed
account name made of markup is shown as text, and the Content-Security-Policy refuses inline
handlers even if markup got in. The page's screenshot is saved to $OTPD_PAGE_SCREENSHOT when set
(docs/img/admin-page.png is made that way)."""
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OTPD = os.environ.get("OTPD_BIN", os.path.join(HERE, "..", "..", "target", "release", "otpd"))
DC = os.path.abspath(os.path.join(HERE, "..", "dc", "toon.dc"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
VERSION = "sv1.0.6.9"
DC_HASH = 3005460305  # tests/moderation.rs HASH: the 2003 client's DC hash
TOKEN = "5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ff"
# An account name the CA accepts (printable ASCII, no space or colon) that is markup: shown
# with innerHTML it would run its onerror handler.
HOSTILE = "<img/src=x/onerror=alert(1)>"
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


def string(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<H", len(b)) + b


class Toon:
    """A scripted 2003 client: its messages as the decompiled 2003 client writes and reads
    them (docs/toontown-2003-protocol-notes.md; tests/moderation.rs `Toon` does the same in
    Rust). Frames are a uint16 length, then uint16 msgtype and the payload, little-endian."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""

    def send(self, msgtype, payload=b""):
        body = struct.pack("<H", msgtype) + payload
        self.sock.sendall(struct.pack("<H", len(body)) + body)

    def recv(self):
        """The next (msgtype, payload), or None when the server closed the connection."""
        while True:
            if len(self.buf) >= 2:
                n = struct.unpack_from("<H", self.buf)[0]
                if len(self.buf) >= 2 + n:
                    body, self.buf = self.buf[2:2 + n], self.buf[2 + n:]
                    return struct.unpack_from("<H", body)[0], body[2:]
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def expect(self, msgtype):
        while True:
            got = self.recv()
            assert got is not None, "closed while waiting for %d" % msgtype
            if got[0] == msgtype:
                return got[1]
            assert got[0] != 4, "GO_GET_LOST while waiting for %d: %r" % (msgtype, got[1])

    def login(self, token):
        # ToontownClientRepository.gotoFirstScreen -> startHeartbeat: HEARTBEAT (52) right
        # after connecting; LoginTTAccount.sendLoginMsg: LOGIN_2 (16) string playToken, string
        # serverVersion, uint32 hashVal, int32 tokenType (2, __addTokenType).
        self.send(52)
        self.send(16, string(token) + string(VERSION) + struct.pack("<Ii", DC_HASH, 2))
        # LoginScreen.handleLoginResponseMsg2: uint8 returnCode first, 0 = success.
        assert self.expect(17)[0] == 0

    def avatars(self):
        """GET_AVATARS (3, TCR.sendGetAvatarsMsg) -> GET_AVATARS_RESP (5) as
        ToontownClientRepository.handleGetAvatarsRespMsg reads it: uint8 returnCode, uint16
        count, then per avatar uint32 avNum, string name, wantName, approvedName,
        rejectedName, dna, uint8 position, uint8 allowedName."""
        self.send(52)
        self.send(3)
        p = self.expect(5)
        assert p[0] == 0, "returnCode"
        (n,) = struct.unpack_from("<H", p, 1)
        at, out = 3, []
        for _ in range(n):
            (av,) = struct.unpack_from("<I", p, at)
            at += 4
            fields = []
            for _ in range(5):
                (k,) = struct.unpack_from("<H", p, at)
                fields.append(p[at + 2:at + 2 + k])
                at += 2 + k
            name, want, approved, rejected, _dna = [f.decode(errors="replace") for f in fields[:4]] + [fields[4]]
            out.append({"id": av, "name": name, "want": want, "approved": approved,
                        "rejected": rejected, "position": p[at], "aname": p[at + 1]})
            at += 2
        assert at == len(p)
        return out

    def create(self, slot, color):
        """CREATE_AVATAR (6, NameShop.serverCreateAvatar): uint16 context (always 0), string
        dna (AvatarDNA.makeNetString), uint8 slot; CREATE_AVATAR_RESP (7,
        handleCreateAvatarResponseMsg): uint16 context, uint8 returnCode, uint32 avId."""
        c = bytes([color])
        dna = b"t\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00" + c + b"\x00" + c + c
        self.send(6, struct.pack("<H", 0) + string(dna) + bytes([slot]))
        p = self.expect(7)
        assert p[:3] == b"\x00\x00\x00", "CREATE_AVATAR_RESP ok: %r" % p
        return struct.unpack_from("<I", p, 3)[0]

    def wish_name(self, av, name):
        """SET_WISHNAME (70, NameShop.checkNameTyped): uint32 avId, string name;
        SET_WISHNAME_RESP (71, NameShop handleSetNameTypedAnswerMsg): uint32 avId, uint16
        returnCode, then string pending, string approved, string rejected."""
        self.send(70, struct.pack("<I", av) + string(name))
        p = self.expect(71)
        assert struct.unpack_from("<IH", p) == (av, 0)
        (k,) = struct.unpack_from("<H", p, 6)
        return p[8:8 + k].decode()

    def play(self, av):
        """As ToontownClientRepository.__handleCongrats after an approved name:
        SET_WISHNAME_CLEAR (72) uint32 avId, uint8 1; then SET_AVATAR (32,
        TCR.sendSetAvatarIdMsg) uint32 avId, answered by GET_AVATAR_DETAILS_RESP (15,
        waitForSetAvatarResponse): uint32 avId, uint8 returnCode, the toon's fields."""
        self.send(72, struct.pack("<IB", av, 1))
        self.send(32, struct.pack("<I", av))
        p = self.expect(15)
        assert struct.unpack_from("<IB", p) == (av, 0), p[:5]

    def system_message(self):
        """The next OBJECT_UPDATE_FIELD (24: uint32 doId, uint16 fieldNumber, args; read in
        the client's playGame state), here setSystemMessage(uint32 aboutId, string) on its own
        toon (DistributedAvatar.setSystemMessage -> displayWhisper as WTSystem): (doId, text)."""
        p = self.expect(24)
        (doid, _field, _about, k) = struct.unpack_from("<IHIH", p)
        assert len(p) == 12 + k, p
        return doid, p[12:].decode(errors="replace")

    def ejected(self):
        """The GO_GET_LOST (4) that ends the session: (code, text), the connection closed
        after it (ClientRepository.handleGoGetLost keeps the code; the drop that follows
        shows Localizer.TCRBootedReasons[code] in ToontownClientRepository.enterNoConnection)."""
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            got = self.recv()
            assert got is not None, "closed without GO_GET_LOST"
            if got[0] == 4:
                p = got[1]
                (code, k) = struct.unpack_from("<HH", p)
                text = p[4:4 + k].decode(errors="replace")
                assert self.recv() is None, "the connection closes after GO_GET_LOST"
                return code, text
        raise AssertionError("no GO_GET_LOST")


@pytest.fixture
def cluster():
    md, ca, admin = free_port(), free_port(), free_port()
    d = tempfile.mkdtemp()
    token_file = os.path.join(d, "admin.token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    # tests/dc/toon.dc with the field the 2003 client shows system messages through
    # (DistributedAvatar's setSystemMessage in Toontown's DC file), last in DistributedToon.
    dc = os.path.join(d, "toon.dc")
    with open(DC) as f:
        text = f.read()
    anchor = "  setWhisperFrom(uint32 fromId, string(0-100) chat) p2p clsend;\n"
    assert anchor in text
    with open(dc, "w") as f:
        f.write(text.replace(anchor, anchor + "  setSystemMessage(uint32 aboutId, string) p2p;\n"))
    conf = os.path.join(d, "cluster.ron")
    # As tests/moderation.rs `start`: StateServer, DBSS, Database on SQLite, one 2003
    # listener (open tokens, passwords made at login, names reviewed by hand), plus the admin
    # listener.
    with open(conf, "w") as f:
        f.write(
            """(cores: 2, pin_cores: false, dc_files: ["%(dc)s"],
 messagedirector: (bind: Some("127.0.0.1:%(md)d")),
 admin: Some((bind: "127.0.0.1:%(admin)d", token_file: "%(token)s")),
 roles: [
   StateServer(control: 100100),
   Dbss(database: 4003, ranges: [(min: 100000000, max: 399999999)]),
   Database(control: 4003, generate: (min: 100000000, max: 399999999),
            backend: Sqlite(directory: "%(dir)s")),
   ClientAgent((bind: "127.0.0.1:%(ca)d", version: "%(version)s", manual_dc_hash: Some(%(hash)d),
                channels: (min: 1000000, max: 1009999), dialect: Toontown2003,
                toontown: (tokens: Open, passwords: CreateOnLogin, auto_approve_names: false))),
 ])"""
            % {"dc": dc, "md": md, "admin": admin, "token": token_file, "dir": d, "ca": ca,
               "version": VERSION, "hash": DC_HASH}
        )
    log = open(os.path.join(d, "otpd.log"), "w")
    proc = subprocess.Popen([OTPD, "--cluster", conf], stdout=log, stderr=subprocess.STDOUT)
    try:
        for port in (md, ca, admin):
            wait_listening(proc, port)
        yield ca, admin
    finally:
        proc.kill()
        proc.wait()
        log.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium and chromedriver are not installed (scripts/test installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, what, message):
    return WebDriverWait(driver, TIMEOUT, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: what(d), message)


def rows(driver, table):
    """The rows of a table body, as lists of cell texts."""
    return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in driver.find_elements(By.CSS_SELECTOR, "#%s tr" % table)]


def button_in_row(driver, table, first_cell, label):
    for tr in driver.find_elements(By.CSS_SELECTOR, "#%s tr" % table):
        tds = tr.find_elements(By.TAG_NAME, "td")
        if tds and tds[0].text == first_cell:
            for b in tr.find_elements(By.TAG_NAME, "button"):
                if b.text == label:
                    return b
    return None


def sign_in(driver, token):
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "signin").click()


def test_the_page_approves_a_typed_name_and_kicks_its_client(cluster, browser):
    ca, admin = cluster
    driver = browser
    # A player typed a name: it waits for review.
    pinky = Toon(ca)
    pinky.login("pinky")
    av = pinky.create(0, 2)
    assert pinky.wish_name(av, "Captain Pinky") == "Captain Pinky", "pending"
    # Another player's account name is markup.
    hostile = Toon(ca)
    hostile.login(HOSTILE)
    other = hostile.create(0, 5)
    assert hostile.wish_name(other, "Sunny Day") == "Sunny Day", "pending"

    driver.get("http://127.0.0.1:%d/" % admin)
    assert driver.title == "otpd operator console"
    # A wrong token: the API's 401, shown plainly, and nothing listed.
    sign_in(driver, "not-the-token")
    error = driver.find_element(By.ID, "error")
    wait(driver, lambda d: "401" in error.text, "the 401 is shown")
    assert "Bearer" in error.text, error.text
    assert "not signed in" in driver.find_element(By.ID, "who").text
    assert rows(driver, "clients") == []

    # The right token: the clients (live) and the name queue.
    sign_in(driver, TOKEN)
    wait(driver, lambda d: not error.is_displayed(), "the error goes once signed in")
    wait(driver, lambda d: {r[0] for r in rows(d, "clients")} >= {"pinky", HOSTILE},
         "both clients listed")
    wait(driver, lambda d: sorted(r[:3] for r in rows(d, "names"))
         == [["Captain Pinky", str(av), "pinky"], ["Sunny Day", str(other), HOSTILE]],
         "the typed names are in the queue")
    # The markup is text: no element was made of it, no script ran (an alert would be open).
    assert driver.execute_script("return document.querySelectorAll('main img').length") == 0
    assert driver.execute_script("return document.title") == "otpd operator console"
    assert "signed in to" in driver.find_element(By.ID, "who").text
    pinky_row = next(r for r in rows(driver, "clients") if r[0] == "pinky")
    assert pinky_row[4:6] == ["established", "toontown2003"], pinky_row
    shot = os.environ.get("OTPD_PAGE_SCREENSHOT")
    if shot:
        assert driver.save_screenshot(shot), shot

    # Approve: the queue empties, the client's next avatar list shows the name approved.
    button_in_row(driver, "names", "Captain Pinky", "Approve").click()
    notice = driver.find_element(By.ID, "notice")
    wait(driver, lambda d: "Approved the name Captain Pinky" in notice.text, "approval confirmed")
    wait(driver, lambda d: [r[0] for r in rows(d, "names")] == ["Sunny Day"], "approved: out of the queue")
    listed = next(a for a in pinky.avatars() if a["id"] == av)
    assert (listed["want"], listed["approved"], listed["rejected"]) == ("", "Captain Pinky", "")
    # Reject: AvatarChoice shows "name rejected" for a rejectedName (tests/moderation.rs
    # follows the rest of it).
    button_in_row(driver, "names", "Sunny Day", "Reject").click()
    wait(driver, lambda d: "Rejected the name Sunny Day" in notice.text, "rejection confirmed")
    listed = next(a for a in hostile.avatars() if a["id"] == other)
    assert (listed["want"], listed["approved"], listed["rejected"]) == ("", "", "Sunny Day")
    wait(driver, lambda d: rows(d, "names") == [["no names waiting"]], "the queue is empty")

    # The toon is played; the message form reaches it (a system message on its own toon).
    pinky.play(av)
    wait(driver, lambda d: str(av) in next(r for r in rows(d, "clients") if r[0] == "pinky")[1],
         "the client's avatar is listed")
    Select(driver.find_element(By.ID, "message-scope")).select_by_value("account")
    driver.find_element(By.ID, "message-whom").send_keys("pinky")
    driver.find_element(By.ID, "message-text").send_keys("Restart at noon.")
    driver.find_element(By.ID, "message-send").click()
    wait(driver, lambda d: "Message sent to account pinky." in notice.text, "message sent")
    assert pinky.system_message() == (av, "Restart at noon.")

    # Kick from the page: GO_GET_LOST 151 ("logged out by an administrator"), then closed;
    # the other client stays, and the list drops the kicked one.
    reason = driver.find_element(By.ID, "kick-reason")
    reason.send_keys("Page test.")
    button_in_row(driver, "clients", "pinky", "Kick").click()
    code, text = pinky.ejected()
    assert code == 151 and "Page test." in text, (code, text)
    wait(driver, lambda d: [r[0] for r in rows(d, "clients")] == [HOSTILE], "the list drops pinky")

    # The ban form: the account's client is kicked now (GO_GET_LOST 151 with the reason) and
    # "Look up" tells the ban.
    driver.find_element(By.ID, "ban-account").send_keys(HOSTILE)
    hours = driver.find_element(By.ID, "ban-hours")
    hours.clear()
    hours.send_keys("2")
    driver.find_element(By.ID, "ban-reason").send_keys("Markup in names.")
    driver.find_element(By.ID, "ban").click()
    wait(driver, lambda d: "Banned " + HOSTILE + " for 2 hours." in notice.text, "ban confirmed")
    code, text = hostile.ejected()
    assert code == 151 and "Markup in names." in text, (code, text)
    driver.find_element(By.ID, "ban-check").click()
    wait(driver, lambda d: HOSTILE + " is banned until" in notice.text, "the ban is looked up")
    assert notice.text.endswith(": Markup in names."), notice.text
    wait(driver, lambda d: rows(d, "clients") == [["no clients"]], "nobody left")

    # The page's own code ran within its Content-Security-Policy (nothing refused).
    csp = "Content Security Policy"
    refused = [e["message"] for e in driver.get_log("browser") if csp in e["message"]]
    assert refused == [], refused
    # And markup put in the page as markup (what textContent prevents) would still run nothing:
    # the policy admits no inline handler.
    driver.execute_script(
        "document.getElementById('clients').innerHTML ="
        " '<tr><td><img src=x onerror=\"document.title=1\"></td></tr>'")
    time.sleep(0.5)
    assert driver.title == "otpd operator console"
    assert any(csp in e["message"] for e in driver.get_log("browser")), "the handler was refused"
