//! Friends in the 2003 dialect: GET_FRIEND_LIST from the toon's friends field, friends coming
//! online and going offline through puppet channels, REMOVE_FRIEND on both toons.

use super::*;

/// One GET_FRIEND_LIST being answered: the friends' names and DNA from the database.
#[derive(Debug)]
pub(super) struct FriendJob {
    /// Requests answered by this job (they came while it ran).
    pub(super) answers: usize,
    pub(super) waiting: usize,
    /// Per friend: doid, and (name, dna) once read.
    pub(super) found: Vec<(u32, Option<NameDna>)>,
}

/// A uint32uint8array value (with its length tag) as (doid, flags) pairs.
pub(super) fn decode_friends(v: &[u8]) -> Option<Vec<(u32, u8)>> {
    let n = u16::from_le_bytes([*v.first()?, *v.get(1)?]) as usize;
    let body = v.get(2..2 + n)?;
    if !n.is_multiple_of(5) {
        return None;
    }
    Some(
        body.as_chunks::<5>()
            .0
            .iter()
            .map(|c| (u32::from_le_bytes([c[0], c[1], c[2], c[3]]), c[4]))
            .collect(),
    )
}

pub(super) fn encode_friends(list: &[(u32, u8)]) -> Vec<u8> {
    let n = list.len().min(u16::MAX as usize / 5);
    let mut v = ((n * 5) as u16).to_le_bytes().to_vec();
    for &(d, f) in &list[..n] {
        v.extend_from_slice(&d.to_le_bytes());
        v.push(f);
    }
    v
}

/// The distinct friends to look up or tell about (at most MAX_FRIENDS, never `me`).
pub(super) fn friend_ids(list: &[(u32, u8)], me: u32) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for &(d, _) in list {
        if out.len() >= MAX_FRIENDS {
            break;
        }
        if d != me && is_object_channel(d) && !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// The DC field holding a toon's friends: uint32uint8array of (friend doid, flags).
pub const FRIENDS_FIELD: &str = "setFriendsList";

/// At most this many friends are looked up for GET_FRIEND_LIST, and told of coming online
/// or going offline (the 2003 game allows 50; a longer list is served up to this many).
pub const MAX_FRIENDS: usize = 200;

impl Ctx<'_> {
    pub(super) fn friends_field(&self) -> Option<u16> {
        let dc = self.ca.schema.dc();
        let class = dc.class_by_name(&self.ca.toontown.avatar_class)?;
        Some(dc.field_by_name(class, FRIENDS_FIELD)?.id())
    }

    /// GET_FRIEND_LIST: each friend's name and DNA, read from the database.
    pub(super) fn friend_list(&mut self, now: Instant, out: &mut SessionOut) {
        let t = &mut *self.t;
        if t.avatar == 0 {
            let mut w = Writer::client(&mut out.to_client, CLIENT_GET_FRIEND_LIST_RESP);
            w.u8(1);
            let _ = w.finish();
            return;
        }
        if t.friends.is_none() {
            // Answered once the avatar's details (and so its friends) come.
            t.friends_wanted += 1;
            return;
        }
        if let Some(job) = t.friend_job {
            if let Some(j) = t.friend_jobs.get_mut(&job) {
                j.answers += 1;
                return;
            }
        }
        let me = t.avatar;
        let ids = friend_ids(t.friends.as_deref().unwrap_or_default(), me);
        let (Some((fname, fdna)), false) = (self.name_dna_fields(), ids.is_empty()) else {
            let mut w = Writer::client(&mut out.to_client, CLIENT_GET_FRIEND_LIST_RESP);
            w.u8(0).u16(0);
            let _ = w.finish();
            return;
        };
        let t = &mut *self.t;
        t.next_ctx = t.next_ctx.wrapping_add(1).max(1);
        let job = t.next_ctx;
        t.friend_job = Some(job);
        t.friend_jobs.insert(
            job,
            FriendJob {
                answers: 1,
                waiting: ids.len(),
                found: ids.iter().map(|&d| (d, None)).collect(),
            },
        );
        for (index, doid) in ids.into_iter().enumerate() {
            let ctx = self.request(Pending::FriendFields { job, index }, now);
            let mut w = self.send_to(self.db(), DBSERVER_OBJECT_GET_FIELDS, out);
            w.u32(ctx).u32(doid).u16(2).u16(fname).u16(fdna);
            let _ = w.finish();
        }
    }

    pub(super) fn friend_list_done(&mut self, job: u32, out: &mut SessionOut) {
        let t = &mut *self.t;
        let Some(j) = t.friend_jobs.remove(&job) else {
            return;
        };
        if t.friend_job == Some(job) {
            t.friend_job = None;
        }
        let found: Vec<_> = j
            .found
            .iter()
            .filter_map(|(d, f)| f.as_ref().map(|(n, dna)| (*d, n, dna)))
            .collect();
        for _ in 0..j.answers {
            let mut w = Writer::client(&mut out.to_client, CLIENT_GET_FRIEND_LIST_RESP);
            w.u8(0).u16(found.len() as u16);
            for (d, n, dna) in &found {
                w.u32(*d).bytes(n).bytes(dna);
            }
            let _ = w.finish();
        }
    }

    /// REMOVE_FRIEND: `doid` leaves the avatar's friends list, and the avatar leaves `doid`'s
    /// (read from the database, written through the DBSS, live or stored).
    pub(super) fn remove_friend(&mut self, now: Instant, doid: u32, out: &mut SessionOut) {
        let me = self.t.avatar;
        let field = self.friends_field();
        let listed = self
            .t
            .friends
            .as_ref()
            .is_some_and(|l| l.iter().any(|&(d, _)| d == doid));
        let Some(field) = field.filter(|_| listed && me != 0) else {
            self.event("friend-remove-dropped", doid, out);
            return;
        };
        let list = {
            let l = self.t.friends.as_mut().expect("listed");
            l.retain(|&(d, _)| d != doid);
            encode_friends(l)
        };
        let mut w = self.send_to(me as u64, STATESERVER_OBJECT_SET_FIELD, out);
        w.u32(me).u16(field).bytes(&list);
        let _ = w.finish();
        self.event("friend-removed", doid, out);
        if is_object_channel(doid) {
            let ctx = self.request(Pending::Unfriend { other: doid, me }, now);
            let mut w = self.send_to(self.db(), DBSERVER_OBJECT_GET_FIELDS, out);
            w.u32(ctx).u32(doid).u16(1).u16(field);
            let _ = w.finish();
        }
    }

    /// The avatar in play's friends list is known (its details) or changed (an update from
    /// the server): answer waiting GET_FRIEND_LISTs, and tell friends not told yet that
    /// the avatar is online.
    pub(super) fn friends_set(&mut self, now: Instant, list: Vec<(u32, u8)>, out: &mut SessionOut) {
        let me = self.t.avatar;
        let old = self.t.friends.replace(list);
        let new = friend_ids(self.t.friends.as_deref().unwrap_or_default(), me);
        for f in new {
            if old.as_ref().is_some_and(|o| o.iter().any(|&(d, _)| d == f)) {
                continue;
            }
            let mut w = self.send_to(puppet_channel(f), CLIENTAGENT_TOON_FRIEND_ONLINE, out);
            w.u32(me);
            let _ = w.finish();
        }
        let wanted = std::mem::take(&mut self.t.friends_wanted);
        for _ in 0..wanted {
            self.friend_list(now, out);
        }
    }

    /// The avatar in play leaves the world: its friends' clients hear it went offline.
    pub(in crate::clientagent::dialect) fn friends_offline(&mut self, out: &mut SessionOut) {
        let me = self.t.avatar;
        let Some(list) = self.t.friends.take() else {
            return;
        };
        self.t.friends_wanted = 0;
        if me == 0 {
            return;
        }
        let mut dg = CLIENT_FRIEND_OFFLINE.to_le_bytes().to_vec();
        dg.extend_from_slice(&me.to_le_bytes());
        for f in friend_ids(&list, me) {
            let mut w = self.send_to(puppet_channel(f), CLIENTAGENT_SEND_DATAGRAM, out);
            w.blob(&dg);
            let _ = w.finish();
        }
    }

    /// The friends list among an object's `required` values (a GET_ALL answer's body after
    /// the class), when `class` is the avatar class and has the friends field.
    pub(super) fn required_friends(&self, class: u16, body: &[u8]) -> Option<Vec<(u32, u8)>> {
        let field = self.friends_field()?;
        let schema = &self.ca.schema;
        let c = schema.dc().class(class)?;
        if schema.class_name(class) != self.ca.toontown.avatar_class {
            return None;
        }
        let mut at = 0;
        for &f in c.required_fields() {
            let n = schema.value_len(class, f, body.get(at..)?).ok()?;
            if f == field {
                return decode_friends(&body[at..at + n]);
            }
            at += n;
        }
        None
    }

    /// The new friends list, when a SET_FIELD(S) body sets the avatar in play's.
    pub(super) fn own_friends_update(&self, msgtype: u16, body: &[u8]) -> Option<Vec<(u32, u8)>> {
        let t = &*self.t;
        let me = t.avatar;
        if me == 0 || t.friends.is_none() {
            return None;
        }
        let field = self.friends_field()?;
        let mut r = Reader::new(body);
        if r.u32().ok()? != me {
            return None;
        }
        let count = if msgtype == STATESERVER_OBJECT_SET_FIELDS {
            r.u16().ok()?
        } else {
            1
        };
        let mut found = None;
        for _ in 0..count {
            let f = r.u16().ok()?;
            let n = self
                .ca
                .schema
                .value_len(self.avatar_class_id(), f, r.rest_peek())
                .ok()?;
            let v = r.take(n).ok()?;
            if f == field {
                found = Some(decode_friends(v)?);
            }
        }
        found
    }

    /// CLIENTAGENT_TOON_FRIEND_ONLINE: a friend's toon came online; the client hears it, and
    /// the friend's client hears this toon is online too.
    pub(super) fn friend_online(
        &mut self,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), WireError> {
        let online = r.u32()?;
        r.rest();
        let me = self.t.avatar;
        let listed = self
            .t
            .friends
            .as_ref()
            .is_some_and(|l| l.iter().any(|&(d, _)| d == online));
        if me != 0 && online != me && listed {
            let mut w = Writer::client(&mut out.to_client, CLIENT_FRIEND_ONLINE);
            w.u32(online);
            let _ = w.finish();
            let mut dg = CLIENT_FRIEND_ONLINE.to_le_bytes().to_vec();
            dg.extend_from_slice(&me.to_le_bytes());
            let mut w = self.send_to(puppet_channel(online), CLIENTAGENT_SEND_DATAGRAM, out);
            w.blob(&dg);
            let _ = w.finish();
        }
        Ok(())
    }

    /// One friend's name and DNA read (or not) for GET_FRIEND_LIST job `job`.
    pub(super) fn friend_list_entry(
        &mut self,
        job: u32,
        index: usize,
        found: Option<NameDna>,
        out: &mut SessionOut,
    ) {
        if let Some(j) = self.t.friend_jobs.get_mut(&job) {
            j.waiting = j.waiting.saturating_sub(1);
            if let (Some(nd), Some(e)) = (found, j.found.get_mut(index)) {
                e.1 = Some(nd);
            }
            if j.waiting == 0 {
                self.friend_list_done(job, out);
            }
        }
    }

    /// A former friend's stored fields: take `me` out of its friends list.
    pub(super) fn unfriend(
        &mut self,
        other: u32,
        me: u32,
        fields: Vec<(u16, Vec<u8>)>,
        out: &mut SessionOut,
    ) {
        let field = self.friends_field();
        let list = fields
            .into_iter()
            .find(|(f, _)| Some(*f) == field)
            .and_then(|(_, v)| decode_friends(&v));
        if let (Some(field), Some(mut list)) = (field, list) {
            let n = list.len();
            list.retain(|&(d, _)| d != me);
            if list.len() != n {
                // Through the DBSS: the live toon and its player, or the stored one.
                let mut w = self.send_to(other as u64, STATESERVER_OBJECT_SET_FIELD, out);
                w.u32(other).u16(field).bytes(&encode_friends(&list));
                let _ = w.finish();
            }
        }
    }
}
