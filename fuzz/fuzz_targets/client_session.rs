//! Any bytes as a script of client datagrams, server messages and time for one ClientAgent
//! session (see `otp_testkit::client_fuzz`): the session must never panic, its output must stay
//! well-formed, nothing may follow its end, and closing it must leak nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    otp_testkit::client_fuzz::run(data);
});
