//! The account record the Database role stores for the Toontown 2003 dialect (otpd's accounts
//! table): avatar slots with their wish names and review states, and the password hash of an
//! account made by CLIENT_LOGIN. The ClientAgent reads and writes it whole; the Database role
//! reads it to give an account a new avatar in one transaction (DBSERVER_ACCOUNT_CREATE_AVATAR).

/// Name review states of a wish name.
pub const NAME_NONE: u8 = 0;
pub const NAME_PENDING: u8 = 1;
pub const NAME_APPROVED: u8 = 2;
pub const NAME_REJECTED: u8 = 3;
/// Named for good (a pattern name, or an approval the client has seen).
pub const NAME_NAMED: u8 = 4;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slot {
    /// 0 = empty.
    pub doid: u32,
    pub wish_name: String,
    pub name_state: u8,
}

/// What the Database role keeps for an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub created_unix: u64,
    pub slots: Vec<Slot>,
    /// The password hash (PHC string) of an account made by CLIENT_LOGIN; None for one made
    /// by a play token.
    pub password: Option<String>,
}

impl Account {
    pub fn new(slots: u8, now_unix: u64) -> Account {
        Account {
            created_unix: now_unix,
            slots: vec![Slot::default(); slots as usize],
            password: None,
        }
    }

    /// Version 1: u8 1, u64 created, u8 slot count, per slot u32 doid, string wish name,
    /// u8 name state (little-endian, strings with a u16 length). Version 2, written only when
    /// the account has a password: u8 2, the same, then string password hash.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![if self.password.is_some() { 2u8 } else { 1u8 }];
        v.extend_from_slice(&self.created_unix.to_le_bytes());
        v.push(self.slots.len() as u8);
        for s in &self.slots {
            v.extend_from_slice(&s.doid.to_le_bytes());
            let n = &s.wish_name.as_bytes()[..s.wish_name.len().min(u16::MAX as usize)];
            v.extend_from_slice(&(n.len() as u16).to_le_bytes());
            v.extend_from_slice(n);
            v.push(s.name_state);
        }
        if let Some(p) = &self.password {
            let p = &p.as_bytes()[..p.len().min(u16::MAX as usize)];
            v.extend_from_slice(&(p.len() as u16).to_le_bytes());
            v.extend_from_slice(p);
        }
        v
    }

    /// Reads a record, giving it `slots` slots (more are kept, fewer are added).
    pub fn decode(bytes: &[u8], slots: u8) -> Option<Account> {
        let mut r = otp_wire::Reader::new(bytes);
        let version = r.u8().ok()?;
        if version != 1 && version != 2 {
            return None;
        }
        let created_unix = r.u64().ok()?;
        let n = r.u8().ok()?;
        let mut out = Vec::with_capacity(n.max(slots) as usize);
        for _ in 0..n {
            let doid = r.u32().ok()?;
            let wish_name = String::from_utf8_lossy(r.blob().ok()?).into_owned();
            let name_state = r.u8().ok()?;
            out.push(Slot {
                doid,
                wish_name,
                name_state,
            });
        }
        let password = if version == 2 {
            Some(String::from_utf8_lossy(r.blob().ok()?).into_owned())
        } else {
            None
        };
        while out.len() < slots as usize {
            out.push(Slot::default());
        }
        Some(Account {
            created_unix,
            slots: out,
            password,
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
}
