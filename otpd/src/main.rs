//! The `otpd` command line: runs a cluster from `cluster.ron` (`--cluster`) or from an astrond
//! YAML file (astrond's own command line), and hosts the operator tools (`otpd dc ...`).

use otpd::config::DatabaseBackend;
use otpd::config::{self, ClusterConfig, ConfigError, RoleConfig};
use otpd::roles::database::Database;
use otpd::roles::dbss::Dbss;
use otpd::roles::stateserver::StateServer;
use otpd::roles::store;
use otpd::roles::{Placement, Role, Worker};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

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

struct Args {
    cluster: Option<PathBuf>,
    yaml: Option<PathBuf>,
    loglevel: Option<String>,
    logfile: Option<PathBuf>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        cluster: None,
        yaml: None,
        loglevel: None,
        logfile: None,
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-c" | "--cluster" => a.cluster = Some(value(&arg)?.into()),
            "-l" | "--loglevel" => a.loglevel = Some(value(&arg)?),
            "-L" | "--log" => a.logfile = Some(value(&arg)?.into()),
            "-p" | "--pretty" | "-b" | "--boring" => {}
            s if s.starts_with("--cluster=") => a.cluster = Some(s["--cluster=".len()..].into()),
            s if s.starts_with("--loglevel=") => a.loglevel = Some(s["--loglevel=".len()..].into()),
            s if s.starts_with("--log=") => a.logfile = Some(s["--log=".len()..].into()),
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option {s}")),
            s => {
                if a.yaml.is_some() {
                    eprintln!("otpd: only one configuration file is read; ignoring {s}");
                } else {
                    a.yaml = Some(s.into());
                }
            }
        }
    }
    Ok(a)
}

fn init_logging(level: Option<&str>, file: Option<&Path>) -> Result<(), String> {
    let filter = match level.map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("packet") | Some("trace") => Some(log::LevelFilter::Trace),
        Some("debug") => Some(log::LevelFilter::Debug),
        Some("info") => Some(log::LevelFilter::Info),
        Some("warning") | Some("warn") | Some("security") => Some(log::LevelFilter::Warn),
        Some("error") | Some("fatal") => Some(log::LevelFilter::Error),
        Some(other) => return Err(format!("unknown log level {other:?}")),
    };
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(f) = filter {
        b.filter_level(f);
    }
    if let Some(path) = file {
        // The log names accounts and addresses: a new file is 0600.
        let f = otpd::private_fs::open_append(path)
            .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
        b.target(env_logger::Target::Pipe(Box::new(Tee(f))));
    }
    b.init();
    Ok(())
}

/// Every client and participant is a socket: lift the soft limit on open files to the hard one.
fn raise_open_file_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                log::debug!("open files: soft limit raised to {}", lim.rlim_max);
            }
        }
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            log::info!("open files: at most {} at once", lim.rlim_cur);
        }
    }
}

/// Writes the log to a file and to standard error.
struct Tee(std::fs::File);

impl std::io::Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        self.0.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1).peekable();
    match argv.peek().map(String::as_str) {
        Some("dc") => {
            argv.next();
            return dc_command(argv.collect());
        }
        Some("status") => {
            argv.next();
            let code = otpd::metrics::status_command(argv.collect());
            return ExitCode::from(code.clamp(0, 255) as u8);
        }
        Some("account") => {
            argv.next();
            let code = otpd::clientagent::accounts::token_command(argv.collect());
            return ExitCode::from(code.clamp(0, 255) as u8);
        }
        Some("db") => {
            argv.next();
            let code = otpd::dbtool::db_command(argv.collect());
            return ExitCode::from(code.clamp(0, 255) as u8);
        }
        Some("-h") | Some("--help") => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Some("-v") | Some("--version") => {
            println!(
                "otpd {} ({} {}; 16-bit length tags, 64-bit channels; roles: messagedirector, stateserver, dbss, database, eventlogger)",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH
            );
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let args = match parse_args(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("otpd: {e}\n\n{HELP}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = init_logging(args.loglevel.as_deref(), args.logfile.as_deref()) {
        eprintln!("otpd: {e}");
        return ExitCode::from(1);
    }
    raise_open_file_limit();
    let loaded = match (&args.cluster, &args.yaml) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            "otpd",
            "give either --cluster FILE or a YAML file, not both",
        )),
        (Some(ron), None) => config::ron_file::load(ron),
        (None, yaml) => {
            let path = yaml.clone().unwrap_or_else(|| PathBuf::from("astrond.yml"));
            config::astron::load(&path)
        }
    };
    let config = match loaded.and_then(check_config) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            eprintln!("otpd: {e}\notpd: Configuration file contains errors.");
            return ExitCode::from(1);
        }
    };
    let (config, roles, client_agents) = config;
    let metrics = config.metrics.clone();
    let metrics_limits = config.metrics_limits.clone();
    for warning in config.exposure_warnings() {
        log::warn!("{warning}");
    }
    let events = Arc::new(otpd::eventlogger::Counters::default());
    for role in &config.roles {
        if let RoleConfig::EventLogger { .. } = role {
            let started = otpd::eventlogger::Settings::from_role(role)
                .and_then(|s| otpd::eventlogger::spawn(s, Arc::clone(&events)));
            if let Err(e) = started {
                log::error!("{e}");
                eprintln!("otpd: {e}");
                return ExitCode::from(1);
            }
        }
    }
    match otpd::runtime::Runtime::start_full(config, roles, client_agents) {
        Ok(rt) => {
            if let Some(addr) = &metrics {
                if let Err(e) =
                    otpd::metrics::serve(addr, &metrics_limits, rt.stats.clone(), events)
                {
                    log::error!("{e}");
                    eprintln!("otpd: {e}");
                    return ExitCode::from(1);
                }
            }
            rt.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            eprintln!("otpd: {e}");
            ExitCode::from(1)
        }
    }
}

/// Checks what needs more than the file itself: the DC files, UberDOG classes, and roles
/// this build can run; builds the roles each core hosts.
fn check_config(
    config: ClusterConfig,
) -> Result<(ClusterConfig, RoleFactory, ClientAgents), ConfigError> {
    let dc = otpd::dcload::check_dc_and_uberdogs(&config)?;
    let schema = dc.map(|dc| Arc::new(otpd::roles::Schema::new(dc)));
    for role in &config.roles {
        match role {
            RoleConfig::StateServer { .. }
            | RoleConfig::Dbss { .. }
            | RoleConfig::Database { .. } => {
                if schema.is_none() {
                    return Err(ConfigError::new(
                        "dc_files",
                        format!(
                            "the {} role needs the DC files (dc_files is empty)",
                            role.kind()
                        ),
                    ));
                }
            }
            RoleConfig::EventLogger { .. } => {}
            RoleConfig::ClientAgent(_) => {
                if schema.is_none() {
                    return Err(ConfigError::new(
                        "dc_files",
                        "the clientagent role needs the DC files (dc_files is empty)",
                    ));
                }
            }
        }
    }
    let mut client_agents = Vec::new();
    let shards: otpd::roles::shards::Shards = Default::default();
    let mut shard_channels: Vec<u64> = Vec::new();
    for role in &config.roles {
        if let RoleConfig::ClientAgent(ca) = role {
            let schema = Arc::clone(schema.as_ref().expect("checked above"));
            if ca.dialect == otpd::config::Dialect::Toontown2003
                && !shard_channels.contains(&ca.toontown.shard_channel)
            {
                shard_channels.push(ca.toontown.shard_channel);
            }
            let agent = otpd::clientagent::ClientAgent::new(
                client_agents.len(),
                ca,
                schema,
                &config.uberdogs,
                shards.clone(),
                // The one reading of the wall clock sessions work from.
                otpd::clientagent::WallClock {
                    at: std::time::Instant::now(),
                    unix: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default(),
                },
            )
            .map_err(|e| ConfigError::new("clientagent", e))?;
            client_agents.push(Arc::new(agent));
        }
    }
    // Database stores are opened now, so that a file that cannot be used stops otpd at once.
    let mut stores = Vec::new();
    for role in &config.roles {
        if let RoleConfig::Database {
            generate, backend, ..
        } = role
        {
            let schema = Arc::clone(schema.as_ref().expect("checked above"));
            let store: Box<dyn Worker> = match backend {
                DatabaseBackend::Sqlite { directory } => Box::new(
                    store::sqlite::open(directory, schema, generate.min, generate.max)
                        .map_err(|e| ConfigError::new("database", e.to_string()))?,
                ),
                DatabaseBackend::Postgres {
                    address,
                    database,
                    username,
                    password,
                } => Box::new(
                    store::postgres::open(
                        address,
                        database,
                        username,
                        password,
                        schema,
                        generate.min,
                        generate.max,
                    )
                    .map_err(|e| ConfigError::new("database", e.to_string()))?,
                ),
            };
            stores.push(parking_lot::Mutex::new(Some(store)));
        }
    }
    let roles = config.roles.clone();
    let factory: RoleFactory = Box::new(move |p: Placement| {
        let mut next_store = 0;
        let mut v: Vec<Box<dyn Role>> = Vec::new();
        if p.core == 0 && !shard_channels.is_empty() {
            v.push(Box::new(otpd::roles::shards::ShardDirectory::new(
                shard_channels.clone(),
                shards.clone(),
            )));
        }
        for role in &roles {
            // Every role but the EventLogger needs the schema; checked above.
            let Some(schema) = schema.as_ref().map(Arc::clone) else {
                continue;
            };
            match role {
                RoleConfig::StateServer { control } => {
                    v.push(Box::new(StateServer::new(*control, schema, p)));
                }
                RoleConfig::Dbss {
                    database,
                    ranges,
                    limits,
                } => {
                    let ranges = ranges.iter().map(|r| (r.min, r.max)).collect();
                    v.push(Box::new(Dbss::new(*database, ranges, *limits, schema, p)));
                }
                RoleConfig::Database {
                    control,
                    broadcast,
                    max_batch,
                    max_queued,
                    ..
                } => {
                    // One instance, on core 0: it owns the doid counter and the store.
                    let store = &stores[next_store];
                    next_store += 1;
                    if p.core == 0 {
                        let store = store.lock().take().expect("core 0 starts once");
                        let limits = otpd::roles::WorkerLimits {
                            queue: *max_queued,
                            batch: *max_batch,
                        };
                        v.push(Box::new(
                            Database::new(
                                *control,
                                *broadcast,
                                schema,
                                store,
                                std::time::Instant::now(),
                            )
                            .with_limits(limits),
                        ));
                    }
                }
                RoleConfig::EventLogger { .. } => {} // its own thread, started by main
                RoleConfig::ClientAgent(_) => {}     // served by the runtime's client listeners
            }
        }
        v
    });
    Ok((config, factory, client_agents))
}

type ClientAgents = Vec<Arc<otpd::clientagent::ClientAgent>>;

type RoleFactory = Box<dyn Fn(Placement) -> Vec<Box<dyn Role>> + Send + Sync>;

fn dc_command(args: Vec<String>) -> ExitCode {
    otpd::dcload::dc_command(args)
}
