//! The admin API: JSON over HTTP on its own bounded server (`crate::http`), for operators, the
//! `otpd admin` command and the web page (`page`). Every request but the page itself carries
//! the bearer token; refusals and every action are written to the EventLogger (who, what,
//! when: the audit trail). Read-only figures come from the runtime's published `Stats`.

mod auth;
mod cluster;
mod page;

use crate::config::AdminConfig;
use crate::http::{self, Answer, Handler, Request, Ticket};
use crate::roles::event::{encode, Ev};
use crate::runtime::Stats;
use serde_json::{json, Value};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub use auth::read_token;
use otp_wire::msgtypes::*;

/// The longest warning before a shutdown, seconds.
pub const MAX_SHUTDOWN_DELAY_S: u64 = 3600;

/// Warns the players as the time runs down, then asks for the stop.
fn countdown(seconds: u64, text: &str, warn: Option<&cluster::Sender>) {
    let start = std::time::Instant::now();
    let mut marks: Vec<u64> = [seconds, 60, 30, 10]
        .into_iter()
        .filter(|m| *m <= seconds && *m > 0)
        .collect();
    marks.dedup();
    for left in marks {
        let at = Duration::from_secs(seconds - left);
        std::thread::sleep(at.saturating_sub(start.elapsed()));
        if let Some(w) = warn {
            let message = format!("{text} (in {left} seconds)");
            let target = Target {
                scope: otp_wire::msgtypes::admin_scope::EVERYONE,
                id: 0,
                account: String::new(),
            };
            if let Err(e) =
                w.to_sessions(CLIENTAGENT_ADMIN_MESSAGE, &target, &message_tail(&message))
            {
                log::warn!("admin: shutdown warning not sent: {e}");
            }
        }
    }
    std::thread::sleep(Duration::from_secs(seconds).saturating_sub(start.elapsed()));
    log::info!("admin: the shutdown asked through the admin API begins");
    crate::runtime::signals::request();
}

/// Longest system message the API sends (bytes).
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// What the admin API needs of the running process.
pub struct Context {
    /// This process's MD (its participant port), which the API links to.
    pub md: Option<SocketAddr>,
    /// The Database role's control channel (bans, the name review queue), if known.
    pub database: Option<u64>,
    /// The cluster's DC schema, to show objects' fields (None: no DC files).
    pub schema: Option<Arc<crate::roles::Schema>>,
    /// This daemon's name (`name` in the configuration), reported and put in audit events.
    pub daemon: String,
    pub stats: Arc<Stats>,
    /// Where audit events go (the EventLogger's UDP address), if anywhere.
    pub eventlogger: Option<SocketAddr>,
}

/// Reads the token and serves the admin API on `config.bind` from a thread of its own.
pub fn serve(config: &AdminConfig, context: Context) -> Result<(), String> {
    let token = read_token(&config.token_file)?;
    let audit = Audit::new(context.eventlogger, context.daemon.clone());
    let (channel, gather) = (config.channel, Duration::from_millis(config.gather_ms));
    let tls = config
        .tls
        .as_ref()
        .map(|t| crate::clientagent::tls::server_config(t).map_err(|e| format!("admin.{e}")))
        .transpose()?;
    http::serve(
        &config.bind,
        &config.limits,
        http::Endpoint::Admin,
        tls,
        |completer| {
            let link = context
                .md
                .map(|md| cluster::Link::new(md, channel, gather, completer));
            Admin {
                token,
                context,
                audit,
                link,
                shutdown_asked: false,
            }
        },
    )?;
    log::info!(
        "admin: serving http://{}/ (bearer token from the token file)",
        config.bind
    );
    Ok(())
}

/// Audit events: MessagePack over UDP to the EventLogger, as the roles send theirs.
struct Audit {
    socket: Option<UdpSocket>,
    daemon: String,
}

impl Audit {
    fn new(eventlogger: Option<SocketAddr>, daemon: String) -> Audit {
        let socket = eventlogger.and_then(|to| {
            let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let s = UdpSocket::bind(bind).ok()?;
            s.connect(to).ok()?;
            Some(s)
        });
        Audit { socket, daemon }
    }

    fn record(&self, kind: &str, peer: SocketAddr, fields: &[(&str, &str)]) {
        let peer = peer.to_string();
        let mut all = vec![
            ("role", Ev::Str("admin")),
            ("daemon", Ev::Str(&self.daemon)),
            ("remote_address", Ev::Str(&peer)),
        ];
        all.extend(fields.iter().map(|(k, v)| (*k, Ev::Str(v))));
        let event = encode(kind, &all);
        match &self.socket {
            Some(s) => {
                let _ = s.send(&event);
            }
            None => log::info!("admin: {kind} from {peer}: {fields:?}"),
        }
    }
}

struct Admin {
    token: auth::Token,
    context: Context,
    audit: Audit,
    /// The link to the cluster (None: this process has no MD port to link to).
    link: Option<cluster::Link>,
    /// A shutdown has been asked for through the API.
    shutdown_asked: bool,
}

/// Which sessions an action is for (see `otp_wire::msgtypes::admin_scope`).
pub(crate) struct Target {
    scope: u8,
    id: u64,
    account: String,
}

impl Target {
    /// Reads the one target key of a request body: `everyone: true`, `district`, `avatar`,
    /// `account` or `channel`.
    fn from_json(body: &Value) -> Result<(Target, String), String> {
        use otp_wire::msgtypes::admin_scope::*;
        let mut found = Vec::new();
        if body["everyone"].as_bool() == Some(true) {
            found.push((EVERYONE, 0, String::new(), "everyone".to_string()));
        }
        for (key, scope) in [
            ("district", DISTRICT),
            ("avatar", AVATAR),
            ("channel", CHANNEL),
        ] {
            if let Some(v) = body.get(key) {
                let id = v.as_u64().ok_or(format!("'{key}' must be a number"))?;
                found.push((scope, id, String::new(), format!("{key} {id}")));
            }
        }
        if let Some(v) = body.get("account") {
            let name = v.as_str().ok_or("'account' must be a string")?;
            if name.is_empty() || name.len() > 255 {
                return Err("'account' must be 1 to 255 bytes".into());
            }
            found.push((ACCOUNT, 0, name.to_string(), format!("account {name}")));
        }
        match found.len() {
            1 => {
                let (scope, id, account, label) = found.pop().expect("one");
                Ok((Target { scope, id, account }, label))
            }
            0 => Err("name whom: everyone, district, avatar, account or channel".into()),
            _ => Err("name one of everyone, district, avatar, account or channel".into()),
        }
    }
}

fn json_answer(status: u16, body: &Value) -> Answer {
    let mut text = body.to_string();
    text.push('\n');
    Answer::new(status, "application/json", text)
}

fn error(status: u16, message: &str) -> Answer {
    json_answer(status, &json!({ "error": message }))
}

impl Handler for Admin {
    fn handle(&mut self, request: &Request, peer: SocketAddr, ticket: Ticket) -> Option<Answer> {
        if matches!(request.path.as_str(), "/" | "/index.html") {
            // The page holds no data: it asks for the token and calls the API with it.
            return Some(match request.method.as_str() {
                "GET" | "HEAD" => page::answer(),
                _ => error(405, "GET only"),
            });
        }
        if !request.path.starts_with("/api/") {
            return Some(error(
                404,
                "the admin API is under /api/ (the page is at /)",
            ));
        }
        if !self.token.admits(request.authorization.as_deref()) {
            self.audit.record(
                "admin-unauthorized",
                peer,
                &[("method", &request.method), ("path", &request.path)],
            );
            let mut a = error(
                401,
                "a valid 'Authorization: Bearer TOKEN' header is required",
            );
            a.headers
                .push(("WWW-Authenticate", "Bearer realm=\"otpd\"".into()));
            return Some(a);
        }
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/api/status") => Some(json_answer(200, &self.status())),
            ("GET", "/api/clients") => {
                let Some(link) = &self.link else {
                    return Some(no_link());
                };
                link.list_clients(ticket).err()
            }
            ("GET", "/api/names") => self.names(ticket).err(),
            ("GET", path) if path.starts_with("/api/object/") => {
                self.object(&path["/api/object/".len()..], ticket).err()
            }
            ("POST", "/api/names/review") => self.review(request, peer, ticket).err(),
            ("GET", "/api/ban") => self.get_ban(request, ticket).err(),
            ("POST", "/api/ban") => self.set_ban(request, peer, ticket).err(),
            ("POST", "/api/kick") => Some(self.kick(request, peer)),
            ("POST", "/api/shutdown") => Some(self.shutdown(request, peer)),
            ("POST", "/api/message") => Some(self.message(request, peer)),
            (_, "/api/status" | "/api/clients" | "/api/names") => Some(error(405, "GET only")),
            (_, "/api/kick" | "/api/message" | "/api/names/review" | "/api/shutdown") => {
                Some(error(405, "POST only"))
            }
            (_, "/api/ban") => Some(error(405, "GET or POST only")),
            _ => Some(error(404, "no such API")),
        }
    }
}

fn no_link() -> Answer {
    error(
        503,
        "this otpd has no MD port (messagedirector.bind) for the admin API to link to",
    )
}

/// A request's JSON body (an object).
#[allow(clippy::result_large_err)] // an Answer is the error a handler gives back
fn body_json(request: &Request) -> Result<Value, Answer> {
    match serde_json::from_slice::<Value>(&request.body) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(error(400, "the body must be a JSON object")),
    }
}

/// A query string's value for `key` (percent-decoded; `+` is a space).
fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 2;
            }
            (c, _, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A kick or ban's body, and whom it names (see `Target::from_json`).
#[allow(clippy::result_large_err)] // an Answer is the error a handler gives back
fn action_target(request: &Request) -> Result<(Value, Target, String), Answer> {
    let body = body_json(request)?;
    let (target, whom) = Target::from_json(&body).map_err(|e| error(400, &e))?;
    Ok((body, target, whom))
}

/// What follows the target in CLIENTAGENT_ADMIN_MESSAGE: the text (checked by the caller
/// against `MAX_MESSAGE_BYTES`).
fn message_tail(text: &str) -> Vec<u8> {
    debug_assert!(text.len() <= MAX_MESSAGE_BYTES);
    let mut tail = (text.len() as u16).to_le_bytes().to_vec();
    tail.extend_from_slice(text.as_bytes());
    tail
}

/// What follows the target in CLIENTAGENT_ADMIN_EJECT: a kick (not a shutdown), the reason.
fn eject_tail(reason: &str) -> Vec<u8> {
    let mut tail = vec![0u8];
    tail.extend(message_tail(reason));
    tail
}

/// The status byte of a Database answer, as the API says it.
fn db_status(status: u8, what: &str) -> Answer {
    match status {
        0 => json_answer(200, &json!({ "done": true })),
        1 => error(404, &format!("no such {what}")),
        _ => error(
            502,
            "the Database failed or refused the request (see its log)",
        ),
    }
}

/// An object's snapshot (STATESERVER_OBJECT_GET_ALL_RESP after its context) as JSON, its
/// fields decoded through the DC file.
fn object_json(
    schema: &crate::roles::Schema,
    r: &mut otp_wire::Reader<'_>,
) -> Result<Value, otp_wire::WireError> {
    use otp_wire::WireError;
    let (doid, parent, zone, class) = (r.u32()?, r.u32()?, r.u32()?, r.u16()?);
    let Some(info) = schema.class(class) else {
        return Ok(json!({ "doid": doid, "parent": parent, "zone": zone, "dclass": class }));
    };
    let mut fields = serde_json::Map::new();
    let mut one = |f: u16, r: &mut otp_wire::Reader<'_>| -> Result<(), WireError> {
        let len = schema
            .value_len(class, f, r.rest_peek())
            .map_err(|_| WireError::Truncated {
                at: 0,
                wanted: 1,
                remaining: r.remaining(),
            })?;
        let bytes = r.take(len)?;
        let value = schema
            .dc_field(class, f)
            .and_then(|field| schema.dc().to_json(field, bytes).ok())
            .unwrap_or(Value::Null);
        fields.insert(schema.field_name(class, f).to_string(), value);
        Ok(())
    };
    for &f in &info.required {
        one(f, r)?;
    }
    if !r.is_empty() {
        for _ in 0..r.u16()? {
            let f = r.u16()?;
            one(f, r)?;
        }
    }
    Ok(json!({
        "doid": doid, "parent": parent, "zone": zone,
        "dclass": schema.class_name(class), "fields": fields,
    }))
}

impl Admin {
    /// GET /api/object/DOID: the object as its StateServer (or DBSS) holds it: class,
    /// location, fields decoded to JSON. An object nobody holds is answered 504 after
    /// `answer_timeout_ms` (no one answers for it).
    fn object(&self, doid: &str, ticket: Ticket) -> Result<(), Answer> {
        let Ok(doid) = doid.parse::<u32>() else {
            return Err(error(400, "/api/object/DOID: a doid is a number"));
        };
        if doid == 0 || otp_wire::channels::is_reserved_doid(doid) {
            return Err(error(400, "not an object's doid"));
        }
        let Some(link) = &self.link else {
            return Err(no_link());
        };
        let Some(schema) = self.context.schema.clone() else {
            return Err(error(503, "no DC files to read objects with"));
        };
        link.request(
            ticket,
            u64::from(doid),
            STATESERVER_OBJECT_GET_ALL,
            |w| {
                w.u32(doid);
            },
            STATESERVER_OBJECT_GET_ALL_RESP,
            Box::new(move |r| Ok(json_answer(200, &object_json(&schema, r)?))),
        )
    }

    fn database(&self) -> Result<(&cluster::Link, u64), Answer> {
        let Some(link) = &self.link else {
            return Err(no_link());
        };
        let Some(db) = self.context.database else {
            return Err(error(
                503,
                "no Database to ask: run one in this process or set admin.database",
            ));
        };
        Ok((link, db))
    }

    /// GET /api/names: the wish names waiting for review, oldest first.
    fn names(&self, ticket: Ticket) -> Result<(), Answer> {
        let (link, db) = self.database()?;
        link.request(
            ticket,
            db,
            DBSERVER_NAMES_GET_PENDING,
            |w| {
                w.u16(MAX_PENDING_NAMES_LISTED);
            },
            DBSERVER_NAMES_GET_PENDING_RESP,
            Box::new(|r| {
                let n = r.u16()?;
                let mut names = Vec::new();
                for _ in 0..n {
                    let avatar = r.u32()?;
                    let wish = String::from_utf8_lossy(r.blob()?).into_owned();
                    let account = String::from_utf8_lossy(r.blob()?).into_owned();
                    let since = r.u64()?;
                    names.push(json!({
                        "avatar": avatar, "wish_name": wish, "account": account,
                        "typed_unix": since,
                    }));
                }
                Ok(json_answer(200, &json!({ "pending": names })))
            }),
        )
    }

    /// POST /api/names/review {"avatar": N, "approve": true|false}.
    fn review(&self, request: &Request, peer: SocketAddr, ticket: Ticket) -> Result<(), Answer> {
        let body = body_json(request)?;
        let Some(avatar) = body["avatar"].as_u64().and_then(|a| u32::try_from(a).ok()) else {
            return Err(error(400, "'avatar' (a doid) is required"));
        };
        let Some(approve) = body["approve"].as_bool() else {
            return Err(error(400, "'approve' (true or false) is required"));
        };
        let (link, db) = self.database()?;
        let verdict = if approve { "approve" } else { "reject" };
        self.audit.record(
            "admin-action",
            peer,
            &[
                ("action", "name-review"),
                ("target", &format!("avatar {avatar}")),
                ("detail", verdict),
                ("result", "asked"),
            ],
        );
        link.request(
            ticket,
            db,
            DBSERVER_NAME_REVIEW,
            |w| {
                w.u32(avatar).u8(u8::from(approve));
            },
            DBSERVER_NAME_REVIEW_RESP,
            Box::new(|r| Ok(db_status(r.u8()?, "pending name"))),
        )
    }

    /// GET /api/ban?account=NAME: the account's ban.
    fn get_ban(&self, request: &Request, ticket: Ticket) -> Result<(), Answer> {
        let Some(account) = query_value(&request.query, "account").filter(|a| !a.is_empty()) else {
            return Err(error(400, "?account=NAME is required"));
        };
        let (link, db) = self.database()?;
        link.request(
            ticket,
            db,
            DBSERVER_ACCOUNT_GET_BAN,
            |w| {
                w.string(&account);
            },
            DBSERVER_ACCOUNT_GET_BAN_RESP,
            Box::new(|r| {
                let status = r.u8()?;
                if status != 0 {
                    return Ok(db_status(status, "account"));
                }
                let until = r.u64()?;
                let reason = String::from_utf8_lossy(r.blob()?).into_owned();
                Ok(json_answer(
                    200,
                    &json!({ "banned_until_unix": until, "reason": reason }),
                ))
            }),
        )
    }

    /// POST /api/ban {"account": NAME, "until_unix": T | "hours": H | "forever": true |
    /// "lift": true, "reason": TEXT}: bans (or unbans) the account; its logins are refused
    /// until then, and its clients connected now are kicked.
    fn set_ban(&self, request: &Request, peer: SocketAddr, ticket: Ticket) -> Result<(), Answer> {
        let body = body_json(request)?;
        let Some(account) = body["account"]
            .as_str()
            .filter(|a| !a.is_empty() && a.len() <= 255)
        else {
            return Err(error(400, "'account' (1 to 255 bytes) is required"));
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let until = if body["lift"].as_bool() == Some(true) {
            0
        } else if body["forever"].as_bool() == Some(true) {
            u64::MAX
        } else if let Some(t) = body["until_unix"].as_u64() {
            t
        } else if let Some(h) = body["hours"].as_f64().filter(|h| *h > 0.0 && *h < 1e6) {
            now + (h * 3600.0) as u64
        } else {
            return Err(error(
                400,
                "say until when: until_unix, hours, forever: true, or lift: true",
            ));
        };
        let reason = body["reason"].as_str().unwrap_or("");
        if reason.len() > 512 {
            return Err(error(400, "'reason' is over 512 bytes"));
        }
        let (link, db) = self.database()?;
        let detail = if until == 0 {
            "lifted".to_string()
        } else {
            format!("until {until}: {reason}")
        };
        self.audit.record(
            "admin-action",
            peer,
            &[
                ("action", "ban"),
                ("target", &format!("account {account}")),
                ("detail", &detail),
                ("result", "asked"),
            ],
        );
        link.request(
            ticket,
            db,
            DBSERVER_ACCOUNT_SET_BAN,
            |w| {
                w.string(account).u64(until).string(reason);
            },
            DBSERVER_ACCOUNT_SET_BAN_RESP,
            Box::new(|r| Ok(db_status(r.u8()?, "account"))),
        )?;
        if until > now {
            // Its clients connected now leave too (with the kick code).
            let target = Target {
                scope: otp_wire::msgtypes::admin_scope::ACCOUNT,
                id: 0,
                account: account.to_string(),
            };
            let text = if reason.is_empty() { "Banned." } else { reason };
            let _ = link.to_sessions(CLIENTAGENT_ADMIN_EJECT, &target, &eject_tail(text));
        }
        Ok(())
    }

    /// POST /api/shutdown {"in_s": N, "message": TEXT}: warns every player of the tree
    /// (system messages at N s, then 60, 30 and 10 s before), then stops this otpd cleanly
    /// (as SIGTERM does).
    fn shutdown(&mut self, request: &Request, peer: SocketAddr) -> Answer {
        let body = match body_json(request) {
            Ok(b) => b,
            Err(a) => return a,
        };
        let seconds = body["in_s"].as_u64().unwrap_or(0);
        if seconds > MAX_SHUTDOWN_DELAY_S {
            return error(400, &format!("'in_s' is over {MAX_SHUTDOWN_DELAY_S}"));
        }
        let text = body["message"]
            .as_str()
            .unwrap_or("The server is restarting.")
            .to_string();
        if text.len() > MAX_MESSAGE_BYTES - 64 {
            return error(400, "'message' is too long");
        }
        if self.shutdown_asked {
            return error(409, "a shutdown is already under way");
        }
        self.shutdown_asked = true;
        self.audit.record(
            "admin-action",
            peer,
            &[
                ("action", "shutdown"),
                ("target", "this otpd"),
                ("detail", &format!("in {seconds} s: {text}")),
                ("result", "started"),
            ],
        );
        let warn = self.link.as_ref().map(|l| l.sender());
        let spawned = std::thread::Builder::new()
            .name("otpd-admin-shutdown".into())
            .spawn(move || countdown(seconds, &text, warn.as_ref()));
        if let Err(e) = spawned {
            return error(500, &format!("cannot start the countdown: {e}"));
        }
        json_answer(202, &json!({ "shutdown_in_s": seconds }))
    }

    /// POST /api/kick {target, "reason"}: the sessions named are ejected with their
    /// dialect's kick code, on every ClientAgent of the tree.
    fn kick(&self, request: &Request, peer: SocketAddr) -> Answer {
        let (body, target, whom) = match action_target(request) {
            Ok(t) => t,
            Err(a) => return a,
        };
        let reason = body["reason"].as_str().unwrap_or("Kicked by an operator.");
        if reason.len() > MAX_MESSAGE_BYTES {
            return error(400, &format!("'reason' is over {MAX_MESSAGE_BYTES} bytes"));
        }
        let tail = eject_tail(reason);
        self.act(
            peer,
            "kick",
            &whom,
            reason,
            CLIENTAGENT_ADMIN_EJECT,
            &target,
            &tail,
        )
    }

    /// POST /api/message {target, "text"}: the sessions named show `text` as a system
    /// message.
    fn message(&self, request: &Request, peer: SocketAddr) -> Answer {
        let (body, target, whom) = match action_target(request) {
            Ok(t) => t,
            Err(a) => return a,
        };
        let Some(text) = body["text"].as_str().filter(|t| !t.is_empty()) else {
            return error(400, "'text' (a non-empty string) is required");
        };
        if text.len() > MAX_MESSAGE_BYTES {
            return error(400, &format!("'text' is over {MAX_MESSAGE_BYTES} bytes"));
        }
        let tail = message_tail(text);
        self.act(
            peer,
            "message",
            &whom,
            text,
            CLIENTAGENT_ADMIN_MESSAGE,
            &target,
            &tail,
        )
    }

    /// Sends an action to the sessions, audits it, and answers 202 (sent; the sessions act on
    /// their own ClientAgents).
    #[allow(clippy::too_many_arguments)]
    fn act(
        &self,
        peer: SocketAddr,
        action: &str,
        whom: &str,
        detail: &str,
        msgtype: u16,
        target: &Target,
        tail: &[u8],
    ) -> Answer {
        let Some(link) = &self.link else {
            return no_link();
        };
        let result = link.to_sessions(msgtype, target, tail);
        let outcome = match &result {
            Ok(()) => "sent".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        self.audit.record(
            "admin-action",
            peer,
            &[
                ("action", action),
                ("target", whom),
                ("detail", detail),
                ("result", &outcome),
            ],
        );
        match result {
            Ok(()) => json_answer(
                202,
                &json!({ "sent": true, "action": action, "target": whom }),
            ),
            Err(e) => error(502, &e),
        }
    }

    /// This process's figures: participants, child MDs, upstream, clients per listener,
    /// roles, EventLogger.
    fn status(&self) -> Value {
        let stats = &self.context.stats;
        let children: Vec<Value> = stats
            .child_mds
            .list()
            .into_iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "address": c.address.to_string(),
                    "since_unix_ms": c.since_ms,
                    "last_heard_unix_ms": c.last_heard_ms,
                    "subscriptions": c.subscriptions,
                    "post_removes": c.post_removes,
                    "links": c.links,
                })
            })
            .collect();
        let listeners: Vec<Value> = stats
            .client_agents
            .iter()
            .map(|ca| {
                let n = |i: usize| ca.stats.by_state[i].load(Ordering::Relaxed);
                json!({
                    "bind": ca.bind,
                    "dialect": format!("{:?}", ca.dialect),
                    "clients": { "new": n(0), "anonymous": n(1), "established": n(2) },
                    "connections": ca.stats.connections.load(Ordering::Relaxed),
                })
            })
            .collect();
        let mut roles = serde_json::Map::new();
        for core in &stats.per_core {
            for (role, metric, value) in core.roles.lock().iter() {
                let entry = roles.entry(role.to_string()).or_insert_with(|| json!({}));
                let slot = &mut entry[metric.to_string()];
                *slot = json!(slot.as_u64().unwrap_or(0) + *value);
            }
        }
        json!({
            "daemon": self.context.daemon,
            "cores": stats.per_core.len(),
            "messagedirector": {
                "participants": stats.participants.load(Ordering::Relaxed),
                "datagrams_routed": stats.datagrams_routed(),
                "deliveries": stats.deliveries(),
                "client_deliveries": stats.client_writes().0,
                "client_socket_writes": stats.client_writes().1,
                "upstream_connected": stats.upstream_connected.load(Ordering::Relaxed),
                "child_mds": children,
            },
            "listeners": listeners,
            "roles": roles,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            super::query_value("a=1&account=Mr%20Toon+2", "account").as_deref(),
            Some("Mr Toon 2")
        );
        assert_eq!(
            super::query_value("account=%zz%4", "account").as_deref(),
            Some("%zz%4")
        );
        assert_eq!(
            super::query_value("account=%C3%A9", "account").as_deref(),
            Some("é")
        );
        assert_eq!(super::query_value("x=1", "account"), None);
    }
}
