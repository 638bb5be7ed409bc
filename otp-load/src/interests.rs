//! `otp-load interests`: what one interest change costs a ClientAgent session, with few or
//! many other interests open (the session driven in-process by `otp_testkit::interest_bench`).

pub(crate) const USAGE: &str = "\
    otp-load interests [--zones Z] [--open N,N,...] [--changes C]

interests: one ClientAgent session (in this process, no server) opens N interests of Z zones
(default 1024) under one parent, then moves one of them C times (default 200) between two sets
of Z zones, each answered at once with no objects; prints the time per change for each N
(default 1,16,256). A change should cost the zones it names, whatever else is open.
";

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let (mut zones, mut open, mut changes) = (1024u16, vec![1u16, 16, 256], 200u32);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--zones" => zones = value()?.parse().map_err(|e| format!("--zones: {e}"))?,
            "--changes" => changes = value()?.parse().map_err(|e| format!("--changes: {e}"))?,
            "--open" => {
                open = value()?
                    .split(',')
                    .map(|n| n.parse().map_err(|e| format!("--open: {e}")))
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown option {other}\n\n{USAGE}")),
        }
    }
    for n in open {
        let f = otp_testkit::interest_bench::run(n, zones, changes)?;
        println!(
            "{} interests of {} zones open: opened in {:.1} ms; one change of {} zones: {:.1} us (mean of {})",
            f.interests,
            f.zones,
            f.open_all.as_secs_f64() * 1e3,
            f.zones,
            f.per_change.as_secs_f64() * 1e6,
            f.changes
        );
    }
    Ok(())
}
