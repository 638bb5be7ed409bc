//! Running the cluster (`otpd --cluster FILE`, or astrond's `otpd [OPTIONS] [CONFIG.yml]`):
//! the astrond-compatible options, logging, then the configuration wired by `cluster.rs` and
//! handed to the runtime.

use super::{FAILED, HELP, OK};
use crate::cluster;
use crate::config::{self, ConfigError, RoleConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        let f = crate::private_fs::open_append(path)
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

/// Runs the cluster until it stops; an unknown option, a configuration that is invalid or
/// cannot be served exit [`FAILED`] (1), as astrond does.
pub(super) fn command(argv: impl Iterator<Item = String>) -> u8 {
    let args = match parse_args(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("otpd: {e}\n\n{HELP}");
            return FAILED;
        }
    };
    if let Err(e) = init_logging(args.loglevel.as_deref(), args.logfile.as_deref()) {
        eprintln!("otpd: {e}");
        return FAILED;
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
    // The one reading of the wall clock the ClientAgents' sessions work from.
    let clock = crate::clientagent::WallClock {
        at: std::time::Instant::now(),
        unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    };
    let config = match loaded.and_then(|c| cluster::check_config(c, clock)) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            eprintln!("otpd: {e}\notpd: Configuration file contains errors.");
            return FAILED;
        }
    };
    let cluster::Cluster {
        config,
        roles,
        client_agents,
    } = config;
    let endpoints = Endpoints::of(&config);
    let shutdown_timeout_ms = config.shutdown_timeout_ms;
    crate::runtime::signals::install();
    for warning in config.exposure_warnings() {
        log::warn!("{warning}");
    }
    let events = Arc::new(crate::eventlogger::Counters::default());
    for role in &config.roles {
        if let RoleConfig::EventLogger { .. } = role {
            let started = crate::eventlogger::Settings::from_role(role)
                .and_then(|s| crate::eventlogger::spawn(s, Arc::clone(&events)));
            if let Err(e) = started {
                log::error!("{e}");
                eprintln!("otpd: {e}");
                return FAILED;
            }
        }
    }
    match crate::runtime::Runtime::start_full(config, roles, client_agents) {
        Ok(rt) => {
            if let Err(e) = endpoints.serve(&rt.stats, events) {
                log::error!("{e}");
                eprintln!("otpd: {e}");
                return FAILED;
            }
            serve_until_stopped(&rt, Duration::from_millis(shutdown_timeout_ms))
        }
        Err(e) => {
            log::error!("{e}");
            eprintln!("otpd: {e}");
            FAILED
        }
    }
}

/// The HTTP endpoints of a cluster (the metrics endpoint, the admin API), taken from its
/// configuration before the runtime takes that.
struct Endpoints {
    metrics: Option<String>,
    metrics_limits: crate::config::HttpLimits,
    admin: Option<crate::config::AdminConfig>,
    /// What the admin API links to: this process's MD (on loopback when it listens
    /// everywhere), the Database's control channel, the EventLogger.
    md: Option<std::net::SocketAddr>,
    database: Option<u64>,
    eventlogger: Option<std::net::SocketAddr>,
    daemon: String,
    schema: Option<Arc<crate::roles::Schema>>,
}

impl Endpoints {
    fn of(config: &crate::config::ClusterConfig) -> Endpoints {
        let resolve = |a: &str| std::net::ToSocketAddrs::to_socket_addrs(a).ok()?.next();
        let md = config
            .messagedirector
            .bind
            .as_deref()
            .and_then(resolve)
            .map(|mut a| {
                if a.ip().is_unspecified() {
                    a.set_ip(if a.is_ipv4() {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    } else {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    });
                }
                a
            });
        let admin = config.admin.clone();
        let database = admin.as_ref().and_then(|a| a.database).or_else(|| {
            config.roles.iter().find_map(|r| match r {
                RoleConfig::Database { control, .. } => Some(*control),
                _ => None,
            })
        });
        Endpoints {
            metrics: config.metrics.clone(),
            metrics_limits: config.metrics_limits.clone(),
            admin,
            md,
            database,
            eventlogger: config.eventlogger.as_deref().and_then(resolve),
            daemon: config.name.clone(),
            // The admin API shows objects' fields with it (read again: the roles own theirs).
            schema: config
                .admin
                .as_ref()
                .filter(|_| !config.dc_files.is_empty())
                .and_then(|_| {
                    otp_dc::DcFile::parse_files_with(&config.dc_files, config.dc_settings.options())
                        .ok()
                })
                .map(|dc| Arc::new(crate::roles::Schema::new(dc))),
        }
    }

    /// Starts the endpoints configured, each on a thread of its own.
    fn serve(
        self,
        stats: &Arc<crate::runtime::Stats>,
        events: Arc<crate::eventlogger::Counters>,
    ) -> Result<(), String> {
        if let Some(addr) = &self.metrics {
            crate::metrics::serve(addr, &self.metrics_limits, stats.clone(), events)?;
        }
        if let Some(admin) = &self.admin {
            let context = crate::admin::Context {
                md: self.md,
                database: self.database,
                schema: self.schema,
                daemon: self.daemon,
                stats: stats.clone(),
                eventlogger: self.eventlogger,
            };
            crate::admin::serve(admin, context)?;
        }
        Ok(())
    }
}

/// Serves until a stop is asked for (SIGTERM, SIGINT, the admin API), then stops cleanly: the
/// cores eject their clients with the shutdown code and finish their work (post-removes, the
/// database's queue); once every core has been idle and nothing routed for a few checks in a
/// row, exits 0. A second request, or `timeout`, exits at once (code 1) with a log line.
fn serve_until_stopped(rt: &crate::runtime::Runtime, timeout: Duration) -> u8 {
    use crate::runtime::signals;
    const CHECK: Duration = Duration::from_millis(50);
    /// Consecutive quiet checks that make a stop clean.
    const QUIET_CHECKS: u32 = 4;
    let mut started: Option<(Instant, usize)> = None;
    let mut quiet = 0;
    let mut routed = 0;
    loop {
        std::thread::sleep(CHECK);
        if rt.finished() {
            log::error!("every core thread has ended; exiting");
            return FAILED;
        }
        let requests = signals::requests();
        let Some((since, first)) = started else {
            if requests > 0 {
                log::info!(
                    "shutdown: stopping cleanly (clients ejected, work finished) within {} ms; \
                     a second SIGTERM stops at once",
                    timeout.as_millis()
                );
                rt.begin_stop();
                started = Some((Instant::now(), requests));
            }
            continue;
        };
        if requests > first {
            log::warn!("shutdown: asked again; stopping at once");
            return FAILED;
        }
        let now_routed = rt.stats.datagrams_routed();
        if rt.all_idle() && now_routed == routed {
            quiet += 1;
            if quiet >= QUIET_CHECKS {
                log::info!(
                    "shutdown: stopped cleanly in {} ms",
                    since.elapsed().as_millis()
                );
                return OK;
            }
        } else {
            quiet = 0;
        }
        routed = now_routed;
        if since.elapsed() >= timeout {
            log::error!(
                "shutdown: not done within shutdown_timeout_ms = {} ms; exiting anyway",
                timeout.as_millis()
            );
            return FAILED;
        }
    }
}
