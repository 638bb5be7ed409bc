//! Avatars of the 2003 dialect: the avatar list, making a toon, naming it (Pick-a-Name and
//! wish names), deleting it, choosing one to play (SET_AVATAR) and leaving the world.

use super::*;

/// One avatar list being gathered from the database.
#[derive(Debug)]
pub(super) struct ListJob {
    pub(super) msgtype: u16,
    pub(super) waiting: usize,
    /// Per slot: (name, dna) once read.
    pub(super) found: Vec<Option<(Vec<u8>, Vec<u8>)>>,
}

pub(super) fn names_ok(name: &str) -> bool {
    let n = name.trim();
    !n.is_empty()
        && n.len() <= 32
        && n == name
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '.' | '\'' | '!'))
        && !name.contains("  ")
}

/// Toontown's name parts (NameMasterEnglish.txt: `index*category*text` lines), for
/// CLIENT_SET_NAME_PATTERN.
#[derive(Debug, Default)]
pub struct NameParts {
    parts: FxHashMap<u16, (u8, String)>,
}

impl NameParts {
    pub fn load(path: &std::path::Path) -> Result<NameParts, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&text);
        let mut parts = FxHashMap::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut it = line.splitn(3, '*');
            let (Some(i), Some(c), Some(t)) = (it.next(), it.next(), it.next()) else {
                return Err(format!(
                    "{}:{}: not index*category*text",
                    path.display(),
                    n + 1
                ));
            };
            let (Ok(i), Ok(c)) = (i.trim().parse::<u16>(), c.trim().parse::<u8>()) else {
                return Err(format!(
                    "{}:{}: not index*category*text",
                    path.display(),
                    n + 1
                ));
            };
            parts.insert(i, (c, t.trim().to_string()));
        }
        Ok(NameParts { parts })
    }

    /// The name four (index, capitalize) pairs make: title, first name, last-name prefix and
    /// suffix (65535 = unused), or None when they break the rules.
    pub fn compose(&self, p: &[(u16, u16); 4]) -> Option<String> {
        // Categories allowed at each position.
        const ALLOWED: [&[u8]; 4] = [&[0, 1, 2], &[3, 4, 5], &[6, 7], &[8]];
        let mut words: [Option<String>; 4] = Default::default();
        for (i, &(index, cap)) in p.iter().enumerate() {
            if index == u16::MAX {
                continue;
            }
            let (cat, text) = self.parts.get(&index)?;
            if !ALLOWED[i].contains(cat) || cap > 1 {
                return None;
            }
            // The client's flag (NameShop): 1 = capital first letter (a suffix after a "Mc"
            // prefix), 0 = lower-case first letter (the first name "von" after a title; the
            // name list holds "Von").
            let mut c = text.chars();
            let t = match c.next() {
                Some(f) if cap == 1 => f.to_uppercase().collect::<String>() + c.as_str(),
                Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
                None => String::new(),
            };
            words[i] = Some(t);
        }
        // A prefix needs a suffix; at least a first or last name.
        if words[2].is_some() != words[3].is_some() {
            return None;
        }
        if words[1].is_none() && words[3].is_none() {
            return None;
        }
        let last = match (&words[2], &words[3]) {
            (Some(a), Some(b)) => Some(format!("{a}{b}")),
            _ => None,
        };
        let name = [words[0].clone(), words[1].clone(), last]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        Some(name)
    }
}

/// The slots an account has, as the database should read its record.
fn rec_slots(rec: Option<&Account>) -> u8 {
    rec.map_or(0, |r| r.slots.len().min(u8::MAX as usize) as u8)
}

impl Ctx<'_> {
    /// GET_AVATARS: while a wish name of the account is pending, the account record is read
    /// again first, so the list shows the operator's verdict (DBSERVER_NAME_REVIEW) given
    /// since it was read; otherwise nothing the list shows can have changed elsewhere.
    pub(super) fn refresh_then_list(&mut self, now: Instant, msgtype: u16, out: &mut SessionOut) {
        let pending = self.t.record.as_ref().is_some_and(|r| {
            r.slots
                .iter()
                .any(|s| s.doid != 0 && s.name_state == accounts::NAME_PENDING)
        });
        let name = self.t.account.clone().filter(|_| pending);
        let Some(name) = name else {
            self.avatar_list(now, msgtype, out);
            return;
        };
        let ctx = self.request(Pending::Refresh { msgtype }, now);
        let mut w = self.send_to(self.db(), DBSERVER_ACCOUNT_GET, out);
        w.u32(ctx).string(&name);
        let _ = w.finish();
    }

    /// The account as read again (`status` 0 found): its slots replace the session's copy (the
    /// slot count stays the listener's), then the list is gathered. On a failure the session's
    /// copy is listed.
    pub(super) fn refreshed(
        &mut self,
        now: Instant,
        msgtype: u16,
        status: u8,
        data: &[u8],
        out: &mut SessionOut,
    ) {
        let slots = self.ca.toontown.max_avatars;
        match (status, Account::decode(data, slots)) {
            (0, Some(a)) => self.t.record = Some(a),
            _ => log::warn!(
                "{}: the account could not be read again; listing the session's copy",
                self.label()
            ),
        }
        self.avatar_list(now, msgtype, out);
    }

    /// Gathers the avatar list from the database, answering with `msgtype` (5).
    pub(super) fn avatar_list(&mut self, now: Instant, msgtype: u16, out: &mut SessionOut) {
        let slots: Vec<(usize, u32)> = self
            .t
            .record
            .as_ref()
            .map(|r| {
                r.slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.doid != 0)
                    .map(|(i, s)| (i, s.doid))
                    .collect()
            })
            .unwrap_or_default();
        let t = &mut *self.t;
        t.next_ctx = t.next_ctx.wrapping_add(1).max(1);
        let job = t.next_ctx;
        let n = t.record.as_ref().map_or(0, |r| r.slots.len());
        t.jobs.insert(
            job,
            ListJob {
                msgtype,
                waiting: slots.len(),
                found: vec![None; n],
            },
        );
        if slots.is_empty() {
            self.avatar_list_done(job, out);
            return;
        }
        let Some((fname, fdna)) = self.name_dna_fields() else {
            log::error!(
                "{}: the avatar class or its name/DNA field is not in the DC files",
                self.label()
            );
            self.t.jobs.remove(&job);
            return;
        };
        for (slot, doid) in slots {
            let ctx = self.request(Pending::ListFields { job, slot }, now);
            let mut w = self.send_to(self.db(), DBSERVER_OBJECT_GET_FIELDS, out);
            w.u32(ctx).u32(doid).u16(2).u16(fname).u16(fdna);
            let _ = w.finish();
        }
    }

    pub(super) fn avatar_list_done(&mut self, job: u32, out: &mut SessionOut) {
        let Some(j) = self.t.jobs.remove(&job) else {
            return;
        };
        let rec = self.t.record.clone().unwrap_or_else(|| Account::new(0, 0));
        let count = j.found.iter().filter(|f| f.is_some()).count();
        let mut w = Writer::client(&mut out.to_client, j.msgtype);
        w.u8(0).u16(count as u16);
        for (slot, f) in j.found.iter().enumerate() {
            let Some((name, dna)) = f else {
                continue;
            };
            let s = &rec.slots[slot];
            let (wish, approved, rejected) = match s.name_state {
                accounts::NAME_PENDING => (s.wish_name.as_str(), "", ""),
                accounts::NAME_APPROVED => ("", s.wish_name.as_str(), ""),
                accounts::NAME_REJECTED => ("", "", s.wish_name.as_str()),
                _ => ("", "", ""),
            };
            w.u32(s.doid)
                .bytes(name)
                .string(wish)
                .string(approved)
                .string(rejected)
                .bytes(dna)
                .u8(slot as u8)
                .u8((s.name_state == accounts::NAME_NONE) as u8);
        }
        let _ = w.finish();
    }

    pub(super) fn create_avatar(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let context = r.u16()?;
        let dna = r.blob()?.to_vec();
        let slot = r.u8()? as usize;
        let rec = self.t.record.as_ref().expect("logged in");
        // A slot being created is taken: a second avatar would be refused by the database.
        let creating = self
            .t
            .pending
            .values()
            .any(|(p, _)| matches!(p, Pending::Created { slot: s } if *s == slot));
        if slot >= rec.slots.len() || rec.slots[slot].doid != 0 || creating {
            return Err(refuse(
                LOST_LOGIN_PROBLEM,
                format!(
                    "Avatar slot {slot} is not free (an account has {} slots).",
                    rec.slots.len()
                ),
            ));
        }
        let schema = self.ca.schema.clone();
        let toontown = &self.ca.toontown;
        let Some(class) = schema.dc().class_by_name(&toontown.avatar_class) else {
            return Err(refuse(
                LOST_LOGIN_PROBLEM,
                "No avatar class in the DC files.",
            ));
        };
        let field = |n: &str| schema.dc().field_by_name(class, n).map(|f| f.id());
        let (Some(fname), Some(fdna)) = (field(&toontown.name_field), field(&toontown.dna_field))
        else {
            return Err(refuse(
                LOST_LOGIN_PROBLEM,
                "The avatar class lacks its name or DNA field.",
            ));
        };
        let mut dna_packed = (dna.len() as u16).to_le_bytes().to_vec();
        dna_packed.extend_from_slice(&dna);
        let o = self.validate_options(false);
        if let Err(e) = schema.value_len_with(class.id(), fdna, &dna_packed, o) {
            return Err(refuse(
                LOST_TRUNCATED,
                format!("Invalid DNA: {}", e.message),
            ));
        }
        if toontown.check_dna {
            if let Err(why) = dna::check_toon_dna(&dna) {
                // What the client's own MakeAToon never sends: refused as a failed creation
                // (the client stays in its name shop), nothing stored.
                self.dna_refused(slot, why, out);
                return Ok(());
            }
        }
        let mut fields: Vec<(u16, Vec<u8>)> = vec![
            (fname, string_bytes(&toontown.default_name)),
            (fdna, dna_packed),
        ];
        if let Some(f) = field("setTutorialAck") {
            if schema.value_len(class.id(), f, &[1]).is_ok() {
                fields.push((f, vec![1]));
            }
        }
        if let Some(f) = field("setDefaultShard") {
            if let Some(first) = self.ca.shards.lock().keys().next().copied() {
                fields.push((f, first.to_le_bytes().to_vec()));
            }
        }
        let account = self.t.account.clone().unwrap_or_default();
        if let Some(f) = field(ACCOUNT_NAME_FIELD) {
            fields.push((f, string_bytes(&account)));
        }
        // The object and the account's slot in one transaction: a client gone (or otpd killed)
        // before the answer leaves either both or neither, never a toon in no slot.
        let slots = rec_slots(self.t.record.as_ref());
        let ctx = self.request(Pending::Created { slot }, now);
        let mut w = self.send_to(self.db(), DBSERVER_ACCOUNT_CREATE_AVATAR, out);
        w.u32(ctx)
            .string(&account)
            .u8(slot as u8)
            .u8(slots)
            .u16(class.id())
            .u16(fields.len() as u16);
        for (f, v) in &fields {
            w.u16(*f).bytes(v);
        }
        let _ = w.finish();
        let _ = context; // always 0 from the client; echoed as 0
        Ok(())
    }

    /// A new toon's DNA the client's parser would not take: CREATE_AVATAR_RESP failure (the
    /// client's name shop shows a name error and stays), an event, nothing stored.
    fn dna_refused(&mut self, slot: usize, why: &str, out: &mut SessionOut) {
        let mut w = Writer::client(&mut out.to_client, CLIENT_CREATE_AVATAR_RESP);
        w.u16(0).u8(1);
        let _ = w.finish();
        log::info!("{}: DNA of a new toon refused: {why}", self.label());
        let account = self.t.account.clone().unwrap_or_default();
        out.events.push(crate::roles::event::encode(
            "dna-refused",
            &[
                ("role", crate::roles::event::Ev::Str("clientagent")),
                ("sender", crate::roles::event::Ev::Str(&self.sender_name())),
                ("account", crate::roles::event::Ev::Str(&account)),
                ("slot", crate::roles::event::Ev::U64(slot as u64)),
                ("reason", crate::roles::event::Ev::Str(why)),
            ],
        ));
    }

    /// Refuses a save of the session's copy of the account record while the database makes
    /// or deletes an avatar (each in one step of its own): the copy does not know the outcome
    /// yet, and saving it meanwhile would undo the database's step (an orphan toon, or a slot
    /// naming a deleted one). The 2003 client waits for each answer; only a hostile one gets
    /// here.
    pub(super) fn no_slot_change_pending(&self) -> Result<(), Refusal> {
        let busy = self
            .t
            .pending
            .values()
            .any(|(p, _)| matches!(p, Pending::Created { .. } | Pending::AvatarDeleted { .. }));
        if busy {
            return Err(refuse(
                LOST_LOGIN_PROBLEM,
                "An avatar is being made or deleted; wait for the answer.",
            ));
        }
        Ok(())
    }

    pub(super) fn set_name(&mut self, doid: u32, name: &str, out: &mut SessionOut) {
        let Some((f, _)) = self.name_dna_fields() else {
            return;
        };
        let mut w = self.send_to(self.db(), DBSERVER_OBJECT_SET_FIELD, out);
        w.u32(doid).u16(f).string(name);
        let _ = w.finish();
    }

    pub(super) fn name_pattern(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let doid = r.u32()?;
        let mut parts = [(0u16, 0u16); 4];
        for p in &mut parts {
            *p = (r.u16()?, r.u16()?);
        }
        let slot = self.own_slot(doid)?;
        self.no_slot_change_pending()?;
        let name = self
            .ca
            .name_parts
            .as_ref()
            .and_then(|np| np.compose(&parts));
        match name {
            Some(name) => {
                self.set_name(doid, &name, out);
                let s = &mut self.t.record.as_mut().expect("logged in").slots[slot];
                s.wish_name = name;
                s.name_state = accounts::NAME_NAMED;
                self.save_account(now, AfterSave::Pattern { doid }, out);
            }
            None => {
                let mut w = Writer::client(&mut out.to_client, CLIENT_SET_NAME_PATTERN_ANSWER);
                w.u32(doid).u8(1);
                let _ = w.finish();
                self.event("name-refused", doid, out);
            }
        }
        Ok(())
    }

    pub(super) fn wish_name(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let doid = r.u32()?;
        let name = String::from_utf8_lossy(r.blob()?).into_owned();
        if doid == 0 {
            // Only a check.
            let ok = names_ok(&name);
            let mut w = Writer::client(&mut out.to_client, CLIENT_SET_WISHNAME_RESP);
            w.u32(0).u16(0);
            if ok {
                w.string(&name).string("").string("");
            } else {
                w.string("").string("").string(&name);
            }
            let _ = w.finish();
            return Ok(());
        }
        let slot = self.own_slot(doid)?;
        self.no_slot_change_pending()?;
        if !names_ok(&name) {
            let mut w = Writer::client(&mut out.to_client, CLIENT_SET_WISHNAME_RESP);
            w.u32(doid).u16(0).string("").string("").string(&name);
            let _ = w.finish();
            self.event("name-refused", doid, out);
            return Ok(());
        }
        let auto = self.ca.toontown.auto_approve_names;
        if auto {
            self.set_name(doid, &name, out);
        }
        let typed = self.ca.clock.unix_at(now).as_secs();
        let s = &mut self.t.record.as_mut().expect("logged in").slots[slot];
        s.wish_name = name.clone();
        s.wish_unix = if auto { 0 } else { typed };
        s.name_state = if auto {
            accounts::NAME_NAMED
        } else {
            accounts::NAME_PENDING
        };
        let (pending, approved) = if auto {
            (String::new(), name)
        } else {
            (name, String::new())
        };
        self.save_account(
            now,
            AfterSave::Wish {
                doid,
                pending,
                approved,
                rejected: String::new(),
            },
            out,
        );
        Ok(())
    }

    /// Takes the avatar in play out of the world (SET_AVATAR 0, or another avatar chosen).
    pub(super) fn leave_world(&mut self, out: &mut SessionOut) {
        let avatar = self.t.avatar;
        if avatar == 0 {
            return;
        }
        self.close_interest_quietly(ZONE_INTEREST, out);
        self.friends_offline(out);
        out.subscriptions
            .push(Subscription::Remove(puppet_channel(avatar)));
        self.disown(avatar);
        let mut w = self.send_to(avatar as u64, STATESERVER_OBJECT_DELETE_RAM, out);
        w.u32(avatar);
        let _ = w.finish();
        self.event("avatar-left", avatar, out);
        let t = &mut *self.t;
        t.avatar = 0;
        t.shard = 0;
    }

    pub(super) fn set_avatar(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let doid = r.u32()?;
        if doid == 0 {
            self.leave_world(out);
            return Ok(());
        }
        self.own_slot(doid)?;
        if self.t.avatar == doid {
            return Ok(());
        }
        self.leave_world(out);
        // Activate the stored avatar, owned by this client, out of every zone until SET_SHARD.
        let mut w = self.send_to(doid as u64, DBSS_OBJECT_ACTIVATE_WITH_DEFAULTS, out);
        w.u32(doid).u32(0).u32(0);
        let _ = w.finish();
        let mut w = self.send_to(doid as u64, STATESERVER_OBJECT_SET_OWNER, out);
        w.u64(self.channel());
        let _ = w.finish();
        let ctx = self.request(Pending::OwnDetails, now);
        let mut w = self.send_to(doid as u64, STATESERVER_OBJECT_GET_ALL, out);
        w.u32(ctx).u32(doid);
        let _ = w.finish();
        self.add_session_object(doid);
        out.subscriptions
            .push(Subscription::Add(puppet_channel(doid)));
        let t = &mut *self.t;
        t.avatar = doid;
        t.friends = None;
        t.friends_wanted = 0;
        self.event("avatar-chosen", doid, out);
        Ok(())
    }

    /// The avatar class's name and DNA fields (None if the DC files lack them: checked at
    /// start-up).
    pub(super) fn name_dna_fields(&self) -> Option<(u16, u16)> {
        let dc = self.ca.schema.dc();
        let toontown = &self.ca.toontown;
        let class = dc.class_by_name(&toontown.avatar_class)?;
        Some((
            dc.field_by_name(class, &toontown.name_field)?.id(),
            dc.field_by_name(class, &toontown.dna_field)?.id(),
        ))
    }

    /// A toon's name and DNA among fields read from the database, when both are there.
    pub(super) fn name_dna(&self, fields: &[(u16, Vec<u8>)]) -> Option<NameDna> {
        let (fname, fdna) = self.name_dna_fields()?;
        let get = |id: u16| {
            fields
                .iter()
                .rev()
                .find(|(f, _)| *f == id)
                .map(|(_, v)| v.clone())
        };
        Some((get(fname)?, get(fdna)?))
    }

    /// One avatar's name and DNA read (or not) for avatar list `job`.
    pub(super) fn avatar_list_entry(
        &mut self,
        job: u32,
        slot: usize,
        found: Option<NameDna>,
        out: &mut SessionOut,
    ) {
        if let Some(j) = self.t.jobs.get_mut(&job) {
            j.waiting -= 1;
            if let Some(nd) = found {
                j.found[slot] = Some(nd);
            }
            if j.waiting == 0 {
                self.avatar_list_done(job, out);
            }
        }
    }

    /// The database made the avatar for `slot` and stored it there in one step (`doid` 0: it
    /// made nothing): the session's copy of the record learns it, the client is answered.
    pub(super) fn avatar_created(&mut self, slot: usize, doid: u32, out: &mut SessionOut) {
        if doid == 0 {
            let mut w = Writer::client(&mut out.to_client, CLIENT_CREATE_AVATAR_RESP);
            w.u16(0).u8(1);
            let _ = w.finish();
            return;
        }
        let rec = self.t.record.as_mut().expect("logged in");
        if let Some(s) = rec.slots.get_mut(slot) {
            *s = accounts::Slot {
                doid,
                ..accounts::Slot::default()
            };
        }
        let mut w = Writer::client(&mut out.to_client, CLIENT_CREATE_AVATAR_RESP);
        w.u16(0).u8(0).u32(doid);
        let _ = w.finish();
        self.event("avatar-created", doid, out);
    }

    /// SET_WISHNAME_CLEAR: the client acknowledges its wish name's verdict (`action` 1: it
    /// takes an approved name).
    pub(super) fn wish_name_clear(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let doid = r.u32()?;
        let action = r.u8()?;
        let slot = self.own_slot(doid)?;
        self.no_slot_change_pending()?;
        let rec = self.t.record.as_mut().expect("logged in");
        let s = &mut rec.slots[slot];
        let approved = action == 1 && s.name_state == accounts::NAME_APPROVED;
        s.name_state = match (action, s.name_state) {
            (1, accounts::NAME_APPROVED) => accounts::NAME_NAMED,
            (_, accounts::NAME_NAMED) => accounts::NAME_NAMED,
            _ => accounts::NAME_NONE,
        };
        if s.name_state == accounts::NAME_NONE {
            s.wish_name.clear();
            s.wish_unix = 0;
        }
        // The approved name becomes the toon's (the client shows it as such from now on:
        // ToontownClientRepository.__handleCongrats sends this, then chooses the toon).
        let name = approved.then(|| s.wish_name.clone());
        if let Some(name) = name {
            self.set_name(doid, &name, out);
        }
        self.save_account(now, AfterSave::Nothing, out);
        Ok(())
    }

    /// DELETE_AVATAR: one of the account's avatars (not the one in play) is deleted.
    pub(super) fn delete_avatar(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let doid = r.u32()?;
        let slot = self.own_slot(doid)?;
        if self.t.avatar == doid {
            return Err(refuse(
                LOST_LOGIN_PROBLEM,
                "Cannot delete the avatar in play.",
            ));
        }
        // The object and its slot go in one transaction (a crash between two steps would
        // leave a slot naming nothing, or a toon in no slot); the session's copy of the
        // record learns it with the answer.
        let account = self.t.account.clone().unwrap_or_default();
        let slots = rec_slots(self.t.record.as_ref());
        let ctx = self.request(Pending::AvatarDeleted { slot, doid }, now);
        let mut w = self.send_to(self.db(), DBSERVER_ACCOUNT_DELETE_AVATAR, out);
        w.u32(ctx)
            .string(&account)
            .u8(slot as u8)
            .u8(slots)
            .u32(doid);
        let _ = w.finish();
        Ok(())
    }

    /// The database deleted avatar `doid` and emptied `slot` (`status` 0), or changed nothing
    /// (1: the stored record does not have it there; 2: it failed).
    pub(super) fn avatar_deleted(
        &mut self,
        now: Instant,
        slot: usize,
        doid: u32,
        status: u8,
        out: &mut SessionOut,
    ) {
        match status {
            0 => {
                let rec = self.t.record.as_mut().expect("logged in");
                if let Some(s) = rec.slots.get_mut(slot) {
                    *s = accounts::Slot::default();
                }
                self.event("avatar-deleted", doid, out);
                self.avatar_list(now, CLIENT_DELETE_AVATAR_RESP, out);
            }
            _ => self.eject(
                refuse(LOST_LOGIN_PROBLEM, "The avatar could not be deleted."),
                false,
                out,
            ),
        }
    }

    /// GET_AVATAR_DETAILS of another toon: asked of its StateServer (answered in `details`,
    /// or "no information" when it does not answer in time).
    pub(super) fn ask_details(&mut self, now: Instant, doid: u32, out: &mut SessionOut) {
        if !is_object_channel(doid) {
            let mut w = Writer::client(&mut out.to_client, CLIENT_GET_AVATAR_DETAILS_RESP);
            w.u32(doid).u8(1);
            let _ = w.finish();
            return;
        }
        let ctx = self.request(Pending::OtherDetails { doid }, now);
        let mut w = self.send_to(doid as u64, STATESERVER_OBJECT_GET_ALL, out);
        w.u32(ctx).u32(doid);
        let _ = w.finish();
    }
}

#[cfg(test)]
mod name_tests {
    use super::NameParts;

    /// The flags as the 2003 client's NameShop sends them: "Dr. von Tinkerdoodle" is the title
    /// (1), the first name "Von" with flag 0 (shown "von" after a title), the prefix (1) and
    /// the suffix with flag 0 (as written) or 1 (after a capitalising prefix such as "Mc").
    #[test]
    fn name_flags_follow_the_clients_name_shop() {
        let mut np = NameParts::default();
        for (i, c, t) in [
            (0, 0, "Dr."),
            (1, 4, "Von"),
            (2, 6, "tinker"),
            (3, 8, "doodle"),
        ] {
            np.parts.insert(i, (c, t.to_string()));
        }
        let name = np.compose(&[(0, 1), (1, 0), (2, 1), (3, 0)]).unwrap();
        assert_eq!(name, "Dr. von Tinkerdoodle");
        let name = np
            .compose(&[(u16::MAX, 1), (1, 1), (2, 1), (3, 1)])
            .unwrap();
        assert_eq!(name, "Von TinkerDoodle");
        assert!(np.compose(&[(0, 2), (1, 1), (2, 1), (3, 1)]).is_none());
    }
}
