//! Logins and accounts of the 2003 dialect: LOGIN_2 with a play token, LOGIN with a name and
//! a password (hashed on a worker thread), the account record read, made and saved.

use super::*;
use crate::clientagent::login_limits::{Outcome, Throttled};
use crate::clientagent::LoginRefusal;

/// How a login names its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LoginMethod {
    /// CLIENT_LOGIN_2 with a play token.
    Token,
    /// CLIENT_LOGIN with a name and a password.
    Password,
}

impl LoginMethod {
    fn as_str(self) -> &'static str {
        match self {
            LoginMethod::Token => "token",
            LoginMethod::Password => "password",
        }
    }
}

/// A password while its account is read; never printed.
pub(super) struct Secret(pub(super) Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Refused password logins (bad password, bad name, unknown name, throttled) one connection
/// may make; the last one ends it (GO_GET_LOST 122). "Busy" answers do not count.
pub const MAX_BAD_LOGINS: u8 = 5;

/// The 2003 client shows its own "bad password, try again" dialog for code 12, whatever the
/// text; these texts are for logs, events and other clients.
/// A wrong password and an unknown account get the same code and text (no enumeration).
const BAD_CREDENTIALS_TEXT: &str = "The name or the password is not right.";
const BUSY_TEXT: &str = "The server is busy; please try again.";

fn throttled_text(t: Throttled) -> &'static str {
    match t {
        Throttled::Address => "Too many failed logins from this address; please wait.",
        Throttled::Account => "Too many failed logins of this account; please wait.",
    }
}

impl Ctx<'_> {
    pub(super) fn token_login(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let token = String::from_utf8_lossy(r.blob()?).into_owned();
        let version = r.blob()?.to_vec();
        let hash = r.u32()?;
        let token_type = r.i32()?;
        self.login_allowed(&version, hash)?;
        if token_type != 2 && token_type != 3 {
            return Err(refuse(
                LOST_BAD_TOKEN_TYPE,
                format!("Play token type {token_type} is not accepted."),
            ));
        }
        let unix = self.ca.clock.unix_at(now).as_secs();
        let name = match accounts::verify(&self.ca.toontown.tokens, &token, unix) {
            Ok(n) => n,
            Err(why) => {
                // The client quits on a nonzero answer; the GO_GET_LOST that follows carries
                // the reason for the log and the EventLogger.
                return Err(self.refuse_login_2(why, out));
            }
        };
        self.t.account = Some(name.clone());
        self.t.method = Some(LoginMethod::Token);
        let ctx = self.request(Pending::Account, now);
        let mut w = self.send_to(self.db(), DBSERVER_ACCOUNT_GET, out);
        w.u32(ctx).string(&name);
        let _ = w.finish();
        Ok(())
    }

    /// CLIENT_LOGIN: the name and password typed on the 2003 client's login screen
    /// (`account-old-auth #t`).
    /// What both logins check first: not logged in yet, the server's version and DC hash.
    pub(super) fn login_allowed(&self, version: &[u8], hash: u32) -> Result<(), Refusal> {
        if self.t.account.is_some() {
            return Err(refuse(LOST_GENERIC, "Logged in already."));
        }
        if version != self.ca.version.as_bytes() {
            return Err(refuse(
                LOST_BAD_VERSION,
                format!(
                    "Client version mismatch: client={}",
                    String::from_utf8_lossy(version)
                ),
            ));
        }
        if hash != self.ca.hash {
            return Err(refuse(
                LOST_BAD_DCHASH,
                format!("Client DC hash mismatch: client={hash}"),
            ));
        }
        Ok(())
    }

    pub(super) fn password_login(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let name = r.blob()?.to_vec();
        let _client_ip = r.u32()?;
        let _port = r.u16()?;
        let version = r.blob()?.to_vec();
        let hash = r.u32()?;
        let password = r.blob()?.to_vec();
        let create = r.u8()? != 0;
        self.login_allowed(&version, hash)?;
        // The client keeps its login screen up while it waits: so may the server.
        self.extend_hello(now);
        if self.ca.toontown.passwords == PasswordPolicy::Disabled {
            return self.login_refused(
                now,
                LOGIN_NO_SUCH_NAME,
                "Password logins are disabled on this server.",
                "",
                out,
            );
        }
        let name = match String::from_utf8(name) {
            Ok(n) if accounts::valid_name(&n) => n,
            _ => {
                return self.login_refused(
                    now,
                    LOGIN_BAD_NAME,
                    "That name cannot be an account name.",
                    "",
                    out,
                )
            }
        };
        if password.is_empty() || password.len() > accounts::MAX_PASSWORD {
            return self.login_refused(
                now,
                LOGIN_BAD_PASSWORD,
                "The password is empty or too long.",
                &name,
                out,
            );
        }
        // Throttled per address and per account (`toontown.password_limits`), before any hash.
        let verdict = self.ca.logins.lock().begin(self.remote().ip(), &name, now);
        if let Err(t) = verdict {
            return self.login_refused_as(
                now,
                LOGIN_BAD_PASSWORD,
                throttled_text(t),
                &name,
                LoginRefusal::Throttled,
                out,
            );
        }
        self.t.account = Some(name.clone());
        self.t.method = Some(LoginMethod::Password);
        let ctx = self.request(
            Pending::PasswordAccount {
                password: Secret(password),
                create,
            },
            now,
        );
        let mut w = self.send_to(self.db(), DBSERVER_ACCOUNT_GET, out);
        w.u32(ctx).string(&name);
        let _ = w.finish();
        Ok(())
    }

    /// A refused password login: LOGIN_RESP `code` (the client offers a retry), or, at the
    /// `MAX_BAD_LOGINS`th on this connection, GO_GET_LOST 122. The session stays logged out.
    pub(super) fn login_refused(
        &mut self,
        now: Instant,
        code: u8,
        why: &str,
        name: &str,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        self.login_refused_as(now, code, why, name, LoginRefusal::Credentials, out)
    }

    /// `login_refused` for a `cause`: a busy server is not the player's refusal (not counted
    /// against `MAX_BAD_LOGINS`), and each cause is named in the event.
    pub(super) fn login_refused_as(
        &mut self,
        now: Instant,
        code: u8,
        why: &str,
        name: &str,
        cause: LoginRefusal,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        self.ca.count_login_refusal(cause);
        let t = &mut *self.t;
        t.account = None;
        t.record = None;
        t.method = None;
        if cause != LoginRefusal::Busy {
            t.bad_logins = t.bad_logins.saturating_add(1);
        }
        let bad = t.bad_logins;
        log::info!(
            "{}: password login for {name:?} refused ({code}): {why}",
            self.label()
        );
        out.events.push(crate::roles::event::encode(
            "client-login-refused",
            &[
                ("role", crate::roles::event::Ev::Str("clientagent")),
                ("sender", crate::roles::event::Ev::Str(&self.sender_name())),
                ("account", crate::roles::event::Ev::Str(name)),
                ("code", crate::roles::event::Ev::U64(code as u64)),
                ("cause", crate::roles::event::Ev::Str(cause.label())),
                ("reason", crate::roles::event::Ev::Str(why)),
            ],
        ));
        if bad >= MAX_BAD_LOGINS {
            return Err(refuse(
                LOST_LOGIN_PROBLEM,
                format!("{bad} refused logins on one connection."),
            ));
        }
        let since = self.ca.clock.unix_at(now);
        let mut w = Writer::client(&mut out.to_client, CLIENT_LOGIN_RESP);
        w.u8(code)
            .u32(0)
            .string(why)
            .u32(since.as_secs() as u32)
            .u32(since.subsec_micros());
        let _ = w.finish();
        Ok(())
    }

    /// The account's name and its record as stored.
    fn account_record(&self) -> (String, Vec<u8>) {
        let t = &*self.t;
        let data = t.record.as_ref().map(Account::encode).unwrap_or_default();
        (t.account.clone().unwrap_or_default(), data)
    }

    /// Stores the new account record only if no account has the name yet (one step in the
    /// database): two logins racing to create one account cannot both win.
    pub(super) fn create_account(&mut self, now: Instant, password: bool, out: &mut SessionOut) {
        let (name, data) = self.account_record();
        let ctx = self.request(Pending::AccountCreated { password }, now);
        let mut w = self.send_to(self.db(), DBSERVER_ACCOUNT_CREATE, out);
        w.u32(ctx).string(&name).blob(&data);
        let _ = w.finish();
    }

    pub(super) fn save_account(&mut self, now: Instant, then: AfterSave, out: &mut SessionOut) {
        let (name, data) = self.account_record();
        let ctx = self.request(Pending::SaveThen(then), now);
        let mut w = self.send_to(self.db(), DBSERVER_ACCOUNT_SET, out);
        w.u32(ctx).string(&name).blob(&data);
        let _ = w.finish();
    }

    /// Ends a password attempt `password_login` let through the throttle.
    fn password_attempt_end(&self, outcome: Outcome, now: Instant) {
        if let Some(name) = &self.t.account {
            self.ca
                .logins
                .lock()
                .end(self.remote().ip(), name, outcome, now);
        }
    }

    /// A login whose account checked out: refused if the account is banned (see
    /// `banned_login`), else the session is the account's.
    pub(super) fn logged_in(&mut self, now: Instant, out: &mut SessionOut) {
        let unix = self.ca.clock.unix_at(now).as_secs();
        if let Some(rec) = self.t.record.as_ref().filter(|r| r.banned_at(unix)) {
            let (until, reason) = (rec.banned_until, rec.ban_reason.clone());
            self.banned_login(until, &reason, out);
            return;
        }
        self.logged_in_unbanned(now, out);
    }

    /// A banned account's login, token or password: no LOGIN_RESP (a nonzero one makes the
    /// client quit silently, LoginScreen.handleLoginResponseMsg(2) -> 'reject' -> sys.exit), but
    /// GO_GET_LOST 151 and the connection closed: the client records the code
    /// (ClientRepository.handleGoGetLost) and, when the connection drops, shows
    /// `TCRBootedReasons[151]` (ToontownClientRepository.enterNoConnection). Checked only after
    /// the password, so a guesser learns nothing of the ban. The live sessions of the account
    /// are not told (the account's channel is not written).
    fn banned_login(&mut self, until: u64, reason: &str, out: &mut SessionOut) {
        let name = self.t.account.clone().unwrap_or_default();
        self.ca.count_login_refusal(LoginRefusal::Banned);
        let code = LOST_ACCOUNT_BANNED;
        let until_text = if until == accounts::BAN_FOREVER {
            "for good".to_string()
        } else {
            format!("until {until}")
        };
        let why = format!("The account is banned {until_text}: {reason}");
        out.events.push(crate::roles::event::encode(
            "client-login-refused",
            &[
                ("role", crate::roles::event::Ev::Str("clientagent")),
                ("sender", crate::roles::event::Ev::Str(&self.sender_name())),
                ("account", crate::roles::event::Ev::Str(&name)),
                ("code", crate::roles::event::Ev::U64(code as u64)),
                (
                    "cause",
                    crate::roles::event::Ev::Str(LoginRefusal::Banned.label()),
                ),
                ("banned_until", crate::roles::event::Ev::U64(until)),
                ("reason", crate::roles::event::Ev::Str(&why)),
            ],
        ));
        let t = &mut *self.t;
        t.account = None;
        t.record = None;
        t.method = None;
        self.eject(refuse(code, why), false, out);
    }

    fn logged_in_unbanned(&mut self, now: Instant, out: &mut SessionOut) {
        let name = self.t.account.clone().unwrap_or_default();
        // One session per account: whoever holds it now is told to leave. The channel is a
        // hash of the name; the name itself travels along, and only its holder leaves.
        let channel = accounts::account_channel(&name);
        let mut w = self.send_to(channel, CLIENTAGENT_TOON_ACCOUNT_TAKEN, out);
        w.string(&name);
        let _ = w.finish();
        out.subscriptions.push(Subscription::Add(channel));
        self.set_state(STATE_ESTABLISHED);
        let since = self.ca.clock.unix_at(now);
        let method = self.t.method.unwrap_or(LoginMethod::Token);
        if method == LoginMethod::Password {
            // The client treats old-auth logins as paid (setIsPaid(1)) and ignores the code.
            let mut w = Writer::client(&mut out.to_client, CLIENT_LOGIN_RESP);
            w.u8(0)
                .u32(0)
                .string("")
                .u32(since.as_secs() as u32)
                .u32(since.subsec_micros());
            let _ = w.finish();
        } else {
            let mut w = Writer::client(&mut out.to_client, CLIENT_LOGIN_2_RESP);
            w.u8(0)
                .string("")
                .string(&name)
                .u8(self.ca.toontown.can_chat as u8)
                .u32(since.as_secs() as u32)
                .u32(since.subsec_micros())
                .u8(1)
                .i32(-1);
            let _ = w.finish();
        }
        let remote = self.remote().to_string();
        out.events.push(crate::roles::event::encode(
            "client-login",
            &[
                ("role", crate::roles::event::Ev::Str("clientagent")),
                ("sender", crate::roles::event::Ev::Str(&self.sender_name())),
                ("account", crate::roles::event::Ev::Str(&name)),
                ("method", crate::roles::event::Ev::Str(method.as_str())),
                ("remote_address", crate::roles::event::Ev::Str(&remote)),
            ],
        ));
        let _ = now;
    }

    /// The account of a password login, as the Database role read it (`status` 0 found, 1
    /// not found): check the password, or create the account, or refuse.
    pub(super) fn password_account(
        &mut self,
        now: Instant,
        status: u8,
        data: &[u8],
        password: &[u8],
        create: bool,
        out: &mut SessionOut,
    ) {
        let slots = self.ca.toontown.max_avatars;
        match status {
            0 => match Account::decode(data, slots) {
                Some(a) => match a.password.clone() {
                    Some(hash) => {
                        // Checked on a worker thread: see `on_job_done`.
                        let account = Box::new(a);
                        let id = self.request(Pending::PasswordCheck { account }, now);
                        out.jobs.push(SessionJob::CheckPassword {
                            id,
                            password: password.to_vec(),
                            hash,
                        });
                    }
                    // It logs in with a play token: answered as a wrong password.
                    None => self.dummy_check(now, password, out),
                },
                None => {
                    self.password_attempt_end(Outcome::Undecided, now);
                    self.eject(
                        refuse(LOST_LOGIN_PROBLEM, "The account record is unreadable."),
                        false,
                        out,
                    );
                }
            },
            1 if create && self.ca.toontown.passwords == PasswordPolicy::CreateOnLogin => {
                // Making an account is no failed guess.
                self.password_attempt_end(Outcome::Undecided, now);
                let created_unix = self.ca.clock.unix_at(now).as_secs();
                // Hashed on a worker thread: see `on_job_done`.
                let id = self.request(
                    Pending::PasswordHash {
                        slots,
                        created_unix,
                    },
                    now,
                );
                out.jobs.push(SessionJob::HashPassword {
                    id,
                    password: password.to_vec(),
                });
            }
            // No such account: answered as a wrong password, after as long a check.
            1 => self.dummy_check(now, password, out),
            _ => {
                self.password_attempt_end(Outcome::Undecided, now);
                self.eject(
                    refuse(LOST_LOGIN_PROBLEM, "The account database failed."),
                    false,
                    out,
                );
            }
        }
    }

    /// A login of an account that does not exist or has no password: checked against a dummy
    /// hash (never a match), so that its answer and its time are those of a wrong password.
    fn dummy_check(&mut self, now: Instant, password: &[u8], out: &mut SessionOut) {
        let account = Box::new(Account::new(0, 0));
        let id = self.request(Pending::PasswordCheck { account }, now);
        out.jobs.push(SessionJob::CheckDummy {
            id,
            password: password.to_vec(),
        });
    }

    /// A password checked or hashed off the event loop (`SessionJob`).
    pub(in crate::clientagent::dialect) fn on_job_done(
        &mut self,
        now: Instant,
        id: u32,
        result: JobResult,
        out: &mut SessionOut,
    ) {
        let Some((why, deadline)) = self.t.pending.remove(&id) else {
            return; // timed out meanwhile (the session was told then)
        };
        let refused = match (why, result) {
            (Pending::PasswordCheck { account }, JobResult::Checked(true)) => {
                self.password_attempt_end(Outcome::Success, now);
                self.t.record = Some(*account);
                self.logged_in(now, out);
                return;
            }
            (Pending::PasswordCheck { .. }, JobResult::Checked(false)) => {
                self.password_attempt_end(Outcome::Failure, now);
                (LOGIN_BAD_PASSWORD, BAD_CREDENTIALS_TEXT)
            }
            (
                Pending::PasswordHash {
                    slots,
                    created_unix,
                },
                JobResult::Hashed(Ok(hash)),
            ) => {
                let mut a = Account::new(slots, created_unix);
                a.password = Some(hash);
                self.t.record = Some(a);
                self.create_account(now, true, out);
                return;
            }
            (Pending::PasswordHash { .. }, JobResult::Hashed(Err(e))) => {
                log::error!("{}: {e}", self.label());
                self.eject(
                    refuse(LOST_LOGIN_PROBLEM, "The account could not be made."),
                    false,
                    out,
                );
                return;
            }
            (Pending::PasswordCheck { .. }, _) => {
                // The hashing queue was full: not the player's failure.
                self.password_attempt_end(Outcome::Undecided, now);
                let name = self.t.account.clone().unwrap_or_default();
                let busy = LoginRefusal::Busy;
                if let Err(e) =
                    self.login_refused_as(now, LOGIN_BAD_PASSWORD, BUSY_TEXT, &name, busy, out)
                {
                    self.eject(e, true, out);
                }
                return;
            }
            (Pending::PasswordHash { .. }, _) => {
                let name = self.t.account.clone().unwrap_or_default();
                let busy = LoginRefusal::Busy;
                if let Err(e) =
                    self.login_refused_as(now, LOGIN_BAD_PASSWORD, BUSY_TEXT, &name, busy, out)
                {
                    self.eject(e, true, out);
                }
                return;
            }
            (other, _) => {
                // Not a job's context: put it back as it was.
                self.t.pending.insert(id, (other, deadline));
                return;
            }
        };
        let name = self.t.account.clone().unwrap_or_default();
        if let Err(e) = self.login_refused(now, refused.0, refused.1, &name, out) {
            self.eject(e, true, out);
        }
    }

    /// Refuses a LOGIN_2: the nonzero answer the client quits on, and the refusal whose
    /// GO_GET_LOST carries the reason for the log and the EventLogger.
    pub(super) fn refuse_login_2(&self, why: &str, out: &mut SessionOut) -> Refusal {
        let mut w = Writer::client(&mut out.to_client, CLIENT_LOGIN_2_RESP);
        w.u8(1)
            .string(why)
            .string("")
            .u8(0)
            .u32(0)
            .u32(0)
            .u8(0)
            .i32(-1);
        let _ = w.finish();
        refuse(LOST_LOGIN_PROBLEM, format!("Login refused: {why}."))
    }

    /// The account of a token login, as the Database role read it (`status` 0 found, 1 not
    /// found): log in, or make the account.
    pub(super) fn token_account(
        &mut self,
        now: Instant,
        status: u8,
        data: &[u8],
        out: &mut SessionOut,
    ) {
        let slots = self.ca.toontown.max_avatars;
        let unix = self.ca.clock.unix_at(now).as_secs();
        match status {
            0 => match Account::decode(data, slots) {
                Some(a)
                    if a.password.is_some()
                        && self.ca.toontown.tokens == crate::config::TokenPolicy::Open =>
                {
                    // Anyone can name an account with an open token: one with a password
                    // opens only with its password (or a signed token).
                    let e = self.refuse_login_2("this account logs in with its password", out);
                    self.eject(e, false, out);
                }
                Some(a) => {
                    self.t.record = Some(a);
                    self.logged_in(now, out);
                }
                None => self.eject(
                    refuse(LOST_LOGIN_PROBLEM, "The account record is unreadable."),
                    false,
                    out,
                ),
            },
            1 => {
                self.t.record = Some(Account::new(slots, unix));
                self.create_account(now, false, out);
            }
            _ => self.eject(
                refuse(LOST_LOGIN_PROBLEM, "The account database failed."),
                false,
                out,
            ),
        }
    }

    /// A new account stored (`status` 0), or its name taken meanwhile (1), or a failure.
    pub(super) fn account_created(
        &mut self,
        now: Instant,
        status: u8,
        password: bool,
        out: &mut SessionOut,
    ) {
        match status {
            0 => self.logged_in(now, out),
            1 if password => {
                // Someone made it first, with a password this login never checked.
                self.t.record = None;
                let name = self.t.account.clone().unwrap_or_default();
                let why = "the account was just made by another login";
                self.login_refused(now, LOGIN_BAD_NAME, why, &name, out)
                    .unwrap_or_else(|e| self.eject(e, false, out));
            }
            1 => {
                // A token login raced another for a new account: log in to the one that
                // won, as if it had been there.
                let name = self.t.account.clone().unwrap_or_default();
                let ctx = self.request(Pending::Account, now);
                let mut w = self.send_to(self.db(), DBSERVER_ACCOUNT_GET, out);
                w.u32(ctx).string(&name);
                let _ = w.finish();
            }
            _ => self.eject(
                refuse(LOST_LOGIN_PROBLEM, "The account could not be made."),
                false,
                out,
            ),
        }
    }

    /// The account record saved (`status` 0): what waited for it answers the client.
    pub(super) fn account_saved(&mut self, status: u8, then: AfterSave, out: &mut SessionOut) {
        if status != 0 {
            self.eject(
                refuse(LOST_LOGIN_PROBLEM, "The account could not be saved."),
                false,
                out,
            );
            return;
        }
        match then {
            AfterSave::Pattern { doid } => {
                let mut w = Writer::client(&mut out.to_client, CLIENT_SET_NAME_PATTERN_ANSWER);
                w.u32(doid).u8(0);
                let _ = w.finish();
            }
            AfterSave::Wish {
                doid,
                pending,
                approved,
                rejected,
            } => {
                let mut w = Writer::client(&mut out.to_client, CLIENT_SET_WISHNAME_RESP);
                w.u32(doid)
                    .u16(0)
                    .string(&pending)
                    .string(&approved)
                    .string(&rejected);
                let _ = w.finish();
            }
            AfterSave::Nothing => {}
        }
    }
}
