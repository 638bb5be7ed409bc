//! The Toontown 2003 dialect of a client session: Disney's original client messages, and the
//! work the server itself does for that client (accounts and login, the avatar list, creating
//! and naming toons, the district list, activating the chosen toon, SET_ZONE). The object
//! side (interests, visibility, field checks) is the Astron session's, with the 2003 message
//! forms; see docs/toontown-2003.md for the sequence and the choices made.

use super::accounts::{self, Account};
use super::session::{
    refuse, JobResult, Refusal, Session, SessionJob, SessionOut, STATE_ESTABLISHED,
};
use crate::config::PasswordPolicy;
use crate::roles::Subscription;
use otp_wire::msgtypes::*;
use otp_wire::{Reader, WireError, Writer};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use otp_wire::toontown2003::*;

/// Refused password logins (bad password, bad name, unknown name) one connection may make;
/// the last one ends it (GO_GET_LOST 122).
pub const MAX_BAD_LOGINS: u8 = 5;

/// The interest a SET_ZONE opens.
const ZONE_INTEREST: u16 = 1;
/// A database or StateServer answer not back in this long ends the session (122).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Another toon's details not given in this long: "no information" (it is not in play).
const DETAILS_TIMEOUT: Duration = Duration::from_secs(2);
/// Client datagrams held while a SET_ZONE is answered.
const MAX_HELD: usize = 256;

/// The districts announced to this process (CLIENTAGENT_SHARD_UP / _DOWN): id → (name,
/// population), shared by every Toontown listener.
pub type Shards =
    std::sync::Arc<parking_lot::Mutex<std::collections::BTreeMap<u32, (String, u32)>>>;

/// The DC field holding a toon's friends: uint32uint8array of (friend doid, flags).
pub const FRIENDS_FIELD: &str = "setFriendsList";

/// At most this many friends are looked up for GET_FRIEND_LIST, and told of coming online
/// or going offline (the 2003 game allows 50; a longer list is served up to this many).
pub const MAX_FRIENDS: usize = 200;

/// The channel the player of `avatar` listens on.
pub fn puppet_channel(avatar: u32) -> u64 {
    PUPPET_CHANNEL_BASE + avatar as u64
}

/// How a login names its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoginMethod {
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
struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a database or StateServer request was sent.
#[derive(Debug)]
enum Pending {
    /// A play token's account (CLIENT_LOGIN_2).
    Account,
    /// A password login's account (CLIENT_LOGIN); `create`: the client's createFlag.
    PasswordAccount {
        password: Secret,
        create: bool,
    },
    SaveThen(AfterSave),
    ListFields {
        job: u32,
        slot: usize,
        doid: u32,
    },
    Created {
        slot: usize,
    },
    OwnDetails,
    OtherDetails {
        doid: u32,
    },
    /// A friend's name and DNA, for GET_FRIEND_LIST job `job`, entry `index`.
    FriendFields {
        job: u32,
        index: usize,
    },
    /// The former friend's list, to take `me` out of it (REMOVE_FRIEND).
    Unfriend {
        other: u32,
        me: u32,
    },
    /// A password being checked off the event loop, against this account.
    PasswordCheck {
        account: Box<Account>,
    },
    /// A new account's password being hashed off the event loop.
    PasswordHash {
        slots: u8,
        created_unix: u64,
    },
}

/// A toon's name and DNA, as stored (each with its length tag).
type NameDna = (Vec<u8>, Vec<u8>);

/// One GET_FRIEND_LIST being answered: the friends' names and DNA from the database.
#[derive(Debug)]
struct FriendJob {
    /// Requests answered by this job (they came while it ran).
    answers: usize,
    waiting: usize,
    /// Per friend: doid, and (name, dna) once read.
    found: Vec<(u32, Option<NameDna>)>,
}

#[derive(Debug)]
enum AfterSave {
    Login,
    Created {
        doid: u32,
    },
    Pattern {
        doid: u32,
    },
    Wish {
        doid: u32,
        pending: String,
        approved: String,
        rejected: String,
    },
    Deleted,
    Nothing,
}

/// One avatar list being gathered from the database.
#[derive(Debug)]
struct ListJob {
    msgtype: u16,
    waiting: usize,
    /// Per slot: (name, dna) once read.
    found: Vec<Option<(Vec<u8>, Vec<u8>)>>,
}

/// What a Toontown 2003 session knows beyond the Astron session.
#[derive(Debug, Default)]
pub struct Toon {
    account: Option<String>,
    record: Option<Account>,
    /// How the login under way (or done) names its account.
    method: Option<LoginMethod>,
    /// Password logins refused on this connection.
    bad_logins: u8,
    next_ctx: u32,
    pending: FxHashMap<u32, (Pending, Instant)>,
    jobs: FxHashMap<u32, ListJob>,
    avatar: u32,
    shard: u32,
    zone_pending: Option<u32>,
    held: VecDeque<Vec<u8>>,
    /// Client datagrams may be replayed (a SET_ZONE was answered).
    replay: bool,
    /// The avatar in play's friends list (doid, flags), once its details came.
    friends: Option<Vec<(u32, u8)>>,
    /// GET_FRIEND_LIST requests waiting for the friends list.
    friends_wanted: usize,
    /// The GET_FRIEND_LIST being answered.
    friend_job: Option<u32>,
    friend_jobs: FxHashMap<u32, FriendJob>,
}

/// A uint32uint8array value (with its length tag) as (doid, flags) pairs.
fn decode_friends(v: &[u8]) -> Option<Vec<(u32, u8)>> {
    let n = u16::from_le_bytes([*v.first()?, *v.get(1)?]) as usize;
    let body = v.get(2..2 + n)?;
    if !n.is_multiple_of(5) {
        return None;
    }
    Some(
        body.chunks_exact(5)
            .map(|c| (u32::from_le_bytes([c[0], c[1], c[2], c[3]]), c[4]))
            .collect(),
    )
}

fn encode_friends(list: &[(u32, u8)]) -> Vec<u8> {
    let n = list.len().min(u16::MAX as usize / 5);
    let mut v = ((n * 5) as u16).to_le_bytes().to_vec();
    for &(d, f) in &list[..n] {
        v.extend_from_slice(&d.to_le_bytes());
        v.push(f);
    }
    v
}

/// The distinct friends to look up or tell about (at most MAX_FRIENDS, never `me`).
fn friend_ids(list: &[(u32, u8)], me: u32) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for &(d, _) in list {
        if out.len() >= MAX_FRIENDS {
            break;
        }
        if d != me && is_object_channel(d) && !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

fn names_ok(name: &str) -> bool {
    let n = name.trim();
    !n.is_empty()
        && n.len() <= 32
        && n == name
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '.' | '\'' | '!'))
        && !name.contains("  ")
}

/// Whether a client-chosen doid may be sent to as a channel: not 0, and not the control
/// channel (1), whose datagrams carry no sender (an MD upstream would read one as a control
/// message).
fn is_object_channel(doid: u32) -> bool {
    doid as u64 > otp_wire::channels::CONTROL_CHANNEL
}

fn string_bytes(s: &str) -> Vec<u8> {
    let mut v = (s.len().min(u16::MAX as usize) as u16)
        .to_le_bytes()
        .to_vec();
    v.extend_from_slice(&s.as_bytes()[..s.len().min(u16::MAX as usize)]);
    v
}

impl Session {
    pub(super) fn toon_mut(&mut self) -> &mut Toon {
        self.toon.as_mut().expect("a Toontown session")
    }

    fn toon_ref(&self) -> &Toon {
        self.toon.as_ref().expect("a Toontown session")
    }

    fn toon_request(&mut self, why: Pending, now: Instant) -> u32 {
        let timeout = match why {
            Pending::OtherDetails { .. }
            | Pending::FriendFields { .. }
            | Pending::Unfriend { .. } => DETAILS_TIMEOUT,
            _ => REQUEST_TIMEOUT,
        };
        let t = self.toon_mut();
        t.next_ctx = t.next_ctx.wrapping_add(1).max(1);
        let ctx = t.next_ctx;
        t.pending.insert(ctx, (why, now + timeout));
        ctx
    }

    pub(super) fn toon_deadline(&self) -> Option<Instant> {
        self.toon
            .as_ref()
            .and_then(|t| t.pending.values().map(|(_, at)| *at).min())
    }

    pub(super) fn toon_time(&mut self, now: Instant, out: &mut SessionOut) {
        // Details of a toon nobody plays now: "no information" (the client shows none).
        let unanswered: Vec<(u32, u32)> = self
            .toon
            .as_ref()
            .map(|t| {
                t.pending
                    .iter()
                    .filter_map(|(&ctx, (why, at))| match why {
                        Pending::OtherDetails { doid } if *at <= now => Some((ctx, *doid)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (ctx, doid) in unanswered {
            self.toon_mut().pending.remove(&ctx);
            let mut w = Writer::client(&mut out.to_client, CLIENT_GET_AVATAR_DETAILS_RESP);
            w.u32(doid).u8(1);
            let _ = w.finish();
        }
        // Friends' names not read in time: the friends list fails (error 1); a former
        // friend's list not read: it keeps this toon (logged).
        if let Some(t) = self.toon.as_mut() {
            let mut failed_jobs = Vec::new();
            t.pending.retain(|_, (why, at)| match why {
                Pending::FriendFields { job, .. } if *at <= now => {
                    failed_jobs.push(*job);
                    false
                }
                Pending::Unfriend { other, .. } if *at <= now => {
                    log::warn!("toontown: friends list of {other} not read in time; unchanged");
                    false
                }
                _ => true,
            });
            for job in failed_jobs {
                t.pending.retain(
                    |_, (why, _)| !matches!(why, Pending::FriendFields { job: j, .. } if *j == job),
                );
                if let Some(j) = t.friend_jobs.remove(&job) {
                    if t.friend_job == Some(job) {
                        t.friend_job = None;
                    }
                    for _ in 0..j.answers {
                        let mut w = Writer::client(&mut out.to_client, CLIENT_GET_FRIEND_LIST_RESP);
                        w.u8(1);
                        let _ = w.finish();
                    }
                }
            }
        }
        let late = self
            .toon
            .as_ref()
            .is_some_and(|t| t.pending.values().any(|(_, at)| *at <= now));
        if late {
            self.eject(
                refuse(
                    LOST_LOGIN_PROBLEM,
                    "The server did not answer in time; please log in again.",
                ),
                false,
                out,
            );
        }
    }

    fn toon_db(&self) -> u64 {
        self.ca.toontown.database
    }

    /// A client datagram of the 2003 dialect.
    pub(super) fn toon_client(
        &mut self,
        now: Instant,
        body: &[u8],
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        if self.toon_ref().zone_pending.is_some() {
            // Answer one SET_ZONE completely before the next datagram (the client relies on it).
            let t = self.toon_mut();
            if t.held.len() >= MAX_HELD {
                return Err(refuse(
                    LOST_GENERIC,
                    "Too many messages while a zone change was answered.",
                ));
            }
            t.held.push_back(body.to_vec());
            r.rest();
            return Ok(());
        }
        let msgtype = r.u16()?;
        let logged_in = self.toon_ref().account.is_some() && self.toon_ref().record.is_some();
        match msgtype {
            CLIENT_HEARTBEAT_2003 => {
                self.heartbeat(now);
                if !logged_in {
                    // The client connects before its login screen: heartbeats keep it waiting.
                    self.extend_hello(now);
                }
                return Ok(());
            }
            CLIENT_DISCONNECT_2003 => {
                self.client_disconnect(out);
                return Ok(());
            }
            CLIENT_LOGIN_2 => return self.toon_login(now, r, out),
            CLIENT_LOGIN => return self.toon_password_login(now, r, out),
            _ if !logged_in => {
                return Err(refuse(
                    LOST_NOT_LOGGED_IN,
                    format!("Message type {msgtype} before login."),
                ))
            }
            _ => {}
        }
        match msgtype {
            CLIENT_GET_SHARD_LIST => self.toon_shard_list(out),
            CLIENT_GET_AVATARS => self.toon_list(now, CLIENT_GET_AVATARS_RESP, out),
            CLIENT_CREATE_AVATAR => return self.toon_create(now, r, out),
            CLIENT_SET_NAME_PATTERN => return self.toon_name_pattern(now, r, out),
            CLIENT_SET_WISHNAME => return self.toon_wish(now, r, out),
            CLIENT_SET_WISHNAME_CLEAR => {
                let doid = r.u32()?;
                let action = r.u8()?;
                let slot = self.own_slot(doid)?;
                let rec = self.toon_mut().record.as_mut().expect("logged in");
                let s = &mut rec.slots[slot];
                s.name_state = match (action, s.name_state) {
                    (1, accounts::NAME_APPROVED) => accounts::NAME_NAMED,
                    (_, accounts::NAME_NAMED) => accounts::NAME_NAMED,
                    _ => accounts::NAME_NONE,
                };
                if s.name_state == accounts::NAME_NONE {
                    s.wish_name.clear();
                }
                self.toon_save(now, AfterSave::Nothing, out);
            }
            CLIENT_DELETE_AVATAR => {
                let doid = r.u32()?;
                let slot = self.own_slot(doid)?;
                if self.toon_ref().avatar == doid {
                    return Err(refuse(
                        LOST_LOGIN_PROBLEM,
                        "Cannot delete the avatar in play.",
                    ));
                }
                self.toon_mut().record.as_mut().expect("logged in").slots[slot] =
                    accounts::Slot::default();
                let mut w = self.send_to(self.toon_db(), DBSERVER_OBJECT_DELETE, out);
                w.u32(doid);
                let _ = w.finish();
                self.toon_event("avatar-deleted", doid, out);
                self.toon_save(now, AfterSave::Deleted, out);
            }
            CLIENT_SET_AVATAR => return self.toon_set_avatar(now, r, out),
            CLIENT_GET_AVATAR_DETAILS => {
                let doid = r.u32()?;
                if !is_object_channel(doid) {
                    let mut w = Writer::client(&mut out.to_client, CLIENT_GET_AVATAR_DETAILS_RESP);
                    w.u32(doid).u8(1);
                    let _ = w.finish();
                    return Ok(());
                }
                let ctx = self.toon_request(Pending::OtherDetails { doid }, now);
                let mut w = self.send_to(doid as u64, STATESERVER_OBJECT_GET_ALL, out);
                w.u32(ctx).u32(doid);
                let _ = w.finish();
            }
            CLIENT_GET_FRIEND_LIST => self.toon_friend_list(now, out),
            CLIENT_REMOVE_FRIEND => {
                let doid = r.u32()?;
                self.toon_remove_friend(now, doid, out);
            }
            CLIENT_GET_STATE => {
                let zone = self.toon_ref().zone_pending.unwrap_or(0);
                self.state_resp(zone, out);
            }
            CLIENT_SET_SECURITY => {
                r.blob()?;
                r.i32()?;
            }
            CLIENT_SET_SHARD => return self.toon_set_shard(r, out),
            CLIENT_SET_ZONE => return self.toon_set_zone(now, r, out),
            CLIENT_OBJECT_UPDATE_FIELD => return self.toon_update(r, out),
            other => {
                return Err(refuse(
                    LOST_INVALID_MSGTYPE,
                    format!("Message type {other} is not valid."),
                ))
            }
        }
        Ok(())
    }

    fn toon_event(&self, kind: &str, doid: u32, out: &mut SessionOut) {
        let account = self.toon_ref().account.clone().unwrap_or_default();
        out.events.push(crate::roles::event::encode(
            kind,
            &[
                ("role", crate::roles::event::Ev::Str("clientagent")),
                ("sender", crate::roles::event::Ev::Str(&self.sender_name())),
                ("account", crate::roles::event::Ev::Str(&account)),
                ("doid", crate::roles::event::Ev::U64(doid as u64)),
            ],
        ));
    }

    /// The slot of one of this account's avatars, or a refusal.
    fn own_slot(&self, doid: u32) -> Result<usize, Refusal> {
        let rec = self.toon_ref().record.as_ref().expect("logged in");
        rec.slots
            .iter()
            .position(|s| s.doid == doid && doid != 0)
            .ok_or_else(|| {
                let mut e = refuse(
                    LOST_LOGIN_PROBLEM,
                    format!("Avatar {doid} does not belong to this account."),
                );
                e.doid = Some(doid);
                e
            })
    }

    fn toon_login(
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
                return Err(refuse(LOST_LOGIN_PROBLEM, format!("Login refused: {why}.")));
            }
        };
        self.toon_mut().account = Some(name.clone());
        self.toon_mut().method = Some(LoginMethod::Token);
        let ctx = self.toon_request(Pending::Account, now);
        let mut w = self.send_to(self.toon_db(), DBSERVER_ACCOUNT_GET, out);
        w.u32(ctx).string(&name);
        let _ = w.finish();
        Ok(())
    }

    /// CLIENT_LOGIN: the name and password typed on the 2003 client's login screen
    /// (`account-old-auth #t`).
    /// What both logins check first: not logged in yet, the server's version and DC hash.
    fn login_allowed(&self, version: &[u8], hash: u32) -> Result<(), Refusal> {
        if self.toon_ref().account.is_some() {
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

    fn toon_password_login(
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
            return self.toon_login_refused(
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
                return self.toon_login_refused(
                    now,
                    LOGIN_BAD_NAME,
                    "That name cannot be an account name.",
                    "",
                    out,
                )
            }
        };
        if password.is_empty() || password.len() > accounts::MAX_PASSWORD {
            return self.toon_login_refused(
                now,
                LOGIN_BAD_PASSWORD,
                "The password is empty or too long.",
                &name,
                out,
            );
        }
        self.toon_mut().account = Some(name.clone());
        self.toon_mut().method = Some(LoginMethod::Password);
        let ctx = self.toon_request(
            Pending::PasswordAccount {
                password: Secret(password),
                create,
            },
            now,
        );
        let mut w = self.send_to(self.toon_db(), DBSERVER_ACCOUNT_GET, out);
        w.u32(ctx).string(&name);
        let _ = w.finish();
        Ok(())
    }

    /// A refused password login: LOGIN_RESP `code` (the client offers a retry), or, at the
    /// `MAX_BAD_LOGINS`th on this connection, GO_GET_LOST 122. The session stays logged out.
    fn toon_login_refused(
        &mut self,
        now: Instant,
        code: u8,
        why: &str,
        name: &str,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let t = self.toon_mut();
        t.account = None;
        t.record = None;
        t.method = None;
        t.bad_logins = t.bad_logins.saturating_add(1);
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

    fn toon_save(&mut self, now: Instant, then: AfterSave, out: &mut SessionOut) {
        let name = self.toon_ref().account.clone().unwrap_or_default();
        let data = self
            .toon_ref()
            .record
            .as_ref()
            .map(Account::encode)
            .unwrap_or_default();
        let ctx = self.toon_request(Pending::SaveThen(then), now);
        let mut w = self.send_to(self.toon_db(), DBSERVER_ACCOUNT_SET, out);
        w.u32(ctx).string(&name).blob(&data);
        let _ = w.finish();
    }

    fn toon_logged_in(&mut self, now: Instant, out: &mut SessionOut) {
        let name = self.toon_ref().account.clone().unwrap_or_default();
        // One session per account: whoever holds it now is told to leave.
        let channel = accounts::account_channel(&name);
        let mut w = self.send_to(channel, CLIENTAGENT_EJECT, out);
        w.u16(LOST_LOGGED_IN_ELSEWHERE)
            .string("Someone else has logged in with this account.");
        let _ = w.finish();
        out.subscriptions.push(Subscription::Add(channel));
        self.set_state(STATE_ESTABLISHED);
        let since = self.ca.clock.unix_at(now);
        let method = self.toon_ref().method.unwrap_or(LoginMethod::Token);
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
        let remote = self.remote.to_string();
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
    fn toon_password_account(
        &mut self,
        now: Instant,
        status: u8,
        data: &[u8],
        password: &[u8],
        create: bool,
        out: &mut SessionOut,
    ) {
        let slots = self.ca.toontown.max_avatars;
        let name = self.toon_ref().account.clone().unwrap_or_default();
        let refused = match status {
            0 => match Account::decode(data, slots) {
                Some(a) => match a.password.clone() {
                    Some(hash) => {
                        // Checked on a worker thread: see `toon_job_done`.
                        let account = Box::new(a);
                        let id = self.toon_request(Pending::PasswordCheck { account }, now);
                        out.jobs.push(SessionJob::CheckPassword {
                            id,
                            password: password.to_vec(),
                            hash,
                        });
                        return;
                    }
                    None => (
                        LOGIN_BAD_PASSWORD,
                        "This account has no password (it logs in with a play token).",
                    ),
                },
                None => {
                    self.eject(
                        refuse(LOST_LOGIN_PROBLEM, "The account record is unreadable."),
                        false,
                        out,
                    );
                    return;
                }
            },
            1 if create && self.ca.toontown.passwords == PasswordPolicy::CreateOnLogin => {
                let created_unix = self.ca.clock.unix_at(now).as_secs();
                // Hashed on a worker thread: see `toon_job_done`.
                let id = self.toon_request(
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
                return;
            }
            1 => (LOGIN_NO_SUCH_NAME, "There is no account of that name."),
            _ => {
                self.eject(
                    refuse(LOST_LOGIN_PROBLEM, "The account database failed."),
                    false,
                    out,
                );
                return;
            }
        };
        if let Err(e) = self.toon_login_refused(now, refused.0, refused.1, &name, out) {
            self.eject(e, true, out);
        }
    }

    /// A password checked or hashed off the event loop (`SessionJob`).
    pub(super) fn toon_job_done(
        &mut self,
        now: Instant,
        id: u32,
        result: JobResult,
        out: &mut SessionOut,
    ) {
        let Some((why, deadline)) = self.toon_mut().pending.remove(&id) else {
            return; // timed out meanwhile (the session was told then)
        };
        let refused = match (why, result) {
            (Pending::PasswordCheck { account }, JobResult::Checked(true)) => {
                self.toon_mut().record = Some(*account);
                self.toon_logged_in(now, out);
                return;
            }
            (Pending::PasswordCheck { .. }, JobResult::Checked(false)) => {
                (LOGIN_BAD_PASSWORD, "The password is not right.")
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
                self.toon_mut().record = Some(a);
                self.toon_save(now, AfterSave::Login, out);
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
            (Pending::PasswordCheck { .. } | Pending::PasswordHash { .. }, _) => {
                (LOGIN_BAD_PASSWORD, "The server is busy; please try again.")
            }
            (other, _) => {
                // Not a job's context: put it back as it was.
                self.toon_mut().pending.insert(id, (other, deadline));
                return;
            }
        };
        let name = self.toon_ref().account.clone().unwrap_or_default();
        if let Err(e) = self.toon_login_refused(now, refused.0, refused.1, &name, out) {
            self.eject(e, true, out);
        }
    }

    fn toon_shard_list(&mut self, out: &mut SessionOut) {
        let shards = self.ca.shards.lock();
        let mut w = Writer::client(&mut out.to_client, CLIENT_GET_SHARD_LIST_RESP);
        w.u16(shards.len().min(u16::MAX as usize) as u16);
        for (id, (name, population)) in shards.iter() {
            w.u32(*id).string(name).u32(*population);
        }
        let _ = w.finish();
    }

    /// Gathers the avatar list from the database, answering with `msgtype` (5).
    fn toon_list(&mut self, now: Instant, msgtype: u16, out: &mut SessionOut) {
        let slots: Vec<(usize, u32)> = self
            .toon_ref()
            .record
            .as_ref()
            .map(|r| {
                r.slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.doid != 0)
                    .map(|(i, s)| (i, s.doid))
                    .collect()
            })
            .unwrap_or_default();
        let t = self.toon_mut();
        t.next_ctx = t.next_ctx.wrapping_add(1).max(1);
        let job = t.next_ctx;
        let n = t.record.as_ref().map_or(0, |r| r.slots.len());
        t.jobs.insert(
            job,
            ListJob {
                msgtype,
                waiting: slots.len(),
                found: vec![None; n],
            },
        );
        if slots.is_empty() {
            self.toon_list_done(job, out);
            return;
        }
        let schema = self.ca.schema.clone();
        let tt = &self.ca.toontown;
        let class = schema.dc().class_by_name(&tt.avatar_class);
        let fields = class.and_then(|c| {
            Some((
                schema.dc().field_by_name(c, &tt.name_field)?.id(),
                schema.dc().field_by_name(c, &tt.dna_field)?.id(),
            ))
        });
        let Some((fname, fdna)) = fields else {
            log::error!(
                "{}: the avatar class or its name/DNA field is not in the DC files",
                self.label()
            );
            self.toon_mut().jobs.remove(&job);
            return;
        };
        for (slot, doid) in slots {
            let ctx = self.toon_request(Pending::ListFields { job, slot, doid }, now);
            let mut w = self.send_to(self.toon_db(), DBSERVER_OBJECT_GET_FIELDS, out);
            w.u32(ctx).u32(doid).u16(2).u16(fname).u16(fdna);
            let _ = w.finish();
        }
    }

    fn toon_list_done(&mut self, job: u32, out: &mut SessionOut) {
        let Some(j) = self.toon_mut().jobs.remove(&job) else {
            return;
        };
        let rec = self
            .toon_ref()
            .record
            .clone()
            .unwrap_or_else(|| Account::new(0, 0));
        let count = j.found.iter().filter(|f| f.is_some()).count();
        let mut w = Writer::client(&mut out.to_client, j.msgtype);
        w.u8(0).u16(count as u16);
        for (slot, f) in j.found.iter().enumerate() {
            let Some((name, dna)) = f else {
                continue;
            };
            let s = &rec.slots[slot];
            let (wish, approved, rejected) = match s.name_state {
                accounts::NAME_PENDING => (s.wish_name.as_str(), "", ""),
                accounts::NAME_APPROVED => ("", s.wish_name.as_str(), ""),
                accounts::NAME_REJECTED => ("", "", s.wish_name.as_str()),
                _ => ("", "", ""),
            };
            w.u32(s.doid)
                .bytes(name)
                .string(wish)
                .string(approved)
                .string(rejected)
                .bytes(dna)
                .u8(slot as u8)
                .u8((s.name_state == accounts::NAME_NONE) as u8);
        }
        let _ = w.finish();
    }

    fn toon_create(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let context = r.u16()?;
        let dna = r.blob()?.to_vec();
        let slot = r.u8()? as usize;
        let rec = self.toon_ref().record.as_ref().expect("logged in");
        // A slot being created is taken: a second avatar would be orphaned in the database.
        let creating = self
            .toon_ref()
            .pending
            .values()
            .any(|(p, _)| matches!(p, Pending::Created { slot: s } if *s == slot));
        if slot >= rec.slots.len() || rec.slots[slot].doid != 0 || creating {
            return Err(refuse(
                LOST_LOGIN_PROBLEM,
                format!(
                    "Avatar slot {slot} is not free (an account has {} slots).",
                    rec.slots.len()
                ),
            ));
        }
        let schema = self.ca.schema.clone();
        let tt = &self.ca.toontown;
        let Some(class) = schema.dc().class_by_name(&tt.avatar_class) else {
            return Err(refuse(
                LOST_LOGIN_PROBLEM,
                "No avatar class in the DC files.",
            ));
        };
        let field = |n: &str| schema.dc().field_by_name(class, n).map(|f| f.id());
        let (Some(fname), Some(fdna)) = (field(&tt.name_field), field(&tt.dna_field)) else {
            return Err(refuse(
                LOST_LOGIN_PROBLEM,
                "The avatar class lacks its name or DNA field.",
            ));
        };
        let dna_value = string_bytes(&String::from_utf8_lossy(&dna));
        let mut dna_packed = (dna.len() as u16).to_le_bytes().to_vec();
        dna_packed.extend_from_slice(&dna);
        let _ = dna_value;
        if let Err(e) = schema.value_len(class.id(), fdna, &dna_packed) {
            return Err(refuse(
                LOST_TRUNCATED,
                format!("Invalid DNA: {}", e.message),
            ));
        }
        let mut fields: Vec<(u16, Vec<u8>)> =
            vec![(fname, string_bytes(&tt.default_name)), (fdna, dna_packed)];
        if let Some(f) = field("setTutorialAck") {
            if schema.value_len(class.id(), f, &[1]).is_ok() {
                fields.push((f, vec![1]));
            }
        }
        if let Some(f) = field("setDefaultShard") {
            if let Some(first) = self.ca.shards.lock().keys().next().copied() {
                fields.push((f, first.to_le_bytes().to_vec()));
            }
        }
        if let Some(f) = field("setAccountName") {
            let name = self.toon_ref().account.clone().unwrap_or_default();
            fields.push((f, string_bytes(&name)));
        }
        let ctx = self.toon_request(Pending::Created { slot }, now);
        let mut w = self.send_to(self.toon_db(), DBSERVER_CREATE_OBJECT, out);
        w.u32(ctx).u16(class.id()).u16(fields.len() as u16);
        for (f, v) in &fields {
            w.u16(*f).bytes(v);
        }
        let _ = w.finish();
        let _ = context; // always 0 from the client; echoed as 0
        Ok(())
    }

    fn set_name(&mut self, doid: u32, name: &str, out: &mut SessionOut) {
        let schema = self.ca.schema.clone();
        let tt = &self.ca.toontown;
        let Some(f) = schema
            .dc()
            .class_by_name(&tt.avatar_class)
            .and_then(|c| schema.dc().field_by_name(c, &tt.name_field))
            .map(|f| f.id())
        else {
            return;
        };
        let mut w = self.send_to(self.toon_db(), DBSERVER_OBJECT_SET_FIELD, out);
        w.u32(doid).u16(f).string(name);
        let _ = w.finish();
    }

    fn toon_name_pattern(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let doid = r.u32()?;
        let mut parts = [(0u16, 0u16); 4];
        for p in &mut parts {
            *p = (r.u16()?, r.u16()?);
        }
        let slot = self.own_slot(doid)?;
        let name = self
            .ca
            .name_parts
            .as_ref()
            .and_then(|np| np.compose(&parts));
        match name {
            Some(name) => {
                self.set_name(doid, &name, out);
                let s = &mut self.toon_mut().record.as_mut().expect("logged in").slots[slot];
                s.wish_name = name;
                s.name_state = accounts::NAME_NAMED;
                self.toon_save(now, AfterSave::Pattern { doid }, out);
            }
            None => {
                let mut w = Writer::client(&mut out.to_client, CLIENT_SET_NAME_PATTERN_ANSWER);
                w.u32(doid).u8(1);
                let _ = w.finish();
                self.toon_event("name-refused", doid, out);
            }
        }
        Ok(())
    }

    fn toon_wish(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let doid = r.u32()?;
        let name = String::from_utf8_lossy(r.blob()?).into_owned();
        if doid == 0 {
            // Only a check.
            let ok = names_ok(&name);
            let mut w = Writer::client(&mut out.to_client, CLIENT_SET_WISHNAME_RESP);
            w.u32(0).u16(0);
            if ok {
                w.string(&name).string("").string("");
            } else {
                w.string("").string("").string(&name);
            }
            let _ = w.finish();
            return Ok(());
        }
        let slot = self.own_slot(doid)?;
        if !names_ok(&name) {
            let mut w = Writer::client(&mut out.to_client, CLIENT_SET_WISHNAME_RESP);
            w.u32(doid).u16(0).string("").string("").string(&name);
            let _ = w.finish();
            self.toon_event("name-refused", doid, out);
            return Ok(());
        }
        let auto = self.ca.toontown.auto_approve_names;
        if auto {
            self.set_name(doid, &name, out);
        }
        let s = &mut self.toon_mut().record.as_mut().expect("logged in").slots[slot];
        s.wish_name = name.clone();
        s.name_state = if auto {
            accounts::NAME_NAMED
        } else {
            accounts::NAME_PENDING
        };
        let (pending, approved) = if auto {
            (String::new(), name)
        } else {
            (name, String::new())
        };
        self.toon_save(
            now,
            AfterSave::Wish {
                doid,
                pending,
                approved,
                rejected: String::new(),
            },
            out,
        );
        Ok(())
    }

    /// Takes the avatar in play out of the world (SET_AVATAR 0, or another avatar chosen).
    fn toon_leave_world(&mut self, out: &mut SessionOut) {
        let avatar = self.toon_ref().avatar;
        if avatar == 0 {
            return;
        }
        let shard = self.toon_ref().shard;
        if let Some(i) = self.interests.remove(&ZONE_INTEREST) {
            let zones: Vec<u32> = i.zones.to_vec();
            self.close_zones_quietly(i.parent, &zones, out);
        }
        let _ = shard;
        self.toon_friends_offline(out);
        out.subscriptions
            .push(Subscription::Remove(puppet_channel(avatar)));
        self.session_objects.remove(&avatar);
        self.owned.remove(&avatar);
        let mut w = self.send_to(avatar as u64, STATESERVER_OBJECT_DELETE_RAM, out);
        w.u32(avatar);
        let _ = w.finish();
        self.toon_event("avatar-left", avatar, out);
        let t = self.toon_mut();
        t.avatar = 0;
        t.shard = 0;
    }

    /// The avatar class's friends field, if the DC files have one.
    /// The avatar class's id (`ANY_CLASS` if the DC files lack it; checked at start-up).
    pub(super) fn avatar_class_id(&self) -> u16 {
        self.ca
            .schema
            .dc()
            .class_by_name(&self.ca.toontown.avatar_class)
            .map_or(crate::roles::ANY_CLASS, |c| c.id())
    }

    fn friends_field(&self) -> Option<u16> {
        let dc = self.ca.schema.dc();
        let class = dc.class_by_name(&self.ca.toontown.avatar_class)?;
        Some(dc.field_by_name(class, FRIENDS_FIELD)?.id())
    }

    /// GET_FRIEND_LIST: each friend's name and DNA, read from the database.
    fn toon_friend_list(&mut self, now: Instant, out: &mut SessionOut) {
        let t = self.toon_mut();
        if t.avatar == 0 {
            let mut w = Writer::client(&mut out.to_client, CLIENT_GET_FRIEND_LIST_RESP);
            w.u8(1);
            let _ = w.finish();
            return;
        }
        if t.friends.is_none() {
            // Answered once the avatar's details (and so its friends) come.
            t.friends_wanted += 1;
            return;
        }
        if let Some(job) = t.friend_job {
            if let Some(j) = t.friend_jobs.get_mut(&job) {
                j.answers += 1;
                return;
            }
        }
        let me = t.avatar;
        let ids = friend_ids(t.friends.as_deref().unwrap_or_default(), me);
        let schema = self.ca.schema.clone();
        let tt = &self.ca.toontown;
        let fields = schema.dc().class_by_name(&tt.avatar_class).and_then(|c| {
            Some((
                schema.dc().field_by_name(c, &tt.name_field)?.id(),
                schema.dc().field_by_name(c, &tt.dna_field)?.id(),
            ))
        });
        let (Some((fname, fdna)), false) = (fields, ids.is_empty()) else {
            let mut w = Writer::client(&mut out.to_client, CLIENT_GET_FRIEND_LIST_RESP);
            w.u8(0).u16(0);
            let _ = w.finish();
            return;
        };
        let t = self.toon_mut();
        t.next_ctx = t.next_ctx.wrapping_add(1).max(1);
        let job = t.next_ctx;
        t.friend_job = Some(job);
        t.friend_jobs.insert(
            job,
            FriendJob {
                answers: 1,
                waiting: ids.len(),
                found: ids.iter().map(|&d| (d, None)).collect(),
            },
        );
        for (index, doid) in ids.into_iter().enumerate() {
            let ctx = self.toon_request(Pending::FriendFields { job, index }, now);
            let mut w = self.send_to(self.toon_db(), DBSERVER_OBJECT_GET_FIELDS, out);
            w.u32(ctx).u32(doid).u16(2).u16(fname).u16(fdna);
            let _ = w.finish();
        }
    }

    fn toon_friend_list_done(&mut self, job: u32, out: &mut SessionOut) {
        let t = self.toon_mut();
        let Some(j) = t.friend_jobs.remove(&job) else {
            return;
        };
        if t.friend_job == Some(job) {
            t.friend_job = None;
        }
        let found: Vec<_> = j
            .found
            .iter()
            .filter_map(|(d, f)| f.as_ref().map(|(n, dna)| (*d, n, dna)))
            .collect();
        for _ in 0..j.answers {
            let mut w = Writer::client(&mut out.to_client, CLIENT_GET_FRIEND_LIST_RESP);
            w.u8(0).u16(found.len() as u16);
            for (d, n, dna) in &found {
                w.u32(*d).bytes(n).bytes(dna);
            }
            let _ = w.finish();
        }
    }

    /// REMOVE_FRIEND: `doid` leaves the avatar's friends list, and the avatar leaves `doid`'s
    /// (read from the database, written through the DBSS, live or stored).
    fn toon_remove_friend(&mut self, now: Instant, doid: u32, out: &mut SessionOut) {
        let me = self.toon_ref().avatar;
        let field = self.friends_field();
        let listed = self
            .toon_ref()
            .friends
            .as_ref()
            .is_some_and(|l| l.iter().any(|&(d, _)| d == doid));
        let Some(field) = field.filter(|_| listed && me != 0) else {
            self.toon_event("friend-remove-dropped", doid, out);
            return;
        };
        let list = {
            let l = self.toon_mut().friends.as_mut().expect("listed");
            l.retain(|&(d, _)| d != doid);
            encode_friends(l)
        };
        let mut w = self.send_to(me as u64, STATESERVER_OBJECT_SET_FIELD, out);
        w.u32(me).u16(field).bytes(&list);
        let _ = w.finish();
        self.toon_event("friend-removed", doid, out);
        if is_object_channel(doid) {
            let ctx = self.toon_request(Pending::Unfriend { other: doid, me }, now);
            let mut w = self.send_to(self.toon_db(), DBSERVER_OBJECT_GET_FIELDS, out);
            w.u32(ctx).u32(doid).u16(1).u16(field);
            let _ = w.finish();
        }
    }

    /// The avatar in play's friends list is known (its details) or changed (an update from
    /// the server): answer waiting GET_FRIEND_LISTs, and tell friends not told yet that
    /// the avatar is online.
    fn toon_friends_set(&mut self, now: Instant, list: Vec<(u32, u8)>, out: &mut SessionOut) {
        let me = self.toon_ref().avatar;
        let old = self.toon_mut().friends.replace(list);
        let new = friend_ids(self.toon_ref().friends.as_deref().unwrap_or_default(), me);
        for f in new {
            if old.as_ref().is_some_and(|o| o.iter().any(|&(d, _)| d == f)) {
                continue;
            }
            let mut w = self.send_to(puppet_channel(f), CLIENTAGENT_TOON_FRIEND_ONLINE, out);
            w.u32(me);
            let _ = w.finish();
        }
        let wanted = std::mem::take(&mut self.toon_mut().friends_wanted);
        for _ in 0..wanted {
            self.toon_friend_list(now, out);
        }
    }

    /// The avatar in play leaves the world: its friends' clients hear it went offline.
    pub(super) fn toon_friends_offline(&mut self, out: &mut SessionOut) {
        let me = self.toon_ref().avatar;
        let Some(list) = self.toon_mut().friends.take() else {
            return;
        };
        self.toon_mut().friends_wanted = 0;
        if me == 0 {
            return;
        }
        let mut dg = CLIENT_FRIEND_OFFLINE.to_le_bytes().to_vec();
        dg.extend_from_slice(&me.to_le_bytes());
        for f in friend_ids(&list, me) {
            let mut w = self.send_to(puppet_channel(f), CLIENTAGENT_SEND_DATAGRAM, out);
            w.blob(&dg);
            let _ = w.finish();
        }
    }

    fn toon_set_avatar(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let doid = r.u32()?;
        if doid == 0 {
            self.toon_leave_world(out);
            return Ok(());
        }
        self.own_slot(doid)?;
        if self.toon_ref().avatar == doid {
            return Ok(());
        }
        self.toon_leave_world(out);
        // Activate the stored avatar, owned by this client, out of every zone until SET_SHARD.
        let mut w = self.send_to(doid as u64, DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS, out);
        w.u32(doid).u32(0).u32(0);
        let _ = w.finish();
        let mut w = self.send_to(doid as u64, STATESERVER_OBJECT_SET_OWNER, out);
        w.u64(self.channel);
        let _ = w.finish();
        let ctx = self.toon_request(Pending::OwnDetails, now);
        let mut w = self.send_to(doid as u64, STATESERVER_OBJECT_GET_ALL, out);
        w.u32(ctx).u32(doid);
        let _ = w.finish();
        self.session_objects.insert(doid);
        out.subscriptions
            .push(Subscription::Add(puppet_channel(doid)));
        let t = self.toon_mut();
        t.avatar = doid;
        t.friends = None;
        t.friends_wanted = 0;
        self.toon_event("avatar-chosen", doid, out);
        Ok(())
    }

    fn state_resp(&self, zone: u32, out: &mut SessionOut) {
        let mut w = Writer::client(&mut out.to_client, CLIENT_GET_STATE_RESP);
        w.bytes(&[0; 12]).u16(zone as u16);
        let _ = w.finish();
    }

    fn toon_set_shard(&mut self, r: &mut Reader<'_>, out: &mut SessionOut) -> Result<(), Refusal> {
        let asked = r.u32()?;
        let avatar = self.toon_ref().avatar;
        if avatar == 0 {
            return Err(refuse(LOST_GENERIC, "SET_SHARD without an avatar in play."));
        }
        let shard = {
            let shards = self.ca.shards.lock();
            if shards.contains_key(&asked) {
                Some(asked)
            } else {
                shards.keys().next().copied()
            }
        };
        let Some(shard) = shard else {
            return Err(refuse(153, "No district is available."));
        };
        if let Some(i) = self.interests.remove(&ZONE_INTEREST) {
            let zones: Vec<u32> = i.zones.to_vec();
            self.close_zones_quietly(i.parent, &zones, out);
        }
        let quiet = self.ca.toontown.quiet_zone;
        let mut w = self.send_to(avatar as u64, STATESERVER_OBJECT_SET_LOCATION, out);
        w.u32(shard).u32(quiet);
        let _ = w.finish();
        self.toon_mut().shard = shard;
        self.state_resp(0, out);
        Ok(())
    }

    fn toon_set_zone(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let zone = r.u16()? as u32;
        // Later clients append the zones they see; the 2003 client sends none.
        let max = self.ca.toontown.max_visible_zones.max(1);
        let mut zones: smallvec::SmallVec<[u32; 4]> = smallvec::SmallVec::new();
        zones.push(zone);
        while r.remaining() >= 2 {
            let z = r.u16()? as u32;
            if zones.len() >= max {
                return Err(refuse(
                    LOST_GENERIC,
                    format!("More than {max} visible zones in one SET_ZONE."),
                ));
            }
            if !zones.contains(&z) {
                zones.push(z);
            }
        }
        if let Some(vis) = self.ca.visibility.get(&zone) {
            for &z in vis {
                if zones.len() >= max {
                    break;
                }
                if !zones.contains(&z) {
                    zones.push(z);
                }
            }
        }
        let (avatar, shard) = (self.toon_ref().avatar, self.toon_ref().shard);
        if avatar == 0 || shard == 0 {
            return Err(refuse(
                LOST_GENERIC,
                "SET_ZONE before an avatar is in a district.",
            ));
        }
        let quiet = self.ca.toontown.quiet_zone;
        if !zones.contains(&quiet) {
            zones.push(quiet);
        }
        let mut w = self.send_to(avatar as u64, STATESERVER_OBJECT_SET_LOCATION, out);
        w.u32(shard).u32(zone);
        let _ = w.finish();
        self.state_resp(zone, out);
        if zone == quiet {
            // The client dropped everything but its managers: so does its view.
            if let Some(i) = self.interests.remove(&ZONE_INTEREST) {
                let gone: Vec<u32> = i.zones.iter().copied().filter(|z| *z != quiet).collect();
                self.close_zones_quietly(i.parent, &gone, out);
                let mut keep = i.clone();
                keep.zones.retain(|z| *z == quiet);
                if !keep.zones.is_empty() {
                    self.interests.insert(ZONE_INTEREST, keep);
                }
            }
        }
        self.toon_mut().zone_pending = Some(zone);
        let interest = super::session::Interest {
            parent: shard,
            zones,
        };
        self.add_interest(now, ZONE_INTEREST, interest, zone, 0, out);
        Ok(())
    }

    /// An interest finished: for the SET_ZONE interest, DONE_SET_ZONE_RESP.
    pub(super) fn toon_done(&mut self, id: u16, context: u32, out: &mut SessionOut) {
        if id != ZONE_INTEREST {
            return;
        }
        let mut w = Writer::client(&mut out.to_client, CLIENT_DONE_SET_ZONE_RESP);
        w.u16(context as u16);
        let _ = w.finish();
        let t = self.toon_mut();
        t.zone_pending = None;
        t.replay = !t.held.is_empty();
    }

    /// Handles client datagrams held during a SET_ZONE, once it is answered.
    pub(super) fn toon_replay(&mut self, now: Instant, out: &mut SessionOut) {
        while !self.is_closed() {
            let Some(t) = self.toon.as_mut() else {
                return;
            };
            if !t.replay || t.zone_pending.is_some() {
                return;
            }
            let Some(body) = t.held.pop_front() else {
                t.replay = false;
                return;
            };
            self.on_client_unmetered(now, &body, out);
        }
    }

    fn toon_update(&mut self, r: &mut Reader<'_>, out: &mut SessionOut) -> Result<(), Refusal> {
        let doid = r.u32()?;
        // The client's own number for the field, in the object's class.
        let number = r.u16()?;
        let schema = self.ca.schema.clone();
        let owned = self.owned.contains_key(&doid);
        let Some(class) = self.lookup_object(doid) else {
            // A p2p field to another toon goes to whoever plays it, visible or not: the client
            // numbers it as a field of the avatar class.
            let avatar = self.avatar_class_id();
            if let Some(field) = self.ca.field_from_client(avatar, number) {
                let flags = schema.flags(avatar, field);
                if flags.p2p && flags.clsend && is_object_channel(doid) {
                    return self.toon_p2p(avatar, doid, field, r, out);
                }
            }
            r.rest();
            self.toon_event("client-update-dropped", doid, out);
            return Ok(());
        };
        let Some(field) = self.ca.field_from_client(class, number) else {
            r.rest();
            self.toon_event("client-update-dropped", doid, out);
            return Ok(());
        };
        let flags = schema.flags(class, field);
        if !schema.class_has_field(class, field) || !self.may_send(doid, field, flags, owned) {
            // The 2003 client sends such updates in normal play (its shared AI code); the
            // update is dropped, not the client.
            r.rest();
            self.toon_event("client-update-dropped", doid, out);
            return Ok(());
        }
        let start = r.rest_peek();
        let n = self.check_value(class, field, r)?;
        let mut w = self.send_to(doid as u64, STATESERVER_OBJECT_SET_FIELD, out);
        w.u32(doid).u16(field).bytes(&start[..n]);
        if w.finish().is_err() {
            return Err(refuse(LOST_TRUNCATED, "Update too large to route."));
        }
        Ok(())
    }

    fn toon_p2p(
        &mut self,
        class: u16,
        doid: u32,
        field: u16,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let start = r.rest_peek();
        let n = self.check_value(class, field, r)?;
        // The StateServer sends p2p fields to the object's player (or AI).
        let mut w = self.send_to(doid as u64, STATESERVER_OBJECT_SET_FIELD, out);
        w.u32(doid).u16(field).bytes(&start[..n]);
        let _ = w.finish();
        Ok(())
    }

    /// Validates one value of `field` at the reader and steps over it.
    fn check_value(&self, class: u16, field: u16, r: &mut Reader<'_>) -> Result<usize, Refusal> {
        let ascii_only = !self.ca.limits.allow_utf8_strings;
        match self
            .ca
            .schema
            .value_len_with(class, field, r.rest_peek(), ascii_only)
        {
            Ok(n) => {
                r.skip(n)?;
                Ok(n)
            }
            Err(v) if v.truncated => Err(refuse(LOST_TRUNCATED, "Update ended early.")),
            Err(v) => Err(refuse(
                LOST_TRUNCATED,
                format!("Update violates the DC file: {}", v.message),
            )),
        }
    }

    /// An internal datagram for the 2003 dialect's own requests; true when handled.
    pub(super) fn toon_internal(
        &mut self,
        now: Instant,
        msgtype: u16,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<bool, WireError> {
        // A district up or down, from this process's directory: the client's SERVER_UP/DOWN.
        if msgtype == CLIENTAGENT_SHARD_UP || msgtype == CLIENTAGENT_SHARD_DOWN {
            let id = r.u32()?;
            if self.toon_ref().account.is_some() {
                if msgtype == CLIENTAGENT_SHARD_UP {
                    let name = String::from_utf8_lossy(r.blob()?).into_owned();
                    let mut w = Writer::client(&mut out.to_client, CLIENT_SERVER_UP);
                    w.u32(id).string(&name);
                    let _ = w.finish();
                } else {
                    let mut w = Writer::client(&mut out.to_client, CLIENT_SERVER_DOWN);
                    w.u32(id);
                    let _ = w.finish();
                }
            }
            r.rest();
            return Ok(true);
        }
        if msgtype == CLIENTAGENT_TOON_FRIEND_ONLINE {
            let online = r.u32()?;
            r.rest();
            let me = self.toon_ref().avatar;
            let listed = self
                .toon_ref()
                .friends
                .as_ref()
                .is_some_and(|l| l.iter().any(|&(d, _)| d == online));
            if me != 0 && online != me && listed {
                let mut w = Writer::client(&mut out.to_client, CLIENT_FRIEND_ONLINE);
                w.u32(online);
                let _ = w.finish();
                let mut dg = CLIENT_FRIEND_ONLINE.to_le_bytes().to_vec();
                dg.extend_from_slice(&me.to_le_bytes());
                let mut w = self.send_to(puppet_channel(online), CLIENTAGENT_SEND_DATAGRAM, out);
                w.blob(&dg);
                let _ = w.finish();
            }
            return Ok(true);
        }
        if msgtype == STATESERVER_OBJECT_SET_FIELD || msgtype == STATESERVER_OBJECT_SET_FIELDS {
            // The avatar's own friends list changed (an AI's FriendManager, or a former
            // friend's REMOVE_FRIEND): keep it; the update goes on to the client as usual.
            if let Some(list) = self.own_friends_update(msgtype, r.rest_peek()) {
                self.toon_friends_set(now, list, out);
            }
            return Ok(false);
        }
        match msgtype {
            DBSERVER_ACCOUNT_GET_RESP
            | DBSERVER_ACCOUNT_SET_RESP
            | DBSERVER_CREATE_OBJECT_RESP
            | DBSERVER_OBJECT_GET_FIELDS_RESP
            | STATESERVER_OBJECT_GET_ALL_RESP => {}
            _ => return Ok(false),
        }
        let ctx = r.u32()?;
        let Some((why, _)) = self.toon_mut().pending.remove(&ctx) else {
            r.rest();
            return Ok(msgtype != STATESERVER_OBJECT_GET_ALL_RESP);
        };
        match (why, msgtype) {
            (Pending::Account, DBSERVER_ACCOUNT_GET_RESP) => {
                let status = r.u8()?;
                let data = r.blob()?;
                let slots = self.ca.toontown.max_avatars;
                let unix = self.ca.clock.unix_at(now).as_secs();
                match status {
                    0 => match Account::decode(data, slots) {
                        Some(a)
                            if a.password.is_some()
                                && self.ca.toontown.tokens == crate::config::TokenPolicy::Open =>
                        {
                            // Anyone can name an account with an open token: one with a
                            // password opens only with its password (or a signed token).
                            let why = "this account logs in with its password";
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
                            self.eject(
                                refuse(LOST_LOGIN_PROBLEM, format!("Login refused: {why}.")),
                                false,
                                out,
                            );
                        }
                        Some(a) => {
                            self.toon_mut().record = Some(a);
                            self.toon_logged_in(now, out);
                        }
                        None => self.eject(
                            refuse(LOST_LOGIN_PROBLEM, "The account record is unreadable."),
                            false,
                            out,
                        ),
                    },
                    1 => {
                        self.toon_mut().record = Some(Account::new(slots, unix));
                        self.toon_save(now, AfterSave::Login, out);
                    }
                    _ => self.eject(
                        refuse(LOST_LOGIN_PROBLEM, "The account database failed."),
                        false,
                        out,
                    ),
                }
            }
            (Pending::PasswordAccount { password, create }, DBSERVER_ACCOUNT_GET_RESP) => {
                let status = r.u8()?;
                let data = r.blob()?;
                self.toon_password_account(now, status, data, &password.0, create, out);
            }
            (Pending::SaveThen(then), DBSERVER_ACCOUNT_SET_RESP) => {
                if r.u8()? != 0 {
                    self.eject(
                        refuse(LOST_LOGIN_PROBLEM, "The account could not be saved."),
                        false,
                        out,
                    );
                    return Ok(true);
                }
                match then {
                    AfterSave::Login => self.toon_logged_in(now, out),
                    AfterSave::Created { doid } => {
                        let mut w = Writer::client(&mut out.to_client, CLIENT_CREATE_AVATAR_RESP);
                        w.u16(0).u8(0).u32(doid);
                        let _ = w.finish();
                        self.toon_event("avatar-created", doid, out);
                    }
                    AfterSave::Pattern { doid } => {
                        let mut w =
                            Writer::client(&mut out.to_client, CLIENT_SET_NAME_PATTERN_ANSWER);
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
                    AfterSave::Deleted => self.toon_list(now, CLIENT_DELETE_AVATAR_RESP, out),
                    AfterSave::Nothing => {}
                }
            }
            (Pending::Created { slot }, DBSERVER_CREATE_OBJECT_RESP) => {
                let doid = r.u32()?;
                if doid == 0 {
                    let mut w = Writer::client(&mut out.to_client, CLIENT_CREATE_AVATAR_RESP);
                    w.u16(0).u8(1);
                    let _ = w.finish();
                    return Ok(true);
                }
                let rec = self.toon_mut().record.as_mut().expect("logged in");
                rec.slots[slot] = accounts::Slot {
                    doid,
                    wish_name: String::new(),
                    name_state: accounts::NAME_NONE,
                };
                self.toon_save(now, AfterSave::Created { doid }, out);
            }
            (Pending::ListFields { job, slot, doid }, DBSERVER_OBJECT_GET_FIELDS_RESP) => {
                let ok = r.u8()?;
                let mut name = None;
                let mut dna = None;
                if ok == 1 {
                    let count = r.u16()?;
                    for _ in 0..count {
                        let f = r.u16()?;
                        let n = self
                            .ca
                            .schema
                            .value_len(self.avatar_class_id(), f, r.rest_peek())
                            .map_err(|_| WireError::Truncated {
                                at: r.position(),
                                wanted: 1,
                                remaining: r.remaining(),
                            })?;
                        let v = r.take(n)?.to_vec();
                        let schema = &self.ca.schema;
                        if schema.field_name(self.avatar_class_id(), f)
                            == self.ca.toontown.name_field
                        {
                            name = Some(v);
                        } else if schema.field_name(self.avatar_class_id(), f)
                            == self.ca.toontown.dna_field
                        {
                            dna = Some(v);
                        }
                    }
                }
                let _ = doid;
                if let Some(j) = self.toon_mut().jobs.get_mut(&job) {
                    j.waiting -= 1;
                    if let (Some(n), Some(d)) = (name, dna) {
                        j.found[slot] = Some((n, d));
                    }
                    if j.waiting == 0 {
                        self.toon_list_done(job, out);
                    }
                }
            }
            (why @ Pending::OwnDetails, STATESERVER_OBJECT_GET_ALL_RESP)
            | (why @ Pending::OtherDetails { .. }, STATESERVER_OBJECT_GET_ALL_RESP) => {
                let doid = r.u32()?;
                r.u32()?;
                r.u32()?;
                let class = r.u16()?;
                let rest = r.rest();
                let mut w = Writer::client(&mut out.to_client, CLIENT_GET_AVATAR_DETAILS_RESP);
                w.u32(doid).u8(0);
                // Every required field in order, then OTHER in the client's numbering.
                if self.toon_write_sections(class, rest, true, false, &mut w) {
                    let _ = w.finish();
                } else {
                    w.abandon();
                    log::warn!("{}: details of {doid} do not parse; not sent", self.label());
                }
                if matches!(why, Pending::OwnDetails) && doid == self.toon_ref().avatar {
                    let list = self.required_friends(class, rest).unwrap_or_default();
                    self.toon_friends_set(now, list, out);
                }
            }
            (Pending::FriendFields { job, index }, DBSERVER_OBJECT_GET_FIELDS_RESP) => {
                let fields = self.read_db_fields(r);
                let (mut name, mut dna) = (None, None);
                for (f, v) in fields.unwrap_or_default() {
                    let schema = &self.ca.schema;
                    if schema.field_name(self.avatar_class_id(), f) == self.ca.toontown.name_field {
                        name = Some(v);
                    } else if schema.field_name(self.avatar_class_id(), f)
                        == self.ca.toontown.dna_field
                    {
                        dna = Some(v);
                    }
                }
                if let Some(j) = self.toon_mut().friend_jobs.get_mut(&job) {
                    j.waiting = j.waiting.saturating_sub(1);
                    if let (Some(n), Some(d), Some(e)) = (name, dna, j.found.get_mut(index)) {
                        e.1 = Some((n, d));
                    }
                    if j.waiting == 0 {
                        self.toon_friend_list_done(job, out);
                    }
                }
            }
            (Pending::Unfriend { other, me }, DBSERVER_OBJECT_GET_FIELDS_RESP) => {
                let field = self.friends_field();
                let list = self
                    .read_db_fields(r)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|(f, _)| Some(*f) == field)
                    .and_then(|(_, v)| decode_friends(&v));
                if let (Some(field), Some(mut list)) = (field, list) {
                    let n = list.len();
                    list.retain(|&(d, _)| d != me);
                    if list.len() != n {
                        // Through the DBSS: the live toon and its player, or the stored one.
                        let mut w = self.send_to(other as u64, STATESERVER_OBJECT_SET_FIELD, out);
                        w.u32(other).u16(field).bytes(&encode_friends(&list));
                        let _ = w.finish();
                    }
                }
            }
            (why, t) => {
                log::warn!(
                    "{}: unexpected {} for {why:?}",
                    self.label(),
                    internal_name(t)
                );
                r.rest();
            }
        }
        Ok(true)
    }

    /// A DBSERVER_OBJECT_GET_FIELDS_RESP's fields (after the context), or None when the
    /// object or a field was not found or the answer does not parse.
    fn read_db_fields(&self, r: &mut Reader<'_>) -> Option<Vec<(u16, Vec<u8>)>> {
        let all = r.rest();
        let mut r = Reader::new(all);
        if r.u8().ok()? != 1 {
            return None;
        }
        let count = r.u16().ok()?;
        let mut fields = Vec::new();
        for _ in 0..count {
            let f = r.u16().ok()?;
            let n = self
                .ca
                .schema
                .value_len(self.avatar_class_id(), f, r.rest_peek())
                .ok()?;
            fields.push((f, r.take(n).ok()?.to_vec()));
        }
        Some(fields)
    }

    /// The friends list among an object's `required` values (a GET_ALL answer's body after
    /// the class), when `class` is the avatar class and has the friends field.
    fn required_friends(&self, class: u16, body: &[u8]) -> Option<Vec<(u32, u8)>> {
        let field = self.friends_field()?;
        let schema = &self.ca.schema;
        let c = schema.dc().class(class)?;
        if schema.class_name(class) != self.ca.toontown.avatar_class {
            return None;
        }
        let mut at = 0;
        for &f in c.required_fields() {
            let n = schema.value_len(class, f, body.get(at..)?).ok()?;
            if f == field {
                return decode_friends(&body[at..at + n]);
            }
            at += n;
        }
        None
    }

    /// The new friends list, when a SET_FIELD(S) body sets the avatar in play's.
    fn own_friends_update(&self, msgtype: u16, body: &[u8]) -> Option<Vec<(u32, u8)>> {
        let t = self.toon_ref();
        let me = t.avatar;
        if me == 0 || t.friends.is_none() {
            return None;
        }
        let field = self.friends_field()?;
        let mut r = Reader::new(body);
        if r.u32().ok()? != me {
            return None;
        }
        let count = if msgtype == STATESERVER_OBJECT_SET_FIELDS {
            r.u16().ok()?
        } else {
            1
        };
        let mut found = None;
        for _ in 0..count {
            let f = r.u16().ok()?;
            let n = self
                .ca
                .schema
                .value_len(self.avatar_class_id(), f, r.rest_peek())
                .ok()?;
            let v = r.take(n).ok()?;
            if f == field {
                found = Some(decode_friends(v)?);
            }
        }
        found
    }

    /// Forgets what the client saw through `parent`'s `zones`, without telling it (it already
    /// dropped those objects itself), so that coming back re-sends them.
    fn close_zones_quietly(&mut self, parent: u32, zones: &[u32], out: &mut SessionOut) {
        let gone: Vec<u32> = self
            .visible
            .iter()
            .filter(|(_, o)| o.parent == parent && zones.contains(&o.zone))
            .map(|(&d, _)| d)
            .collect();
        for doid in gone {
            if self.session_objects.contains(&doid) {
                continue;
            }
            self.seen.remove(&doid);
            self.historical.insert(doid);
            self.visible.remove(&doid);
        }
        for &z in zones {
            if self.interests_seeing(parent, z) == 0 {
                out.subscriptions
                    .push(Subscription::Remove(otp_wire::channels::location_channel(
                        parent, z,
                    )));
            }
        }
    }
}

/// Reads a visibility table: one line per zone, `ZONE: ZONE ZONE ...` (`#` starts a comment).
pub fn load_visibility(path: &std::path::Path) -> Result<FxHashMap<u32, Vec<u32>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = FxHashMap::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = || {
            format!(
                "{}:{}: expected `ZONE: ZONE ZONE ...`",
                path.display(),
                n + 1
            )
        };
        let (zone, rest) = line.split_once(':').ok_or_else(bad)?;
        let zone: u32 = zone.trim().parse().map_err(|_| bad())?;
        let seen = rest
            .split_whitespace()
            .map(|z| z.parse::<u32>().map_err(|_| bad()))
            .collect::<Result<Vec<u32>, String>>()?;
        out.insert(zone, seen);
    }
    Ok(out)
}

/// Toontown's name parts (NameMasterEnglish.txt: `index*category*text` lines), for
/// CLIENT_SET_NAME_PATTERN.
#[derive(Debug, Default)]
pub struct NameParts {
    parts: FxHashMap<u16, (u8, String)>,
}

impl NameParts {
    pub fn load(path: &std::path::Path) -> Result<NameParts, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&text);
        let mut parts = FxHashMap::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut it = line.splitn(3, '*');
            let (Some(i), Some(c), Some(t)) = (it.next(), it.next(), it.next()) else {
                return Err(format!(
                    "{}:{}: not index*category*text",
                    path.display(),
                    n + 1
                ));
            };
            let (Ok(i), Ok(c)) = (i.trim().parse::<u16>(), c.trim().parse::<u8>()) else {
                return Err(format!(
                    "{}:{}: not index*category*text",
                    path.display(),
                    n + 1
                ));
            };
            parts.insert(i, (c, t.trim().to_string()));
        }
        Ok(NameParts { parts })
    }

    /// The name four (index, capitalize) pairs make: title, first name, last-name prefix and
    /// suffix (65535 = unused), or None when they break the rules.
    pub fn compose(&self, p: &[(u16, u16); 4]) -> Option<String> {
        // Categories allowed at each position.
        const ALLOWED: [&[u8]; 4] = [&[0, 1, 2], &[3, 4, 5], &[6, 7], &[8]];
        let mut words: [Option<String>; 4] = Default::default();
        for (i, &(index, cap)) in p.iter().enumerate() {
            if index == u16::MAX {
                continue;
            }
            let (cat, text) = self.parts.get(&index)?;
            if !ALLOWED[i].contains(cat) || cap > 1 {
                return None;
            }
            // The client's flag (NameShop): 1 = capital first letter (a suffix after a "Mc"
            // prefix), 0 = lower-case first letter (the first name "von" after a title; the
            // name list holds "Von").
            let mut c = text.chars();
            let t = match c.next() {
                Some(f) if cap == 1 => f.to_uppercase().collect::<String>() + c.as_str(),
                Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
                None => String::new(),
            };
            words[i] = Some(t);
        }
        // A prefix needs a suffix; at least a first or last name.
        if words[2].is_some() != words[3].is_some() {
            return None;
        }
        if words[1].is_none() && words[3].is_none() {
            return None;
        }
        let last = match (&words[2], &words[3]) {
            (Some(a), Some(b)) => Some(format!("{a}{b}")),
            _ => None,
        };
        let name = [words[0].clone(), words[1].clone(), last]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        Some(name)
    }
}

#[cfg(test)]
mod name_tests {
    use super::NameParts;

    /// The flags as the 2003 client's NameShop sends them: "Dr. von Tinkerdoodle" is the title
    /// (1), the first name "Von" with flag 0 (shown "von" after a title), the prefix (1) and
    /// the suffix with flag 0 (as written) or 1 (after a capitalising prefix such as "Mc").
    #[test]
    fn name_flags_follow_the_clients_name_shop() {
        let mut np = NameParts::default();
        for (i, c, t) in [
            (0, 0, "Dr."),
            (1, 4, "Von"),
            (2, 6, "tinker"),
            (3, 8, "doodle"),
        ] {
            np.parts.insert(i, (c, t.to_string()));
        }
        let name = np.compose(&[(0, 1), (1, 0), (2, 1), (3, 0)]).unwrap();
        assert_eq!(name, "Dr. von Tinkerdoodle");
        let name = np
            .compose(&[(u16::MAX, 1), (1, 1), (2, 1), (3, 1)])
            .unwrap();
        assert_eq!(name, "Von TinkerDoodle");
        assert!(np.compose(&[(0, 2), (1, 1), (2, 1), (3, 1)]).is_none());
    }
}
