//! The `otpd` binary: the command line lives in the library (`otpd/src/cli/`).

fn main() -> std::process::ExitCode {
    otpd::cli::main()
}
