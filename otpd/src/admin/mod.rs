//! The admin API: JSON over HTTP on its own bounded server (`crate::http`), for operators and
//! the `otpd admin` command. Every request but the page itself carries the bearer token;
//! refusals and every action are written to the EventLogger (who, what, when: the audit
//! trail). Read-only figures come from the runtime's published `Stats`.

mod auth;

use crate::config::AdminConfig;
use crate::http::{self, Answer, Completer, Handler, Request, Ticket};
use crate::roles::event::{encode, Ev};
use crate::runtime::Stats;
use serde_json::{json, Value};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub use auth::read_token;

/// What the admin API needs of the running process.
pub struct Context {
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
    http::serve(
        &config.bind,
        &config.limits,
        http::Endpoint::Admin,
        |completer| Admin {
            token,
            context,
            audit,
            _completer: completer,
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
    /// For answers the cluster gives later.
    _completer: Completer,
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
    fn handle(&mut self, request: &Request, peer: SocketAddr, _ticket: Ticket) -> Option<Answer> {
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
        Some(match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/api/status") => json_answer(200, &self.status()),
            (_, "/api/status") => error(405, "GET only"),
            _ => error(404, "no such API"),
        })
    }
}

impl Admin {
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
