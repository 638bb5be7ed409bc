//! `otpd account token ...`: a signed play token for a Toontown 2003 listener. The command
//! itself lives beside the token format in `clientagent/accounts.rs` (TODO(lead): move its
//! argument handling here after the dialect step).

/// Runs `otpd account ARGS...`; see the module doc of `cli` for the exit codes.
pub(super) fn command(args: Vec<String>) -> u8 {
    crate::clientagent::accounts::token_command(args).clamp(0, 255) as u8
}
