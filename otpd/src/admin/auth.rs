//! The admin API's bearer token: read once from its file, compared in constant time.

use crate::config::ADMIN_TOKEN_MIN;
use std::path::Path;

/// The token every admin request must carry.
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed, not even in a test failure.
        f.write_str("Token(..)")
    }
}

/// Reads the token file: its text without surrounding white space, at least
/// [`ADMIN_TOKEN_MIN`] characters, printable ASCII.
pub fn read_token(path: &Path) -> Result<Token, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("admin.token_file: cannot read {}: {e}", path.display()))?;
    let token = text.trim();
    if token.len() < ADMIN_TOKEN_MIN {
        return Err(format!(
            "admin.token_file: {} holds {} characters; a token needs at least {ADMIN_TOKEN_MIN} \
             (e.g. `openssl rand -hex 32 > {}`)",
            path.display(),
            token.len(),
            path.display()
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "admin.token_file: {}: the token must be printable ASCII without spaces",
            path.display()
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.mode() & 0o077 != 0 {
                log::warn!(
                    "admin.token_file: {} can be read by other users (mode {:o}); chmod 600 it",
                    path.display(),
                    meta.mode() & 0o777
                );
            }
        }
    }
    Ok(Token(token.as_bytes().to_vec()))
}

impl Token {
    /// True when `authorization` (the header's value) is `Bearer` and this token. The bytes
    /// are compared in time that does not depend on where they differ.
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some((scheme, given)) = value.split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let given = given.trim().as_bytes();
        if given.len() != self.0.len() {
            return false;
        }
        let diff = given
            .iter()
            .zip(&self.0)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_checked_and_compared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "short\n").unwrap();
        assert!(read_token(&path).unwrap_err().contains("at least 32"));
        std::fs::write(&path, "a b c d e f g h i j k l m n o p q r s\n").unwrap();
        assert!(read_token(&path).is_err());
        let secret = "0123456789abcdef0123456789abcdef";
        std::fs::write(&path, format!("  {secret}\n")).unwrap();
        let token = read_token(&path).unwrap();
        assert!(token.admits(Some(&format!("Bearer {secret}"))));
        assert!(token.admits(Some(&format!("bearer {secret}"))));
        assert!(!token.admits(Some(&format!("Basic {secret}"))));
        assert!(!token.admits(Some("Bearer 0123456789abcdef0123456789abcdee")));
        assert!(!token.admits(Some(&format!("Bearer {secret}0"))));
        assert!(!token.admits(Some("Bearer")));
        assert!(!token.admits(None));
        assert!(read_token(&dir.path().join("missing"))
            .unwrap_err()
            .contains("admin.token_file"));
    }
}
