//! `otpd admin ADDRESS COMMAND`: the admin API from the command line, for operators and
//! scripts. The token comes from `--token-file FILE` or the `OTPD_ADMIN_TOKEN` environment
//! variable; `--json` prints the API's own answer.

use super::{FAILED, OK, USAGE};
use serde_json::Value;
use std::io::{Read, Write};
use std::time::Duration;

const USAGE_TEXT: &str = "\
usage: otpd admin HOST:PORT COMMAND [ARGS] [--json] [--token-file FILE]
  (the token: --token-file FILE, else the OTPD_ADMIN_TOKEN environment variable)
commands:
  status                 this otpd's figures: participants, child MDs, listeners, roles
  clients                every client of the MD tree: state, account, avatar, district, zone
  kick WHOM [--reason TEXT]
                         eject the clients named, with their dialect's kick code
  message WHOM --text TEXT
                         show the clients named a system message
  names                  the wish names waiting for review
  approve AVATAR | reject AVATAR
                         a verdict on a pending name
  ban --account NAME (--hours H | --until UNIX | --forever) [--reason TEXT]
  unban --account NAME
  shutdown [--in SECONDS] [--message TEXT]
                         warn every player, then stop this otpd cleanly
WHOM: --everyone | --district ID | --avatar ID | --account NAME | --channel ID";

/// A command line read: the address, the command, `--json`, the token file, the request body.
struct Asked {
    addr: String,
    command: String,
    json: bool,
    token_file: Option<String>,
    body: serde_json::Map<String, Value>,
}

/// Reads the arguments; Err: the exit code to return now (help printed, or a usage error).
fn read_args(args: Vec<String>) -> Result<Asked, u8> {
    let mut json = false;
    let mut token_file = None;
    let mut words = Vec::new();
    let mut body = serde_json::Map::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "-h" | "--help" => {
                println!("{USAGE_TEXT}");
                return Err(OK);
            }
            "--everyone" | "--forever" => {
                body.insert(a[2..].into(), Value::Bool(true));
            }
            "--token-file" | "--reason" | "--text" | "--account" | "--district" | "--avatar"
            | "--channel" | "--hours" | "--until" | "--in" | "--message" => {
                let Some(v) = it.next() else {
                    return Err(usage(&format!("{a} needs a value")));
                };
                let key = &a[2..];
                let value = match key {
                    "token-file" => {
                        token_file = Some(v);
                        continue;
                    }
                    "district" | "avatar" | "channel" | "until" | "in" | "hours" => {
                        match v.parse::<u64>() {
                            Ok(n) => Value::from(n),
                            Err(_) => return Err(usage(&format!("{a} needs a number, not '{v}'"))),
                        }
                    }
                    _ => Value::String(v),
                };
                body.insert(key.into(), value);
            }
            _ => words.push(a),
        }
    }
    let (addr, command) = match words.as_slice() {
        [addr, command] => (addr.clone(), command.clone()),
        [addr, command, avatar] if command == "approve" || command == "reject" => {
            let Ok(avatar) = avatar.parse::<u64>() else {
                return Err(usage(&format!(
                    "{command} needs an avatar id, not '{avatar}'"
                )));
            };
            body.insert("avatar".into(), Value::from(avatar));
            body.insert("approve".into(), Value::Bool(command == "approve"));
            (addr.clone(), command.clone())
        }
        _ => return Err(usage("an address and one command are needed")),
    };
    // The API's names for what the command line calls them.
    for (from, to) in [("until", "until_unix"), ("in", "in_s")] {
        if let Some(v) = body.remove(from) {
            body.insert(to.into(), v);
        }
    }
    if command == "unban" {
        body.insert("lift".into(), Value::Bool(true));
    }
    Ok(Asked {
        addr,
        command,
        json,
        token_file,
        body,
    })
}

/// Runs one admin command; exits [`FAILED`] when the API refuses or cannot be reached.
pub(super) fn command(args: Vec<String>) -> u8 {
    let Asked {
        addr,
        command,
        json,
        token_file,
        body,
    } = match read_args(args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let token = match token_file {
        Some(f) => match std::fs::read_to_string(&f) {
            Ok(t) => t.trim().to_string(),
            Err(e) => return usage(&format!("cannot read --token-file {f}: {e}")),
        },
        None => match std::env::var("OTPD_ADMIN_TOKEN") {
            Ok(t) => t.trim().to_string(),
            Err(_) => return usage("no token: give --token-file FILE or set OTPD_ADMIN_TOKEN"),
        },
    };
    let (method, path) = match command.as_str() {
        "status" => ("GET", "/api/status"),
        "clients" => ("GET", "/api/clients"),
        "kick" => ("POST", "/api/kick"),
        "message" => ("POST", "/api/message"),
        "names" => ("GET", "/api/names"),
        "approve" | "reject" => ("POST", "/api/names/review"),
        "ban" | "unban" => ("POST", "/api/ban"),
        "shutdown" => ("POST", "/api/shutdown"),
        other => return usage(&format!("unknown command '{other}'")),
    };
    let body = (method == "POST").then(|| Value::Object(body).to_string());
    match request(&addr, method, path, &token, body.as_deref()) {
        Ok((200 | 202, answer)) => {
            if json {
                println!("{answer}");
            } else {
                match command.as_str() {
                    "status" => print!("{}", summarize(&answer)),
                    "clients" => print!("{}", client_table(&answer)),
                    "names" => print!("{}", name_table(&answer)),
                    _ => println!("{command}: sent"),
                }
            }
            OK
        }
        Ok((status, body)) => {
            let why = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(body);
            eprintln!("otpd admin: {addr}: {status}: {why}");
            FAILED
        }
        Err(e) => {
            eprintln!("otpd admin: {addr}: {e}");
            FAILED
        }
    }
}

fn usage(why: &str) -> u8 {
    eprintln!("otpd admin: {why}\n{USAGE_TEXT}");
    USAGE
}

/// One HTTP/1.0 request; the status and the body.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let (head, body) = resp.split_once("\r\n\r\n").ok_or("not an HTTP answer")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("not an HTTP answer")?;
    Ok((status, body.to_string()))
}

/// `status` for people.
fn summarize(body: &str) -> String {
    use std::fmt::Write as _;
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return body.to_string();
    };
    let mut out = String::new();
    let md = &v["messagedirector"];
    let _ = writeln!(
        out,
        "{}: {} cores, {} participants, upstream {}",
        v["daemon"].as_str().unwrap_or("otpd"),
        v["cores"],
        md["participants"],
        if md["upstream_connected"].as_bool() == Some(true) {
            "connected"
        } else {
            "not connected / none"
        }
    );
    for c in md["child_mds"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  child MD {} at {}: {} subscriptions, {} post-removes, {} links",
            c["name"].as_str().unwrap_or(""),
            c["address"].as_str().unwrap_or(""),
            c["subscriptions"],
            c["post_removes"],
            c["links"]
        );
    }
    for l in v["listeners"].as_array().into_iter().flatten() {
        let c = &l["clients"];
        let _ = writeln!(
            out,
            "  listener {} ({}): {} new, {} anonymous, {} established",
            l["bind"].as_str().unwrap_or(""),
            l["dialect"].as_str().unwrap_or(""),
            c["new"],
            c["anonymous"],
            c["established"]
        );
    }
    if let Some(roles) = v["roles"].as_object() {
        for (role, figures) in roles {
            let _ = writeln!(out, "  {role}: {figures}");
        }
    }
    out
}

/// `clients` for people: one line per client, then the districts' populations.
fn client_table(body: &str) -> String {
    use std::fmt::Write as _;
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return body.to_string();
    };
    let mut out = String::new();
    let rows = v["clients"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "{} clients", rows.len());
    for r in &rows {
        let _ = writeln!(
            out,
            "  {:>20} {:<12} {:<11} account={} avatar={} district={} zone={} from {} (listener {})",
            r["channel"],
            r["dialect"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["account"].as_str().unwrap_or(""),
            r["avatar"],
            r["district"],
            r["zone"],
            r["address"].as_str().unwrap_or(""),
            r["listener"].as_str().unwrap_or("")
        );
    }
    for d in v["districts"].as_array().into_iter().flatten() {
        let zones: Vec<String> = d["zones"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|z| format!("{}:{}", z["zone"], z["players"]))
            .collect();
        let _ = writeln!(
            out,
            "  district {}: {} players (zone:players {})",
            d["district"],
            d["population"],
            zones.join(" ")
        );
    }
    out
}

/// `names` for people.
fn name_table(body: &str) -> String {
    use std::fmt::Write as _;
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return body.to_string();
    };
    let rows = v["pending"].as_array().cloned().unwrap_or_default();
    let mut out = format!("{} names waiting\n", rows.len());
    for r in &rows {
        let _ = writeln!(
            out,
            "  avatar {} ({}): {:?} typed at {}",
            r["avatar"],
            r["account"].as_str().unwrap_or(""),
            r["wish_name"].as_str().unwrap_or(""),
            r["typed_unix"]
        );
    }
    out
}
