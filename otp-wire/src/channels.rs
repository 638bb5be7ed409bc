//! Well-known channels and doids of the internal protocol, and the channel arithmetic
//! for locations, parents and database broadcasts.

use crate::{Channel, Doid, Zone};

/// No channel: never routed to.
pub const INVALID_CHANNEL: Channel = 0;
/// The MessageDirector's own channel: control messages (subscriptions, post-removes).
pub const CONTROL_CHANNEL: Channel = 1;
/// Broadcast to every ClientAgent.
pub const BCHAN_CLIENTS: Channel = 10;
/// Broadcast to every StateServer.
pub const BCHAN_STATESERVERS: Channel = 12;
/// Broadcast to every Database role.
pub const BCHAN_DBSERVERS: Channel = 13;

/// No object.
pub const INVALID_DOID: Doid = 0;
/// No zone.
pub const INVALID_ZONE: Zone = 0;

/// High word of a parent's children channel (`PARENT_PREFIX | doid`).
pub const PARENT_PREFIX: Channel = 1 << 32;
/// High word of a stored object's database channel (`DATABASE_PREFIX | doid`).
pub const DATABASE_PREFIX: Channel = 2 << 32;

/// Channels 1..=999 are reserved, as are `(1 << 32) ..= (999 << 32)`.
pub fn is_reserved_channel(c: Channel) -> bool {
    (1..=999).contains(&c) || ((1u64 << 32)..=(999u64 << 32)).contains(&c)
}

/// Doids 1..=999 are reserved; 0 is invalid.
pub fn is_reserved_doid(d: Doid) -> bool {
    (1..=999).contains(&d)
}

/// The channel of everything in `zone` under `parent`.
pub fn location_channel(parent: Doid, zone: Zone) -> Channel {
    ((parent as u64) << 32) | zone as u64
}

/// The channel a parent listens on for messages about its children.
pub fn parent_channel(parent: Doid) -> Channel {
    PARENT_PREFIX | parent as u64
}

/// The channel a database re-broadcasts an object's updates on.
pub fn database_channel(doid: Doid) -> Channel {
    DATABASE_PREFIX | doid as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        assert_eq!(location_channel(5, 7), (5u64 << 32) | 7);
        assert_eq!(parent_channel(9), (1u64 << 32) | 9);
        assert_eq!(database_channel(9), (2u64 << 32) | 9);
        assert!(is_reserved_channel(1) && is_reserved_channel(999) && !is_reserved_channel(1000));
        assert!(is_reserved_channel(1 << 32) && !is_reserved_channel((999u64 << 32) + 1));
        assert!(is_reserved_doid(500) && !is_reserved_doid(0) && !is_reserved_doid(1000));
    }
}
