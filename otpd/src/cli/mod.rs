//! The `otpd` command line: one file per subcommand (`run` the cluster, `dc`, `db`, `status`,
//! `account`, `admin`), dispatched from here; `main.rs` only calls [`main`].
//!
//! Exit codes, the same for every subcommand:
//! * 0 ([`OK`]): done (the cluster stopped cleanly, the command did what was asked);
//! * 1 ([`FAILED`]): what was asked could not be done: a configuration that is invalid or
//!   cannot be served, an address, a store or a remote otpd that fails, an import line that is
//!   refused. The cluster's own command line (astrond's) also exits 1 on an unknown option, as
//!   astrond does;
//! * 2 ([`USAGE`]): an operator tool was asked wrongly: a missing or unknown argument, or an
//!   input file it was given that cannot be read as what it should be (a broken DC file).

mod account;
mod admin;
mod db;
mod dc;
mod run;
mod status;

use std::process::ExitCode;

/// Done.
pub const OK: u8 = 0;
/// What was asked could not be done.
pub const FAILED: u8 = 1;
/// An operator tool was asked wrongly.
pub const USAGE: u8 = 2;

const HELP: &str = "\
otpd: an OTP server cluster (MessageDirector, roles) in one binary

USAGE:
    otpd --cluster FILE            run the cluster described by a cluster.ron file
    otpd [OPTIONS] [CONFIG.yml]    run from an astrond YAML file (default ./astrond.yml)
    otpd dc hash FILE...           print the DC hash of the files, read in order
    otpd dc check FILE...          summarise the DC files, or report their first error
    otpd db dump DOID (--cluster FILE | CONFIG.yml)     print one stored object as JSON
    otpd db export [OUT] (--cluster FILE | CONFIG.yml)  every stored object and account, one JSON line each
    otpd db import [IN] (--cluster FILE | CONFIG.yml)   add objects from such lines
    otpd status HOST:PORT          one-screen summary from a running otpd's metrics address
    otpd admin HOST:PORT COMMAND [--json] [--token-file FILE]
                                   the admin API (`otpd admin --help` lists the commands)
    otpd account token NAME [--hours H] (--cluster FILE | --secret-file FILE | --secret S)
                                   print a signed play token for a Toontown 2003 listener

OPTIONS:
    -c, --cluster FILE     otpd's own configuration (RON)
    -l, --loglevel LEVEL   packet, trace, debug, info, warning, security, error or fatal
    -L, --log FILE         write the log to FILE as well as to standard error
    -p, --pretty, -b, --boring
                           accepted for astrond compatibility (no effect)
    -h, --help             this text
    -v, --version          version and build facts
";

/// The whole command line: `otpd ARGS...`.
pub fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1).peekable();
    let code = match argv.peek().map(String::as_str) {
        Some("dc") => dc::command(argv.skip(1).collect()),
        Some("status") => status::command(argv.skip(1).collect()),
        Some("admin") => admin::command(argv.skip(1).collect()),
        Some("account") => account::command(argv.skip(1).collect()),
        Some("db") => db::command(argv.skip(1).collect()),
        Some("-h") | Some("--help") => {
            print!("{HELP}");
            OK
        }
        Some("-v") | Some("--version") => {
            println!(
                "otpd {} ({} {}; 16-bit length tags, 64-bit channels; roles: messagedirector, stateserver, dbss, database, eventlogger)",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH
            );
            OK
        }
        _ => run::command(argv),
    };
    ExitCode::from(code)
}
