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

mod admin;
pub(in crate::clientagent) use admin::{LOST_KICKED, LOST_SHUTDOWN};
mod avatars;
mod districts;
pub mod dna;
mod friends;
mod login;
mod objects;
mod senders;
mod zones;

use avatars::ListJob;
pub use avatars::NameParts;
pub use districts::Shards;
use friends::FriendJob;
pub use friends::{FRIENDS_FIELD, MAX_FRIENDS};
pub use login::MAX_BAD_LOGINS;
use login::{LoginMethod, Secret};
use senders::P2pTarget;
pub use senders::{avatar_id_args, AvatarIdArgs, LOST_SECURITY};
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
    /// The account read again before an avatar list answered with `msgtype` (the operator
    /// may have reviewed a name since it was read).
    Refresh {
        msgtype: u16,
    },
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
    /// An avatar's name and DNA, for avatar list `job`, account slot `slot`.
    ListFields {
        job: u32,
        slot: usize,
    },
    /// A new avatar being made in `slot` (DBSERVER_ACCOUNT_CREATE_AVATAR).
    Created {
        slot: usize,
    },
    /// Avatar `doid` being deleted from `slot` (DBSERVER_ACCOUNT_DELETE_AVATAR).
    AvatarDeleted {
        slot: usize,
        doid: u32,
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
    Pattern {
        doid: u32,
    },
    Wish {
        doid: u32,
        pending: String,
        approved: String,
        rejected: String,
    },
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
    /// The zone of the avatar's last SET_ZONE (what the admin API shows).
    zone: u32,
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
    /// p2p targets of the last second and their counts (at most `senders::MAX_P2P_TARGETS`).
    p2p_targets: Vec<P2pTarget>,
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

    /// The sender channel of the client's own field updates when it is not the session's
    /// channel (the avatar's puppet channel): the cluster's echoes of them are not news.
    pub(super) fn own_sender(&self) -> Option<u64> {
        (self.avatar != 0).then(|| puppet_channel(self.avatar))
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
    fn request(&mut self, why: Pending, now: Instant) -> u32 {
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
                Ok(())
            }
            CLIENT_DISCONNECT_2003 => {
                self.client_disconnect(out);
                Ok(())
            }
            CLIENT_LOGIN_2 => self.token_login(now, r, out),
            CLIENT_LOGIN => self.password_login(now, r, out),
            _ if !logged_in => Err(refuse(
                LOST_NOT_LOGGED_IN,
                format!("Message type {msgtype} before login."),
            )),
            _ => self.play_message(now, msgtype, r, out),
        }
    }

    /// A client datagram after login (`msgtype` read).
    fn play_message(
        &mut self,
        now: Instant,
        msgtype: u16,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        match msgtype {
            CLIENT_GET_SHARD_LIST => self.shard_list(out),
            CLIENT_GET_AVATARS => self.refresh_then_list(now, CLIENT_GET_AVATARS_RESP, out),
            CLIENT_CREATE_AVATAR => return self.create_avatar(now, r, out),
            CLIENT_SET_NAME_PATTERN => return self.name_pattern(now, r, out),
            CLIENT_SET_WISHNAME => return self.wish_name(now, r, out),
            CLIENT_SET_WISHNAME_CLEAR => return self.wish_name_clear(now, r, out),
            CLIENT_DELETE_AVATAR => return self.delete_avatar(now, r, out),
            CLIENT_SET_AVATAR => return self.set_avatar(now, r, out),
            CLIENT_GET_AVATAR_DETAILS => {
                let doid = r.u32()?;
                self.ask_details(now, doid, out);
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
            CLIENT_OBJECT_UPDATE_FIELD => return self.update_field(now, r, out),
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
    fn validate_options(&self, ascii_only: bool) -> otp_dc::ValidateOptions {
        otp_dc::ValidateOptions {
            ascii_strings_only: ascii_only,
            max_string_bytes: self.ca.toontown.max_string_bytes,
        }
    }

    /// An internal datagram for the 2003 dialect's own messages and requests; true when
    /// handled, false when the session core handles it.
    pub(in crate::clientagent::dialect) fn on_internal(
        &mut self,
        now: Instant,
        msgtype: u16,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<bool, WireError> {
        match msgtype {
            CLIENTAGENT_SHARD_UP | CLIENTAGENT_SHARD_DOWN => self.district_news(msgtype, r, out)?,
            CLIENTAGENT_TOON_ACCOUNT_TAKEN => self.account_taken(r, out)?,
            CLIENTAGENT_TOON_FRIEND_ONLINE => self.friend_online(r, out)?,
            STATESERVER_OBJECT_SET_FIELD | STATESERVER_OBJECT_SET_FIELDS => {
                // The avatar's own friends list changed (an AI's FriendManager, or a former
                // friend's REMOVE_FRIEND): keep it; the update goes on to the client as usual.
                if let Some(list) = self.own_friends_update(msgtype, r.rest_peek()) {
                    self.friends_set(now, list, out);
                }
                return Ok(false);
            }
            DBSERVER_ACCOUNT_GET_RESP
            | DBSERVER_ACCOUNT_SET_RESP
            | DBSERVER_ACCOUNT_CREATE_RESP
            | DBSERVER_ACCOUNT_CREATE_AVATAR_RESP
            | DBSERVER_ACCOUNT_DELETE_AVATAR_RESP
            | DBSERVER_OBJECT_GET_FIELDS_RESP
            | STATESERVER_OBJECT_GET_ALL_RESP => return self.answer(now, msgtype, r, out),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The answer to one of the dialect's requests (by its context); false for a GET_ALL
    /// answer that is not the dialect's (the core may be waiting for it).
    fn answer(
        &mut self,
        now: Instant,
        msgtype: u16,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<bool, WireError> {
        let ctx = r.u32()?;
        let Some((why, _)) = self.t.pending.remove(&ctx) else {
            r.rest();
            return Ok(msgtype != STATESERVER_OBJECT_GET_ALL_RESP);
        };
        match (why, msgtype) {
            (Pending::Account, DBSERVER_ACCOUNT_GET_RESP) => {
                let status = r.u8()?;
                let data = r.blob()?;
                self.token_account(now, status, data, out);
            }
            (Pending::Refresh { msgtype }, DBSERVER_ACCOUNT_GET_RESP) => {
                let status = r.u8()?;
                let data = r.blob()?;
                self.refreshed(now, msgtype, status, data, out);
            }
            (Pending::PasswordAccount { password, create }, DBSERVER_ACCOUNT_GET_RESP) => {
                let status = r.u8()?;
                let data = r.blob()?;
                self.password_account(now, status, data, &password.0, create, out);
            }
            (Pending::AccountCreated { password }, DBSERVER_ACCOUNT_CREATE_RESP) => {
                let status = r.u8()?;
                self.account_created(now, status, password, out);
            }
            (Pending::SaveThen(then), DBSERVER_ACCOUNT_SET_RESP) => {
                let status = r.u8()?;
                self.account_saved(status, then, out);
            }
            (Pending::Created { slot }, DBSERVER_ACCOUNT_CREATE_AVATAR_RESP) => {
                let doid = r.u32()?;
                self.avatar_created(slot, doid, out);
            }
            (Pending::AvatarDeleted { slot, doid }, DBSERVER_ACCOUNT_DELETE_AVATAR_RESP) => {
                let status = r.u8()?;
                self.avatar_deleted(now, slot, doid, status, out);
            }
            (Pending::ListFields { job, slot }, DBSERVER_OBJECT_GET_FIELDS_RESP) => {
                let found = self.read_db_fields(r).and_then(|f| self.name_dna(&f));
                self.avatar_list_entry(job, slot, found, out);
            }
            (
                why @ (Pending::OwnDetails | Pending::OtherDetails { .. }),
                STATESERVER_OBJECT_GET_ALL_RESP,
            ) => {
                let own = matches!(why, Pending::OwnDetails);
                self.details(now, own, r, out)?;
            }
            (Pending::FriendFields { job, index }, DBSERVER_OBJECT_GET_FIELDS_RESP) => {
                let found = self.read_db_fields(r).and_then(|f| self.name_dna(&f));
                self.friend_list_entry(job, index, found, out);
            }
            (Pending::Unfriend { other, me }, DBSERVER_OBJECT_GET_FIELDS_RESP) => {
                let fields = self.read_db_fields(r).unwrap_or_default();
                self.unfriend(other, me, fields, out);
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

    /// CLIENTAGENT_TOON_ACCOUNT_TAKEN: a newer login to this session's account ends it.
    fn account_taken(&mut self, r: &mut Reader<'_>, out: &mut SessionOut) -> Result<(), WireError> {
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
        Ok(())
    }

    /// A toon's details (a GET_ALL answer after the context): GET_AVATAR_DETAILS_RESP. `own`:
    /// asked for by SET_AVATAR (the avatar in play, whose friends list comes with it).
    fn details(
        &mut self,
        now: Instant,
        own: bool,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), WireError> {
        let doid = r.u32()?;
        r.u32()?;
        r.u32()?;
        let class = r.u16()?;
        let rest = r.rest();
        let mine = own || doid == self.t.avatar;
        let mut w = Writer::client(&mut out.to_client, CLIENT_GET_AVATAR_DETAILS_RESP);
        if !mine && class != self.avatar_class_id() {
            // Details are of toons only.
            w.u32(doid).u8(1);
            let _ = w.finish();
            return Ok(());
        }
        w.u32(doid).u8(0);
        // Its own toon: every required field in order, then OTHER in the client's
        // numbering. Another toon: what any viewer of it sees, the other required
        // fields at their DC defaults (the layout the client parses is the same).
        let written = if mine {
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
        if own && doid == self.t.avatar {
            let list = self.required_friends(class, rest).unwrap_or_default();
            self.friends_set(now, list, out);
        }
        Ok(())
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
}
