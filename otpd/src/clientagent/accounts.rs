//! Accounts of the Toontown 2003 dialect: play tokens (open, or signed with an HMAC and an
//! expiry by `otpd account token`), the account record kept by the Database role (avatar
//! slots and their wish names, and a password hash for CLIENT_LOGIN), and the channel that
//! makes one login per account.

use crate::config::TokenPolicy;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Longest account name.
pub const MAX_NAME: usize = 64;

/// A name is 1-64 printable ASCII characters without `:`, and not one of the names of
/// Astron-dialect accounts (`#` and digits: `roles::account::astron_account_id`), which share
/// the Database's accounts table for their bans.
pub fn valid_name(name: &str) -> bool {
    crate::roles::account::astron_account_id(name).is_none()
        && !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b':')
}

fn mac(secret: &str, message: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(message.as_bytes());
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A signed play token: `v1:NAME:EXPIRY:MAC`, MAC = hex HMAC-SHA256(secret, "v1:NAME:EXPIRY").
pub fn sign(secret: &str, name: &str, expires_unix: u64) -> String {
    let body = format!("v1:{name}:{expires_unix}");
    let m = mac(secret, &body);
    format!("{body}:{m}")
}

/// The account a play token opens, or why it does not.
pub fn verify(policy: &TokenPolicy, token: &str, now_unix: u64) -> Result<String, &'static str> {
    match policy {
        TokenPolicy::Open => {
            if valid_name(token) {
                Ok(token.to_string())
            } else {
                Err("the play token is not a valid account name")
            }
        }
        TokenPolicy::Signed { secret, .. } => {
            let parts: Vec<&str> = token.split(':').collect();
            let [v, name, expiry, m] = parts[..] else {
                return Err("malformed play token");
            };
            if v != "v1" || !valid_name(name) {
                return Err("malformed play token");
            }
            let Ok(expiry) = expiry.parse::<u64>() else {
                return Err("malformed play token");
            };
            let want = mac(secret, &format!("v1:{name}:{expiry}"));
            // Compare without an early exit.
            let same = want.len() == m.len()
                && want
                    .bytes()
                    .zip(m.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            if !same {
                return Err("the play token's signature does not match");
            }
            if expiry < now_unix {
                return Err("the play token has expired");
            }
            Ok(name.to_string())
        }
    }
}

/// The channel every session of an account listens on: a new login sends its eject there.
pub fn account_channel(name: &str) -> u64 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    (1000u64 << 32) | h as u64
}

pub use crate::roles::account::{
    Account, Slot, BAN_FOREVER, MAX_BAN_REASON, NAME_APPROVED, NAME_NAMED, NAME_NONE, NAME_PENDING,
    NAME_REJECTED,
};

/// Argon2id costs of a new password hash (OWASP's minimum: 19 MiB, 2 passes, 1 lane; about
/// 20-40 ms of one core). A stored hash keeps its own costs, so these may rise later.
pub const PASSWORD_M_COST_KIB: u32 = 19 * 1024;
pub const PASSWORD_T_COST: u32 = 2;
pub const PASSWORD_P_COST: u32 = 1;
/// A stored hash asking for more than this much memory is not computed (a bad import).
const PASSWORD_MAX_M_COST_KIB: u32 = 256 * 1024;
const PASSWORD_MAX_T_COST: u32 = 16;
/// Longest password hashed (the 2003 client's entry field is far shorter).
pub const MAX_PASSWORD: usize = 256;

/// Argon2 computations done by this process (hashes made and checked, dummy checks
/// included): `otpd_password_hashes_total`.
pub static PASSWORD_HASHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn argon2_hasher() -> argon2::Argon2<'static> {
    PASSWORD_HASHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let params = argon2::Params::new(PASSWORD_M_COST_KIB, PASSWORD_T_COST, PASSWORD_P_COST, None)
        .expect("valid Argon2 costs");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// A salted Argon2id hash of `password` in the PHC string format (`$argon2id$v=19$...`),
/// the salt from the operating system's random source.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    use argon2::PasswordHasher;
    if password.len() > MAX_PASSWORD {
        return Err("the password is too long".into());
    }
    argon2_hasher()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| format!("password hashing failed: {e}"))
}

/// Whether `password` matches a hash made by `hash_password` (compared in constant time;
/// the costs are the hash's own, within sane bounds).
pub fn check_password(password: &[u8], hash: &str) -> bool {
    use argon2::PasswordVerifier;
    if password.len() > MAX_PASSWORD {
        return false;
    }
    let Ok(parsed) = argon2::PasswordHash::new(hash) else {
        return false;
    };
    match argon2::Params::try_from(&parsed) {
        Ok(p) if p.m_cost() <= PASSWORD_MAX_M_COST_KIB && p.t_cost() <= PASSWORD_MAX_T_COST => {}
        _ => return false,
    }
    argon2_hasher().verify_password(password, &parsed).is_ok()
}

/// A hash no password matches in practice, with the costs of a new hash: a login of an account
/// that does not exist (or has no password) is checked against it, so that it costs the same
/// time as a wrong password and cannot be told apart (issue 17, item 11).
pub const DUMMY_PASSWORD_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$b3RwZC1kdW1teS1zYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Checks `password` against `DUMMY_PASSWORD_HASH` (one full hash), and says no.
pub fn check_dummy_password(password: &[u8]) -> bool {
    let _ = check_password(password, DUMMY_PASSWORD_HASH);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_sign_and_verify() {
        const SECRET: &str = "0123456789abcdef0123456789abcdef";
        let p = TokenPolicy::Signed {
            secret: SECRET.into(),
            secret_file: None,
        };
        let t = sign(SECRET, "flippy", 2000);
        assert_eq!(verify(&p, &t, 1000), Ok("flippy".into()));
        assert!(verify(&p, &t, 3000).is_err(), "expired");
        assert!(verify(&p, &t.replace("flippy", "floppy"), 1000).is_err());
        assert!(verify(&p, &sign("other", "flippy", 2000), 1000).is_err());
        assert!(verify(&p, "garbage", 1000).is_err());
        assert_eq!(verify(&TokenPolicy::Open, "dev", 0), Ok("dev".into()));
        assert!(verify(&TokenPolicy::Open, "", 0).is_err());
        assert!(verify(&TokenPolicy::Open, "a:b", 0).is_err());
    }

    #[test]
    fn passwords_hash_and_check() {
        let t = std::time::Instant::now();
        let h = hash_password(b"hunter2").unwrap();
        let took = t.elapsed();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_ne!(h, hash_password(b"hunter2").unwrap(), "salted");
        assert!(check_password(b"hunter2", &h));
        assert!(!check_password(b"hunter3", &h));
        assert!(!check_password(b"", &h));
        assert!(!check_password(b"hunter2", "garbage"));
        assert!(!check_password(b"hunter2", ""));
        // Costs beyond the bounds are refused rather than computed.
        let big = h.replace("m=19456", "m=4000000");
        assert!(!check_password(b"hunter2", &big));
        eprintln!("one password hash: {took:?}");
        // The dummy hash is computed in full, at the costs of a real one.
        let before = PASSWORD_HASHES.load(std::sync::atomic::Ordering::Relaxed);
        assert!(!check_dummy_password(b"hunter2"));
        assert!(PASSWORD_HASHES.load(std::sync::atomic::Ordering::Relaxed) > before);
        let parsed = argon2::PasswordHash::new(DUMMY_PASSWORD_HASH).unwrap();
        let p = argon2::Params::try_from(&parsed).unwrap();
        assert_eq!(
            (p.m_cost(), p.t_cost(), p.p_cost()),
            (PASSWORD_M_COST_KIB, PASSWORD_T_COST, PASSWORD_P_COST)
        );
    }
}
