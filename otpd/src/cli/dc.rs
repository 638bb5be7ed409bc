//! `otpd dc hash|check|fields FILE...`: the DC files as otpd reads them (otp-dc's commands).

use super::USAGE;

/// Runs `otpd dc ARGS...`; a broken DC file exits [`USAGE`] (2).
pub(super) fn command(args: Vec<String>) -> u8 {
    let code = match args.first().map(String::as_str) {
        Some("hash") => otp_dc::cli::hash_command(&args[1..]),
        Some("check") => otp_dc::cli::check_command(&args[1..]),
        Some("fields") => otp_dc::cli::fields_command(&args[1..]),
        _ => {
            eprintln!(
                "usage: otpd dc hash [--era 2003] FILE... | otpd dc check [--strict] FILE... \
                 | otpd dc fields [--era 2003] FILE...\n\
                 (each also takes --multiple-inheritance=0|1 --virtual-inheritance=0|1 \
                 --sort-inheritance-by-file=0|1)"
            );
            i32::from(USAGE)
        }
    };
    code.clamp(0, 255) as u8
}
