//! The DC schema as the object roles read it: per class, its fields (sorted, for membership)
//! and its `required` list; per field, its keywords, molecular components and packed default.
//! Built once from an `otp_dc::DcFile` and shared by every core.

use otp_dc::{DcFile, ValidateOptions, ValueError};

/// The keywords of a field that decide where its updates go and what is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldFlags {
    pub required: bool,
    pub ram: bool,
    pub db: bool,
    pub broadcast: bool,
    pub airecv: bool,
    pub ownrecv: bool,
    pub clrecv: bool,
    pub clsend: bool,
    pub ownsend: bool,
    pub molecular: bool,
    /// The DC file gives the field an explicit default (Panda3D's `has_default_value`).
    pub has_default: bool,
    /// `p2p` (Toontown 2003: sent by one client to the owner of another object).
    pub p2p: bool,
}

impl FieldFlags {
    /// Kept by a live object: `required` or `ram` (molecular fields are kept as their parts).
    pub fn kept(&self) -> bool {
        (self.required || self.ram) && !self.molecular
    }
    /// Seen by anyone with interest in the object's location.
    pub fn visible(&self) -> bool {
        self.broadcast || self.clrecv
    }
}

pub struct ClassInfo {
    pub name: String,
    /// Every field of the class, inherited included, ascending number.
    pub fields: Vec<u16>,
    /// The REQUIRED encoding's fields, ascending number (molecular fields excluded).
    pub required: Vec<u16>,
    /// Field number -> index into `Schema::fields` (`NONE` where the class has no such field).
    by_number: Vec<u32>,
}

const NONE: u32 = u32::MAX;

/// "The class is not known here": lookups then use the file-wide numbering, and find nothing
/// when fields are numbered per class (the caller has to learn the class first).
pub const ANY_CLASS: u16 = u16::MAX;

struct FieldInfo {
    /// The field's declaration index in the DC file (`otp_dc::Field::decl_index`).
    decl: usize,
    flags: FieldFlags,
    /// A molecular field's atomic parts, by number in the same class.
    components: Vec<u16>,
    default: Vec<u8>,
}

/// The DC schema as the roles read it. Field numbers are the cluster's wire numbers, scoped by
/// class: file-wide (Astron's and Panda3D 1.10's default) or per class (the 2003 rule, with
/// `dc-multiple-inheritance 0`), where sibling classes reuse numbers; so every lookup names the
/// class the field is read in.
pub struct Schema {
    dc: DcFile,
    /// By class id; None for structs.
    classes: Vec<Option<ClassInfo>>,
    /// One per numbered field of any class.
    fields: Vec<FieldInfo>,
    /// File-wide numbering only: field number -> index into `fields`.
    global: Vec<u32>,
    validate: ValidateOptions,
}

impl Schema {
    pub fn new(dc: DcFile) -> Schema {
        let mut fields: Vec<FieldInfo> = Vec::new();
        // Declaration index -> index into `fields`.
        let mut by_decl: std::collections::HashMap<usize, u32> = Default::default();
        let mut classes = Vec::with_capacity(dc.num_classes());
        for c in dc.classes() {
            if c.is_struct() {
                classes.push(None);
                continue;
            }
            let mut numbered: Vec<(u16, u32)> = Vec::new();
            for f in dc.inherited(c).filter(|f| f.number() >= 0) {
                let info = *by_decl.entry(f.decl_index()).or_insert_with(|| {
                    fields.push(Self::field_info(&dc, f));
                    (fields.len() - 1) as u32
                });
                numbered.push((f.number() as u16, info));
            }
            numbered.sort_unstable_by_key(|&(n, _)| n);
            numbered.dedup_by_key(|&mut (n, _)| n);
            let len = numbered.last().map_or(0, |&(n, _)| n as usize + 1);
            let mut by_number = vec![NONE; len];
            for &(n, i) in &numbered {
                by_number[n as usize] = i;
            }
            let required = numbered
                .iter()
                .filter(|&&(_, i)| {
                    let fl = fields[i as usize].flags;
                    fl.required && !fl.molecular
                })
                .map(|&(n, _)| n)
                .collect();
            classes.push(Some(ClassInfo {
                name: c.name().to_string(),
                fields: numbered.iter().map(|&(n, _)| n).collect(),
                required,
                by_number,
            }));
        }
        let mut global = Vec::new();
        if dc.global_numbering() {
            for (i, f) in fields.iter().enumerate() {
                let n = dc.field_by_decl(f.decl).number().max(0) as usize;
                if global.len() <= n {
                    global.resize(n + 1, NONE);
                }
                global[n] = i as u32;
            }
        }
        Schema {
            dc,
            classes,
            fields,
            global,
            // Internal traffic (AIs, UberDOGs) may carry UTF-8 text.
            validate: ValidateOptions {
                ascii_strings_only: false,
                max_string_bytes: 0,
            },
        }
    }

    fn field_info(dc: &DcFile, f: &otp_dc::Field) -> FieldInfo {
        let has_default = match f.kind() {
            otp_dc::FieldKind::Atomic(ps) => ps.iter().any(|p| p.default.is_some()),
            otp_dc::FieldKind::Parameter(p) => p.default.is_some(),
            otp_dc::FieldKind::Molecular(_) => false,
        };
        FieldInfo {
            decl: f.decl_index(),
            flags: FieldFlags {
                required: f.is_required(),
                ram: f.is_ram(),
                db: f.is_db(),
                broadcast: f.is_broadcast(),
                airecv: f.is_airecv(),
                ownrecv: f.is_ownrecv(),
                clrecv: f.is_clrecv(),
                clsend: f.is_clsend(),
                ownsend: f.is_ownsend(),
                molecular: f.is_molecular(),
                has_default,
                p2p: f.has_keyword("p2p"),
            },
            components: dc.components(f).map(|c| c.number().max(0) as u16).collect(),
            default: dc.default_value(f),
        }
    }

    pub fn dc(&self) -> &DcFile {
        &self.dc
    }

    /// A distributed class (not a struct) by id.
    pub fn class(&self, class: u16) -> Option<&ClassInfo> {
        self.classes.get(class as usize).and_then(Option::as_ref)
    }

    pub fn class_name(&self, class: u16) -> &str {
        self.class(class).map_or("?", |c| c.name.as_str())
    }

    /// Whether field numbers are per class (the 2003 rule): then `ANY_CLASS` finds nothing.
    pub fn per_class_numbering(&self) -> bool {
        !self.dc.global_numbering()
    }

    fn info(&self, class: u16, field: u16) -> Option<&FieldInfo> {
        let table = if class == ANY_CLASS {
            &self.global
        } else {
            &self.class(class)?.by_number
        };
        match table.get(field as usize) {
            Some(&i) if i != NONE => Some(&self.fields[i as usize]),
            _ => None,
        }
    }

    /// The DC field `field` names in `class`.
    pub fn dc_field(&self, class: u16, field: u16) -> Option<&otp_dc::Field> {
        self.info(class, field)
            .map(|i| self.dc.field_by_decl(i.decl))
    }

    /// Whether `field` names a field in `class` (`ANY_CLASS`: in the file, file-wide numbering).
    pub fn field_known(&self, class: u16, field: u16) -> bool {
        self.info(class, field).is_some()
    }

    /// Whether `field` belongs to `class` (declared or inherited).
    pub fn class_has_field(&self, class: u16, field: u16) -> bool {
        self.info(class, field).is_some()
    }

    pub fn flags(&self, class: u16, field: u16) -> FieldFlags {
        self.info(class, field)
            .map_or(FieldFlags::default(), |f| f.flags)
    }

    pub fn field_name(&self, class: u16, field: u16) -> &str {
        self.dc_field(class, field).map_or("?", |f| f.name())
    }

    /// A molecular field's atomic components, in order; empty otherwise.
    pub fn components(&self, class: u16, field: u16) -> &[u16] {
        self.info(class, field)
            .map_or(&[], |f| f.components.as_slice())
    }

    /// The field's packed default (the DC default, else the type's zero value).
    pub fn default_value(&self, class: u16, field: u16) -> &[u8] {
        self.info(class, field)
            .map_or(&[], |f| f.default.as_slice())
    }

    /// Validates one value of `field` at the start of `bytes` (ranges, lengths, switch cases)
    /// and returns how many bytes it takes. Allocates nothing unless the value is bad.
    pub fn value_len(&self, class: u16, field: u16, bytes: &[u8]) -> Result<usize, ValueError> {
        self.value_len_with(class, field, bytes, self.validate)
    }

    /// As `value_len`, with the checks chosen for client input (7-bit strings, a cap on
    /// string and blob lengths).
    pub fn value_len_with(
        &self,
        class: u16,
        field: u16,
        bytes: &[u8],
        o: ValidateOptions,
    ) -> Result<usize, ValueError> {
        match self.dc_field(class, field) {
            Some(f) => self.dc.validate(f, bytes, o),
            None => Err(ValueError {
                at: 0,
                message: format!("unknown field {field}"),
                truncated: false,
            }),
        }
    }
}
