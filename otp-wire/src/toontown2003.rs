//! The 2003 Toontown Online client's own protocol (sv1.0.6.x): its message numbers, the
//! GO_GET_LOST reasons and LOGIN_RESP codes it knows. One table, used by otpd's Toontown2003
//! dialect and by otp-load's scripted and fake 2003 clients. Framing is the Astron client's.

// The constants are named as the protocol names them (the 2003 client's message types); each name is its
// documentation, and the protocol's own notes give the payloads.
#![allow(missing_docs)]

// The 2003 client's message numbers.
pub const CLIENT_LOGIN: u16 = 1;
pub const CLIENT_LOGIN_RESP: u16 = 2;
pub const CLIENT_LOGIN_2: u16 = 16;
pub const CLIENT_LOGIN_2_RESP: u16 = 17;
pub const CLIENT_GET_AVATARS: u16 = 3;
pub const CLIENT_GET_AVATARS_RESP: u16 = 5;
pub const CLIENT_DELETE_AVATAR_RESP: u16 = 5;
pub const CLIENT_CREATE_AVATAR: u16 = 6;
pub const CLIENT_CREATE_AVATAR_RESP: u16 = 7;
pub const CLIENT_GET_SHARD_LIST: u16 = 8;
pub const CLIENT_GET_SHARD_LIST_RESP: u16 = 9;
pub const CLIENT_GET_FRIEND_LIST: u16 = 10;
pub const CLIENT_GET_FRIEND_LIST_RESP: u16 = 11;
pub const CLIENT_GET_AVATAR_DETAILS: u16 = 14;
pub const CLIENT_GET_AVATAR_DETAILS_RESP: u16 = 15;
pub const CLIENT_GO_GET_LOST: u16 = 4;
pub const CLIENT_OBJECT_UPDATE_FIELD: u16 = 24;
pub const CLIENT_OBJECT_DISABLE_RESP: u16 = 25;
pub const CLIENT_OBJECT_DELETE_RESP: u16 = 27;
pub const CLIENT_SET_ZONE: u16 = 29;
pub const CLIENT_SET_SHARD: u16 = 31;
pub const CLIENT_SET_AVATAR: u16 = 32;
pub const CLIENT_CREATE_OBJECT_REQUIRED: u16 = 34;
pub const CLIENT_CREATE_OBJECT_REQUIRED_OTHER: u16 = 35;
pub const CLIENT_DISCONNECT_2003: u16 = 37;
pub const CLIENT_GET_STATE: u16 = 46;
pub const CLIENT_GET_STATE_RESP: u16 = 47;
pub const CLIENT_DONE_SET_ZONE_RESP: u16 = 48;
pub const CLIENT_DELETE_AVATAR: u16 = 49;
pub const CLIENT_HEARTBEAT_2003: u16 = 52;
pub const CLIENT_FRIEND_ONLINE: u16 = 53;
pub const CLIENT_FRIEND_OFFLINE: u16 = 54;
pub const CLIENT_REMOVE_FRIEND: u16 = 56;
pub const CLIENT_SERVER_UP: u16 = 57;
pub const CLIENT_SERVER_DOWN: u16 = 58;
pub const CLIENT_SET_NAME_PATTERN: u16 = 67;
pub const CLIENT_SET_NAME_PATTERN_ANSWER: u16 = 68;
pub const CLIENT_SET_WISHNAME: u16 = 70;
pub const CLIENT_SET_WISHNAME_RESP: u16 = 71;
pub const CLIENT_SET_WISHNAME_CLEAR: u16 = 72;
pub const CLIENT_SET_SECURITY: u16 = 73;

// CLIENT_GO_GET_LOST reasons (the 2003 client names 1, 100, 122, 151, 153 itself).
pub const LOST_GENERIC: u16 = 1;
pub const LOST_LOGGED_IN_ELSEWHERE: u16 = 100;
pub const LOST_LOGIN_PROBLEM: u16 = 122;
pub const LOST_INVALID_MSGTYPE: u16 = 108;
pub const LOST_TRUNCATED: u16 = 109;
pub const LOST_NOT_LOGGED_IN: u16 = 113;
pub const LOST_BAD_VERSION: u16 = 124;
pub const LOST_BAD_DCHASH: u16 = 125;
pub const LOST_BAD_TOKEN_TYPE: u16 = 284;
/// A banned account's login (otpd's choice: the 2003 client has no code for a closed account;
/// for 151 it shows `TCRBootedReasons[151]`, "You have been logged out by an administrator
/// working on the Toontown servers.", when the connection drops).
pub const LOST_ACCOUNT_BANNED: u16 = 151;

// CLIENT_LOGIN_RESP codes the 2003 client answers with a dialog and a retry (any other
// nonzero code makes it quit).
pub const LOGIN_BAD_PASSWORD: u8 = 12;
pub const LOGIN_BAD_NAME: u8 = 14;
pub const LOGIN_NO_SUCH_NAME: u8 = 129;

// The cluster side of the dialect (otpd's own internal messages and channels).

/// The channel AIs announce their districts on carries these two (otpd's own): uint32 district,
/// string name, uint32 population / uint32 district.
pub const CLIENTAGENT_SHARD_UP: u16 = 1900;
pub const CLIENTAGENT_SHARD_DOWN: u16 = 1901;

/// otpd's own: "avatar X (uint32) is online": sent by the session playing X to each friend's
/// puppet channel; the friend's session, if X is in its toon's friends list, tells its client
/// (FRIEND_ONLINE X) and answers FRIEND_ONLINE (its own toon) to X's puppet channel through
/// CLIENTAGENT_SEND_DATAGRAM.
pub const CLIENTAGENT_TOON_FRIEND_ONLINE: u16 = 3910;

/// otpd's own: "the account named here (string) has logged in elsewhere": sent by a session
/// that has just logged in to the account's channel. Only a session logged in to that exact
/// name leaves (GO_GET_LOST 100): the channel is a hash of the name, and a name that merely
/// collides with it must not kick anyone.
pub const CLIENTAGENT_TOON_ACCOUNT_TAKEN: u16 = 3911;

/// A session playing avatar X listens on `PUPPET_CHANNEL_BASE + X` while X is in the world
/// (Disney's OTP puppet channel): an AI or another session reaches the player of X there.
pub const PUPPET_CHANNEL_BASE: u64 = 1001 << 32;
