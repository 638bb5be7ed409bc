//! The account record the Database role stores for the Toontown 2003 dialect (otpd's accounts
//! table): avatar slots with their wish names and review states, and the password hash of an
//! account made by CLIENT_LOGIN. The ClientAgent reads and writes it whole; the Database role
//! reads it to give an account a new avatar in one transaction (DBSERVER_ACCOUNT_CREATE_AVATAR),
//! and sets its ban and its names' verdicts for the operator (DBSERVER_ACCOUNT_SET_BAN,
//! DBSERVER_NAME_REVIEW).

/// Name review states of a wish name.
pub const NAME_NONE: u8 = 0;
pub const NAME_PENDING: u8 = 1;
pub const NAME_APPROVED: u8 = 2;
pub const NAME_REJECTED: u8 = 3;
/// Named for good (a pattern name, or an approval the client has seen).
pub const NAME_NAMED: u8 = 4;

/// `banned_until` of a ban that never ends.
pub const BAN_FOREVER: u64 = u64::MAX;
/// Longest ban reason, in bytes (DBSERVER_ACCOUNT_SET_BAN refuses a longer one).
pub const MAX_BAN_REASON: usize = 512;

/// The account name of an Astron-dialect account: `#` and its id in decimal (the id is the
/// high 32 bits of the client channel the game's UberDOG sets, OTP's `account << 32 | avatar`).
pub fn astron_account_name(id: u32) -> String {
    format!("#{id}")
}

/// The account id a name written as `astron_account_name` gives names (`#1` .. `#4294967295`,
/// no leading zero); None for any other name.
pub fn astron_account_id(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('#')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u32>().ok()
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slot {
    /// 0 = empty.
    pub doid: u32,
    pub wish_name: String,
    pub name_state: u8,
    /// When the wish name was typed (Unix seconds; 0 = not known, as for a record written
    /// before version 3).
    pub wish_unix: u64,
}

/// What the Database role keeps for an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub created_unix: u64,
    pub slots: Vec<Slot>,
    /// The password hash (PHC string) of an account made by CLIENT_LOGIN; None for one made
    /// by a play token.
    pub password: Option<String>,
    /// Banned until this Unix second (0 = not banned; `BAN_FOREVER` = for good).
    pub banned_until: u64,
    /// Why, as the operator said (at most `MAX_BAN_REASON` bytes).
    pub ban_reason: String,
}

fn put_string(v: &mut Vec<u8>, s: &str) {
    let n = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    v.extend_from_slice(&(n.len() as u16).to_le_bytes());
    v.extend_from_slice(n);
}

impl Account {
    pub fn new(slots: u8, now_unix: u64) -> Account {
        Account {
            created_unix: now_unix,
            slots: vec![Slot::default(); slots as usize],
            password: None,
            banned_until: 0,
            ban_reason: String::new(),
        }
    }

    /// Whether the account is banned at `now_unix`.
    pub fn banned_at(&self, now_unix: u64) -> bool {
        self.banned_until != 0 && now_unix < self.banned_until
    }

    /// Version 1: u8 1, u64 created, u8 slot count, per slot u32 doid, string wish name,
    /// u8 name state (little-endian, strings with a u16 length). Version 2, written only when
    /// the account has a password: u8 2, the same, then string password hash. Version 3,
    /// written only when there is something versions 1 and 2 cannot hold (a ban, or the time
    /// a wish name was typed): u8 3, u64 created, u8 slot count, per slot u32 doid, string
    /// wish name, u8 name state, u64 wish time; then u8 1 and string password hash (or u8 0),
    /// u64 banned until, string ban reason. An older record reads as not banned.
    pub fn encode(&self) -> Vec<u8> {
        let v3 = self.banned_until != 0
            || !self.ban_reason.is_empty()
            || self.slots.iter().any(|s| s.wish_unix != 0);
        let version = match (v3, self.password.is_some()) {
            (true, _) => 3u8,
            (false, true) => 2,
            (false, false) => 1,
        };
        let mut v = vec![version];
        v.extend_from_slice(&self.created_unix.to_le_bytes());
        v.push(self.slots.len() as u8);
        for s in &self.slots {
            v.extend_from_slice(&s.doid.to_le_bytes());
            put_string(&mut v, &s.wish_name);
            v.push(s.name_state);
            if v3 {
                v.extend_from_slice(&s.wish_unix.to_le_bytes());
            }
        }
        if v3 {
            v.push(self.password.is_some() as u8);
        }
        if let Some(p) = &self.password {
            put_string(&mut v, p);
        }
        if v3 {
            v.extend_from_slice(&self.banned_until.to_le_bytes());
            put_string(&mut v, &self.ban_reason);
        }
        v
    }

    /// Reads a record, giving it `slots` slots (more are kept, fewer are added).
    pub fn decode(bytes: &[u8], slots: u8) -> Option<Account> {
        let mut r = otp_wire::Reader::new(bytes);
        let version = r.u8().ok()?;
        if !(1..=3).contains(&version) {
            return None;
        }
        let created_unix = r.u64().ok()?;
        let n = r.u8().ok()?;
        let mut out = Vec::with_capacity(n.max(slots) as usize);
        for _ in 0..n {
            let doid = r.u32().ok()?;
            let wish_name = String::from_utf8_lossy(r.blob().ok()?).into_owned();
            let name_state = r.u8().ok()?;
            let wish_unix = if version == 3 { r.u64().ok()? } else { 0 };
            out.push(Slot {
                doid,
                wish_name,
                name_state,
                wish_unix,
            });
        }
        let has_password = match version {
            2 => true,
            3 => r.u8().ok()? != 0,
            _ => false,
        };
        let password = if has_password {
            Some(String::from_utf8_lossy(r.blob().ok()?).into_owned())
        } else {
            None
        };
        let (banned_until, ban_reason) = if version == 3 {
            let until = r.u64().ok()?;
            (until, String::from_utf8_lossy(r.blob().ok()?).into_owned())
        } else {
            (0, String::new())
        };
        while out.len() < slots as usize {
            out.push(Slot::default());
        }
        Some(Account {
            created_unix,
            slots: out,
            password,
            banned_until,
            ban_reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_round_trip() {
        let mut a = Account::new(6, 77);
        a.slots[2] = Slot {
            doid: 100_000_001,
            wish_name: "Flippy".into(),
            name_state: NAME_PENDING,
            wish_unix: 0,
        };
        let b = Account::decode(&a.encode(), 6).unwrap();
        assert_eq!(a, b);
        assert!(Account::decode(&[2], 6).is_none());
        assert!(Account::decode(&[3], 6).is_none());
        assert!(Account::decode(&a.encode()[..10], 6).is_none());
        assert_eq!(a.encode()[0], 1, "no password: version 1");
        let mut p = a.clone();
        p.password = Some("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into());
        let bytes = p.encode();
        assert_eq!(bytes[0], 2);
        assert_eq!(&bytes[1..a.encode().len()], &a.encode()[1..]);
        assert_eq!(Account::decode(&bytes, 6).unwrap(), p);
        assert!(Account::decode(&bytes[..bytes.len() - 1], 6).is_none());
    }

    #[test]
    fn astron_account_names() {
        assert_eq!(astron_account_name(1234), "#1234");
        assert_eq!(astron_account_id("#1234"), Some(1234));
        assert_eq!(astron_account_id("#4294967295"), Some(u32::MAX));
        for bad in [
            "#",
            "#0",
            "#01",
            "#4294967296",
            "1234",
            "#12a",
            "# 1",
            "#-1",
            "##1",
        ] {
            assert_eq!(astron_account_id(bad), None, "{bad}");
        }
    }

    /// A ban or a wish time makes a version 3 record; without them the record stays as an
    /// older otpd wrote it, and an older record reads as not banned.
    #[test]
    fn bans_and_wish_times_round_trip() {
        let mut a = Account::new(2, 77);
        assert!(!a.banned_at(100));
        a.slots[1].doid = 100_000_002;
        a.slots[1].wish_name = "Flappy".into();
        a.slots[1].name_state = NAME_PENDING;
        a.slots[1].wish_unix = 1_700_000_000;
        let bytes = a.encode();
        assert_eq!(bytes[0], 3);
        assert_eq!(Account::decode(&bytes, 2).unwrap(), a);
        a.password = Some("$argon2id$x".into());
        a.banned_until = BAN_FOREVER;
        a.ban_reason = "griefing".into();
        let bytes = a.encode();
        assert_eq!(Account::decode(&bytes, 2).unwrap(), a);
        assert!(a.banned_at(u64::MAX - 1));
        for cut in 0..bytes.len() {
            assert!(Account::decode(&bytes[..cut], 2).is_none(), "cut at {cut}");
        }
        a.banned_until = 200;
        assert!(a.banned_at(199) && !a.banned_at(200));
        let old = Account::new(1, 5).encode();
        assert_eq!(old[0], 1);
        let read = Account::decode(&old, 1).unwrap();
        assert_eq!((read.banned_until, read.ban_reason.as_str()), (0, ""));
    }
}
