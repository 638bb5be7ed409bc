//! The cluster's wiring: from a checked configuration to what the runtime hosts: the DC files
//! and UberDOG classes checked, the ClientAgent listeners built, the Database stores opened,
//! and the roles each core hosts.

use crate::clientagent::{ClientAgent, WallClock};
use crate::config::{ClusterConfig, ConfigError, DatabaseBackend, RoleConfig};
use crate::roles::database::Database;
use crate::roles::dbss::Dbss;
use crate::roles::stateserver::StateServer;
use crate::roles::{store, Placement, Role, Worker};
use std::sync::Arc;
use std::time::Instant;

/// Loads the DC files (if any) and checks that every UberDOG's class exists in them.
pub fn check_dc_and_uberdogs(
    config: &ClusterConfig,
) -> Result<Option<otp_dc::DcFile>, ConfigError> {
    if config.dc_files.is_empty() {
        if let Some(u) = config.uberdogs.first() {
            return Err(ConfigError::new(
                "uberdogs",
                format!(
                    "UberDOG {} has class '{}' but no dc_files are configured",
                    u.id, u.class
                ),
            ));
        }
        return Ok(None);
    }
    let dc = otp_dc::DcFile::parse_files_with(&config.dc_files, config.dc_settings.options())
        .map_err(|e| ConfigError::new("dc_files", e.to_string()))?;
    for u in &config.uberdogs {
        if dc.class_by_name(&u.class).is_none() {
            return Err(ConfigError::new(
                "uberdogs",
                format!(
                    "UberDOG {} has class '{}', which is not in the DC files",
                    u.id, u.class
                ),
            ));
        }
    }
    log::info!(
        "dc: {} files loaded, hash 0x{:08x}, fields numbered {}",
        config.dc_files.len(),
        dc.hash(),
        if dc.global_numbering() {
            "file-wide"
        } else {
            "per class (the 2003 rule)"
        }
    );
    Ok(Some(dc))
}

/// A cluster ready to start: its configuration, the roles each core hosts, and the
/// ClientAgent listeners.
pub struct Cluster {
    pub config: ClusterConfig,
    pub roles: RoleFactory,
    pub client_agents: ClientAgents,
}

/// Checks what needs more than the file itself: the DC files, UberDOG classes, and roles
/// this build can run; builds the roles each core hosts. `clock` is the one reading of the
/// wall clock the ClientAgents' sessions work from (the command line reads it; a test hands
/// in a fake one).
pub fn check_config(config: ClusterConfig, clock: WallClock) -> Result<Cluster, ConfigError> {
    let dc = check_dc_and_uberdogs(&config)?;
    let schema = dc.map(|dc| Arc::new(crate::roles::Schema::new(dc)));
    let schema = match schema {
        Some(s) => s,
        None => {
            // Every role but the EventLogger needs the schema.
            if let Some(role) = config
                .roles
                .iter()
                .find(|r| !matches!(r, RoleConfig::EventLogger { .. }))
            {
                return Err(ConfigError::new(
                    "dc_files",
                    format!(
                        "the {} role needs the DC files (dc_files is empty)",
                        role.kind()
                    ),
                ));
            }
            return Ok(Cluster {
                config,
                roles: Box::new(|_, _| Vec::new()),
                client_agents: Vec::new(),
            });
        }
    };
    let shards = crate::roles::shards::Shards::default();
    let (client_agents, shard_channels) = client_agents(&config, &schema, &shards, clock)?;
    let stores = open_stores(&config, &schema)?;
    let roles = role_factory(config.roles.clone(), schema, stores, shards, shard_channels);
    Ok(Cluster {
        config,
        roles,
        client_agents,
    })
}

/// The ClientAgent listeners, and the channels 2003 districts are announced on.
fn client_agents(
    config: &ClusterConfig,
    schema: &Arc<crate::roles::Schema>,
    shards: &crate::roles::shards::Shards,
    clock: WallClock,
) -> Result<(ClientAgents, Vec<u64>), ConfigError> {
    let mut client_agents = Vec::new();
    let mut shard_channels: Vec<u64> = Vec::new();
    for role in &config.roles {
        if let RoleConfig::ClientAgent(ca) = role {
            if ca.dialect == crate::config::Dialect::Toontown2003
                && !shard_channels.contains(&ca.toontown.shard_channel)
            {
                shard_channels.push(ca.toontown.shard_channel);
            }
            let agent = ClientAgent::new(
                client_agents.len(),
                ca,
                Arc::clone(schema),
                &config.uberdogs,
                shards.clone(),
                clock,
            )
            .map_err(|e| ConfigError::new("clientagent", e))?;
            client_agents.push(Arc::new(agent));
        }
    }
    Ok((client_agents, shard_channels))
}

/// A store not yet taken by the core that hosts its Database role.
type StoreSlot = parking_lot::Mutex<Option<Box<dyn Worker>>>;

/// Opens every Database role's store now, so that a file that cannot be used stops otpd at
/// once.
fn open_stores(
    config: &ClusterConfig,
    schema: &Arc<crate::roles::Schema>,
) -> Result<Vec<StoreSlot>, ConfigError> {
    let mut stores = Vec::new();
    for role in &config.roles {
        if let RoleConfig::Database {
            generate, backend, ..
        } = role
        {
            let schema = Arc::clone(schema);
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
    Ok(stores)
}

/// What each core hosts: the district directory (core 0, for 2003 listeners), the
/// StateServers and DBSSs (every core, each owning its share of doids), the Database roles
/// (core 0: each owns its doid counter and its store).
fn role_factory(
    roles: Vec<RoleConfig>,
    schema: Arc<crate::roles::Schema>,
    stores: Vec<StoreSlot>,
    shards: crate::roles::shards::Shards,
    shard_channels: Vec<u64>,
) -> RoleFactory {
    Box::new(move |p: Placement, now: Instant| {
        let mut next_store = 0;
        let mut v: Vec<Box<dyn Role>> = Vec::new();
        if p.core == 0 && !shard_channels.is_empty() {
            v.push(Box::new(crate::roles::shards::ShardDirectory::new(
                shard_channels.clone(),
                shards.clone(),
            )));
        }
        for role in &roles {
            let schema = Arc::clone(&schema);
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
                    let store = &stores[next_store];
                    next_store += 1;
                    if p.core == 0 {
                        let store = store.lock().take().expect("core 0 starts once");
                        let limits = crate::roles::WorkerLimits {
                            queue: *max_queued,
                            batch: *max_batch,
                        };
                        let db = Database::new(*control, *broadcast, schema, store, now);
                        v.push(Box::new(db.with_limits(limits)));
                    }
                }
                RoleConfig::EventLogger { .. } => {} // its own thread, started by `otpd run`
                RoleConfig::ClientAgent(_) => {}     // served by the runtime's client listeners
            }
        }
        v
    })
}

/// The ClientAgent listeners, in configuration order.
pub type ClientAgents = Vec<Arc<ClientAgent>>;

/// Builds the roles one core hosts, when it starts at `now`.
pub type RoleFactory = Box<dyn Fn(Placement, Instant) -> Vec<Box<dyn Role>> + Send + Sync>;
