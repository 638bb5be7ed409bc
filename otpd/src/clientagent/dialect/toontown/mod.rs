//! The Toontown 2003 dialect: Disney's original client messages, and the work the server
//! itself does for that client (accounts and login, the avatar list, creating and naming toons,
//! the district list, activating the chosen toon, SET_ZONE). The object side (interests,
//! visibility, field checks) is the session core's; `objects` writes it in the 2003 forms. See
//! docs/toontown-2003.md for the sequence and the choices made. This module holds the dialect's
//! `State`, the `Ctx` its handlers run in, and its dispatch of client messages and of the
//! cluster's answers; the work is split by concern: `login`, `avatars`, `friends`, `zones`,
//! `districts`, `objects`.

use crate::clientagent::accounts::{self, Account};
use crate::clientagent::session::core::{refuse, Interest, Refusal, SessionCore};
use crate::clientagent::session::{JobResult, SessionJob, SessionOut, STATE_ESTABLISHED};
use crate::config::PasswordPolicy;
use crate::roles::Subscription;
use otp_wire::msgtypes::*;
use otp_wire::{Reader, WireError, Writer};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

pub use otp_wire::toontown2003::*;

mod avatars;
mod districts;
mod friends;
mod login;
mod objects;
mod zones;

use avatars::ListJob;
pub use avatars::NameParts;
pub use districts::Shards;
use friends::{decode_friends, encode_friends, FriendJob};
pub use friends::{FRIENDS_FIELD, MAX_FRIENDS};
pub use login::MAX_BAD_LOGINS;
use login::{LoginMethod, Secret};
pub use zones::load_visibility;
use zones::{MAX_HELD, ZONE_INTEREST};

/// A database or StateServer answer not back in this long ends the session (122).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Another toon's details not given in this long: "no information" (it is not in play).
const DETAILS_TIMEOUT: Duration = Duration::from_secs(2);

/// The avatar class's field holding the account's name: never shown to another player.
pub const ACCOUNT_NAME_FIELD: &str = "setAccountName";

/// The channel the player of `avatar` listens on.
pub fn puppet_channel(avatar: u32) -> u64 {
    PUPPET_CHANNEL_BASE + avatar as u64
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
    /// A new account being stored if its name is free (`password`: a CLIENT_LOGIN's).
    AccountCreated {
        password: bool,
    },
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

#[derive(Debug)]
enum AfterSave {
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

/// What a Toontown 2003 session knows beyond the session core.
#[derive(Debug, Default)]
pub(in crate::clientagent) struct State {
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

/// One 2003 session as its handlers see it: the session core (through `Deref`) and the
/// dialect's own state `t`.
pub(in crate::clientagent) struct Ctx<'a> {
    pub(super) core: &'a mut SessionCore,
    pub(super) t: &'a mut State,
}

impl Deref for Ctx<'_> {
    type Target = SessionCore;

    fn deref(&self) -> &SessionCore {
        self.core
    }
}

impl DerefMut for Ctx<'_> {
    fn deref_mut(&mut self) -> &mut SessionCore {
        self.core
    }
}

impl State {
    /// The earliest time an answer the dialect waits for is late.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|(_, at)| *at).min()
    }

    /// A client datagram held during a SET_ZONE, once it is answered.
    pub(super) fn next_held(&mut self) -> Option<Vec<u8>> {
        if !self.replay || self.zone_pending.is_some() {
            return None;
        }
        let body = self.held.pop_front();
        if body.is_none() {
            self.replay = false;
        }
        body
    }
}

impl Ctx<'_> {
    fn request(
        &mut self,
        why: Pending,
        now: Instant,
    ) -> u32 {
        let timeout = match why {
            Pending::OtherDetails { .. }
            | Pending::FriendFields { .. }
            | Pending::Unfriend { .. } => DETAILS_TIMEOUT,
            _ => REQUEST_TIMEOUT,
        };
        let t = &mut *self.t;
        t.next_ctx = t.next_ctx.wrapping_add(1).max(1);
        let ctx = t.next_ctx;
        t.pending.insert(ctx, (why, now + timeout));
        ctx
    }

    pub(in crate::clientagent::dialect) fn on_time(&mut self, now: Instant, out: &mut SessionOut) {
        // Details of a toon nobody plays now: "no information" (the client shows none).
        let unanswered: Vec<(u32, u32)> = self
            .t
            .pending
            .iter()
            .filter_map(|(&ctx, (why, at))| match why {
                Pending::OtherDetails { doid } if *at <= now => Some((ctx, *doid)),
                _ => None,
            })
            .collect();
        for (ctx, doid) in unanswered {
            self.t.pending.remove(&ctx);
            let mut w = Writer::client(&mut out.to_client, CLIENT_GET_AVATAR_DETAILS_RESP);
            w.u32(doid).u8(1);
            let _ = w.finish();
        }
        // Friends' names not read in time: the friends list fails (error 1); a former
        // friend's list not read: it keeps this toon (logged).
        {
            let t = &mut *self.t;
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
        let late = self.t.pending.values().any(|(_, at)| *at <= now);
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

    fn db(&self) -> u64 {
        self.ca.toontown.database
    }

    /// A client datagram of the 2003 dialect.
    pub(in crate::clientagent::dialect) fn on_client(
        &mut self,
        now: Instant,
        body: &[u8],
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        if self.t.zone_pending.is_some() {
            // Answer one SET_ZONE completely before the next datagram (the client relies on it).
            let t = &mut *self.t;
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
        let logged_in = self.t.account.is_some() && self.t.record.is_some();
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
            CLIENT_LOGIN_2 => return self.token_login(now, r, out),
            CLIENT_LOGIN => return self.password_login(now, r, out),
            _ if !logged_in => {
                return Err(refuse(
                    LOST_NOT_LOGGED_IN,
                    format!("Message type {msgtype} before login."),
                ))
            }
            _ => {}
        }
        match msgtype {
            CLIENT_GET_SHARD_LIST => self.shard_list(out),
            CLIENT_GET_AVATARS => self.avatar_list(now, CLIENT_GET_AVATARS_RESP, out),
            CLIENT_CREATE_AVATAR => return self.create_avatar(now, r, out),
            CLIENT_SET_NAME_PATTERN => return self.name_pattern(now, r, out),
            CLIENT_SET_WISHNAME => return self.wish_name(now, r, out),
            CLIENT_SET_WISHNAME_CLEAR => {
                let doid = r.u32()?;
                let action = r.u8()?;
                let slot = self.own_slot(doid)?;
                let rec = self.t.record.as_mut().expect("logged in");
                let s = &mut rec.slots[slot];
                s.name_state = match (action, s.name_state) {
                    (1, accounts::NAME_APPROVED) => accounts::NAME_NAMED,
                    (_, accounts::NAME_NAMED) => accounts::NAME_NAMED,
                    _ => accounts::NAME_NONE,
                };
                if s.name_state == accounts::NAME_NONE {
                    s.wish_name.clear();
                }
                self.save_account(now, AfterSave::Nothing, out);
            }
            CLIENT_DELETE_AVATAR => {
                let doid = r.u32()?;
                let slot = self.own_slot(doid)?;
                if self.t.avatar == doid {
                    return Err(refuse(
                        LOST_LOGIN_PROBLEM,
                        "Cannot delete the avatar in play.",
                    ));
                }
                self.t.record.as_mut().expect("logged in").slots[slot] =
                    accounts::Slot::default();
                let mut w = self.send_to(self.db(), DBSERVER_OBJECT_DELETE, out);
                w.u32(doid);
                let _ = w.finish();
                self.event("avatar-deleted", doid, out);
                self.save_account(now, AfterSave::Deleted, out);
            }
            CLIENT_SET_AVATAR => return self.set_avatar(now, r, out),
            CLIENT_GET_AVATAR_DETAILS => {
                let doid = r.u32()?;
                if !is_object_channel(doid) {
                    let mut w = Writer::client(&mut out.to_client, CLIENT_GET_AVATAR_DETAILS_RESP);
                    w.u32(doid).u8(1);
                    let _ = w.finish();
                    return Ok(());
                }
                let ctx = self.request(Pending::OtherDetails { doid }, now);
                let mut w = self.send_to(doid as u64, STATESERVER_OBJECT_GET_ALL, out);
                w.u32(ctx).u32(doid);
                let _ = w.finish();
            }
            CLIENT_GET_FRIEND_LIST => self.friend_list(now, out),
            CLIENT_REMOVE_FRIEND => {
                let doid = r.u32()?;
                self.remove_friend(now, doid, out);
            }
            CLIENT_GET_STATE => {
                let zone = self.t.zone_pending.unwrap_or(0);
                self.state_resp(zone, out);
            }
            CLIENT_SET_SECURITY => {
                r.blob()?;
                r.i32()?;
            }
            CLIENT_SET_SHARD => return self.set_shard(r, out),
            CLIENT_SET_ZONE => return self.set_zone(now, r, out),
            CLIENT_OBJECT_UPDATE_FIELD => return self.update_field(r, out),
            other => {
                return Err(refuse(
                    LOST_INVALID_MSGTYPE,
                    format!("Message type {other} is not valid."),
                ))
            }
        }
        Ok(())
    }

    fn event(&self, kind: &str, doid: u32, out: &mut SessionOut) {
        let account = self.t.account.clone().unwrap_or_default();
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
        let rec = self.t.record.as_ref().expect("logged in");
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

    /// The avatar class's friends field, if the DC files have one.
    /// The avatar class's id (`ANY_CLASS` if the DC files lack it; checked at start-up).
    fn avatar_class_id(&self) -> u16 {
        self.ca
            .schema
            .dc()
            .class_by_name(&self.ca.toontown.avatar_class)
            .map_or(crate::roles::ANY_CLASS, |c| c.id())
    }

    /// How a 2003 client's values are checked: the DC file, 7-bit strings unless allowed, and
    /// no string or blob over `toontown.max_string_bytes`.
    fn validate_options(
        &self,
        ascii_only: bool,
    ) -> otp_dc::ValidateOptions {
        otp_dc::ValidateOptions {
            ascii_strings_only: ascii_only,
            max_string_bytes: self.ca.toontown.max_string_bytes,
        }
    }

    /// An internal datagram for the 2003 dialect's own requests; true when handled.
    pub(in crate::clientagent::dialect) fn on_internal(
        &mut self,
        now: Instant,
        msgtype: u16,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<bool, WireError> {
        // A district up or down, from this process's directory: the client's SERVER_UP/DOWN.
        if msgtype == CLIENTAGENT_SHARD_UP || msgtype == CLIENTAGENT_SHARD_DOWN {
            let id = r.u32()?;
            if self.t.account.is_some() {
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
        if msgtype == CLIENTAGENT_TOON_ACCOUNT_TAKEN {
            let name = r.blob()?;
            r.rest();
            let mine = self.t.account.as_deref().map(str::as_bytes) == Some(name);
            if mine && self.state() == STATE_ESTABLISHED {
                self.eject(
                    refuse(
                        LOST_LOGGED_IN_ELSEWHERE,
                        "Someone else has logged in with this account.",
                    ),
                    false,
                    out,
                );
            }
            return Ok(true);
        }
        if msgtype == CLIENTAGENT_TOON_FRIEND_ONLINE {
            let online = r.u32()?;
            r.rest();
            let me = self.t.avatar;
            let listed = self
                .t
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
                self.friends_set(now, list, out);
            }
            return Ok(false);
        }
        match msgtype {
            DBSERVER_ACCOUNT_GET_RESP
            | DBSERVER_ACCOUNT_SET_RESP
            | DBSERVER_ACCOUNT_CREATE_RESP
            | DBSERVER_CREATE_OBJECT_RESP
            | DBSERVER_OBJECT_GET_FIELDS_RESP
            | STATESERVER_OBJECT_GET_ALL_RESP => {}
            _ => return Ok(false),
        }
        let ctx = r.u32()?;
        let Some((why, _)) = self.t.pending.remove(&ctx) else {
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
            (Pending::PasswordAccount { password, create }, DBSERVER_ACCOUNT_GET_RESP) => {
                let status = r.u8()?;
                let data = r.blob()?;
                self.password_account(now, status, data, &password.0, create, out);
            }
            (Pending::AccountCreated { password }, DBSERVER_ACCOUNT_CREATE_RESP) => {
                match r.u8()? {
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
                        // A token login raced another for a new account: log in to the one
                        // that won, as if it had been there.
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
                    AfterSave::Created { doid } => {
                        let mut w = Writer::client(&mut out.to_client, CLIENT_CREATE_AVATAR_RESP);
                        w.u16(0).u8(0).u32(doid);
                        let _ = w.finish();
                        self.event("avatar-created", doid, out);
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
                    AfterSave::Deleted => self.avatar_list(now, CLIENT_DELETE_AVATAR_RESP, out),
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
                let rec = self.t.record.as_mut().expect("logged in");
                rec.slots[slot] = accounts::Slot {
                    doid,
                    wish_name: String::new(),
                    name_state: accounts::NAME_NONE,
                };
                self.save_account(now, AfterSave::Created { doid }, out);
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
                if let Some(j) = self.t.jobs.get_mut(&job) {
                    j.waiting -= 1;
                    if let (Some(n), Some(d)) = (name, dna) {
                        j.found[slot] = Some((n, d));
                    }
                    if j.waiting == 0 {
                        self.avatar_list_done(job, out);
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
                let own = matches!(why, Pending::OwnDetails) || doid == self.t.avatar;
                if !own && class != self.avatar_class_id() {
                    // Details are of toons only.
                    let mut w = Writer::client(&mut out.to_client, CLIENT_GET_AVATAR_DETAILS_RESP);
                    w.u32(doid).u8(1);
                    let _ = w.finish();
                    return Ok(true);
                }
                let mut w = Writer::client(&mut out.to_client, CLIENT_GET_AVATAR_DETAILS_RESP);
                w.u32(doid).u8(0);
                // Its own toon: every required field in order, then OTHER in the client's
                // numbering. Another toon: what any viewer of it sees, the other required
                // fields at their DC defaults (the layout the client parses is the same).
                let written = if own {
                    objects::write_sections(&self.ca, class, rest, true, false, &mut w)
                } else {
                    objects::write_public_details(&self.ca, class, rest, &mut w)
                };
                if written {
                    let _ = w.finish();
                } else {
                    w.abandon();
                    log::warn!("{}: details of {doid} do not parse; not sent", self.label());
                }
                if matches!(why, Pending::OwnDetails) && doid == self.t.avatar {
                    let list = self.required_friends(class, rest).unwrap_or_default();
                    self.friends_set(now, list, out);
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
                if let Some(j) = self.t.friend_jobs.get_mut(&job) {
                    j.waiting = j.waiting.saturating_sub(1);
                    if let (Some(n), Some(d), Some(e)) = (name, dna, j.found.get_mut(index)) {
                        e.1 = Some((n, d));
                    }
                    if j.waiting == 0 {
                        self.friend_list_done(job, out);
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
    fn read_db_fields(
        &self,
        r: &mut Reader<'_>,
    ) -> Option<Vec<(u16, Vec<u8>)>> {
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
}
