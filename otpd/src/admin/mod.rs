//! The admin API: JSON over HTTP on its own bounded server (`crate::http`), for operators and
//! the `otpd admin` command. Every request but the page itself carries the bearer token;
//! refusals and every action are written to the EventLogger (who, what, when: the audit
//! trail). Read-only figures come from the runtime's published `Stats`.

mod auth;
mod cluster;

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
use otp_wire::msgtypes::{CLIENTAGENT_ADMIN_EJECT, CLIENTAGENT_ADMIN_MESSAGE};

/// Longest system message the API sends (bytes).
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// What the admin API needs of the running process.
pub struct Context {
    /// This process's MD (its participant port), which the API links to.
    pub md: Option<SocketAddr>,
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
    http::serve(
        &config.bind,
        &config.limits,
        http::Endpoint::Admin,
        |completer| {
            let link = context
                .md
                .map(|md| cluster::Link::new(md, channel, gather, completer));
            Admin {
                token,
                context,
                audit,
                link,
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
        if !request.path.starts_with("/api/") {
            return Some(error(404, "the admin API is under /api/"));
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
            ("POST", "/api/kick") => Some(self.kick(request, peer)),
            ("POST", "/api/message") => Some(self.message(request, peer)),
            (_, "/api/status" | "/api/clients") => Some(error(405, "GET only")),
            (_, "/api/kick" | "/api/message") => Some(error(405, "POST only")),
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
fn body_json(request: &Request) -> Result<Value, Answer> {
    match serde_json::from_slice::<Value>(&request.body) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(error(400, "the body must be a JSON object")),
    }
}

impl Admin {
    /// POST /api/kick {target, "reason"}: the sessions named are ejected with their
    /// dialect's kick code, on every ClientAgent of the tree.
    fn kick(&self, request: &Request, peer: SocketAddr) -> Answer {
        let body = match body_json(request) {
            Ok(b) => b,
            Err(a) => return a,
        };
        let (target, whom) = match Target::from_json(&body) {
            Ok(t) => t,
            Err(e) => return error(400, &e),
        };
        let reason = body["reason"].as_str().unwrap_or("Kicked by an operator.");
        let mut tail = Vec::new();
        tail.push(0u8);
        tail.extend_from_slice(&(reason.len().min(1024) as u16).to_le_bytes());
        tail.extend_from_slice(&reason.as_bytes()[..reason.len().min(1024)]);
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
        let body = match body_json(request) {
            Ok(b) => b,
            Err(a) => return a,
        };
        let (target, whom) = match Target::from_json(&body) {
            Ok(t) => t,
            Err(e) => return error(400, &e),
        };
        let Some(text) = body["text"].as_str().filter(|t| !t.is_empty()) else {
            return error(400, "'text' (a non-empty string) is required");
        };
        if text.len() > MAX_MESSAGE_BYTES {
            return error(400, &format!("'text' is over {MAX_MESSAGE_BYTES} bytes"));
        }
        let mut tail = (text.len() as u16).to_le_bytes().to_vec();
        tail.extend_from_slice(text.as_bytes());
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
                "upstream_connected": stats.upstream_connected.load(Ordering::Relaxed),
                "child_mds": children,
            },
            "listeners": listeners,
            "roles": roles,
        })
    }
}
