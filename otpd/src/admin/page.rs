//! The operator's web page (GET / and /index.html): one self-contained HTML file compiled into
//! the binary, served without the token (it holds no data: it asks for the token and calls the
//! API with it). Its Content-Security-Policy admits only its own inline script and style (by
//! their SHA-256 hashes) and requests to this origin.

use crate::http::Answer;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// The page (HTML, CSS and JavaScript inline; nothing fetched from elsewhere).
pub(super) const PAGE: &str = include_str!("page.html");

/// The page's answer to GET (and HEAD).
pub(super) fn answer() -> Answer {
    let mut a = Answer::new(200, "text/html; charset=utf-8", PAGE);
    a.headers.extend([
        ("Content-Security-Policy", csp().to_string()),
        ("X-Frame-Options", "DENY".to_string()),
        ("X-Content-Type-Options", "nosniff".to_string()),
        ("Referrer-Policy", "no-referrer".to_string()),
        ("Cache-Control", "no-store".to_string()),
    ]);
    a
}

/// `default-src 'self'` (the API's fetches), the page's one `<script>` and one `<style>`
/// admitted by hash (no other inline code runs: no event handler attribute, no injected
/// script), no plugins, no `<base>`, no form posts elsewhere, never framed.
pub(super) fn csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'self'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
             object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash_of(inline(PAGE, "script")),
            hash_of(inline(PAGE, "style")),
        )
    })
}

/// The text between `<TAG>` and `</TAG>` (the page has one of each, without attributes).
fn inline<'a>(page: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    page.split_once(open.as_str())
        .and_then(|(_, rest)| rest.split_once(close.as_str()))
        .map_or("", |(text, _)| text)
}

/// Base64 of the SHA-256 of `text`, as a CSP hash source says it.
fn hash_of(text: &str) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(44);
    for chunk in digest.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_csp_hashes_are_base64_sha256() {
        // echo -n abc | sha256sum | xxd -r -p | base64
        assert_eq!(
            super::hash_of("abc"),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        assert_eq!(super::inline("a<style>x</style>b", "style"), "x");
        let csp = super::csp();
        assert!(
            csp.starts_with("default-src 'self'; script-src 'sha256-"),
            "{csp}"
        );
        assert!(!super::inline(super::PAGE, "script").is_empty());
        assert!(!super::inline(super::PAGE, "style").is_empty());
        // One script and one style: a second would not be admitted by the hashes.
        assert_eq!(super::PAGE.matches("<script").count(), 1);
        assert_eq!(super::PAGE.matches("<style").count(), 1);
    }
}
