//! Any bytes as a script of 2003 client datagrams, server answers and time for one Toontown
//! 2003 ClientAgent session (see `otp_testkit::toontown_fuzz`): the session must never
//! panic, its output must stay well-formed and within the 2003 protocol, nothing may follow
//! its end, and closing it must leak nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    otp_testkit::toontown_fuzz::run_toontown(data);
});
