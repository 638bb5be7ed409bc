//! `otpd account token ...`: a signed play token for a Toontown 2003 listener (the token
//! format and its check live in `clientagent/accounts.rs`).

use crate::clientagent::accounts::{sign, valid_name};
use crate::config::TokenPolicy;

/// `otpd account token NAME [--hours H] (--cluster FILE | --secret-file FILE | --secret S)`:
/// prints a signed token. The secret must be as long as a listener accepts
/// (`MIN_TOKEN_SECRET_BYTES`).
pub(super) fn command(args: Vec<String>) -> u8 {
    let usage = "usage: otpd account token NAME [--hours H] (--cluster FILE | --secret-file FILE | --secret SECRET)";
    let mut it = args.into_iter();
    if it.next().as_deref() != Some("token") {
        eprintln!("{usage}");
        return 2;
    }
    let (mut name, mut hours, mut cluster, mut secret, mut secret_file) =
        (None, 24u64, None, None, None);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--hours" => match it.next().and_then(|h| h.parse().ok()) {
                Some(h) => hours = h,
                None => {
                    eprintln!("--hours needs a number\n{usage}");
                    return 2;
                }
            },
            "--cluster" | "-c" => cluster = it.next(),
            "--secret" => secret = it.next(),
            "--secret-file" => secret_file = it.next(),
            s if name.is_none() && !s.starts_with('-') => name = Some(s.to_string()),
            other => {
                eprintln!("unknown argument {other}\n{usage}");
                return 2;
            }
        }
    }
    let Some(name) = name else {
        eprintln!("{usage}");
        return 2;
    };
    if !valid_name(&name) {
        eprintln!("otpd account: {name:?} is not a valid account name (1-64 printable characters, no ':')");
        return 2;
    }
    let secret = match (secret, secret_file, cluster) {
        (Some(s), None, None) => s,
        (None, Some(file), None) => match std::fs::read_to_string(&file) {
            Ok(mut s) => {
                while s.ends_with(['\n', '\r']) {
                    s.pop();
                }
                s
            }
            Err(e) => {
                eprintln!("otpd account: {file}: {e}");
                return 1;
            }
        },
        (None, None, Some(path)) => {
            let config = match crate::config::ron_file::load(std::path::Path::new(&path)) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("otpd account: {e}");
                    return 1;
                }
            };
            let found = config.roles.iter().find_map(|r| match r {
                crate::config::RoleConfig::ClientAgent(ca) => match &ca.toontown.tokens {
                    TokenPolicy::Signed { secret, .. } => Some(secret.clone()),
                    TokenPolicy::Open => None,
                },
                _ => None,
            });
            match found {
                Some(s) => s,
                None => {
                    eprintln!(
                        "otpd account: no ClientAgent in {path} has tokens: Signed(secret_file: ...)"
                    );
                    return 1;
                }
            }
        }
        _ => {
            eprintln!("{usage}");
            return 2;
        }
    };
    if secret.len() < crate::config::MIN_TOKEN_SECRET_BYTES {
        eprintln!(
            "otpd account: the secret is {} bytes; listeners require at least {} (make one with `openssl rand -hex 32`)",
            secret.len(),
            crate::config::MIN_TOKEN_SECRET_BYTES
        );
        return 2;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!("{}", sign(&secret, &name, now + hours * 3600));
    0
}
