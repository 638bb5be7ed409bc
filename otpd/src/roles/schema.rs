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
    /// Every field of the class, inherited included, ascending id.
    pub fields: Vec<u16>,
    /// The REQUIRED encoding's fields, ascending id (molecular fields excluded).
    pub required: Vec<u16>,
}

struct FieldInfo {
    flags: FieldFlags,
    components: Vec<u16>,
    default: Vec<u8>,
}

pub struct Schema {
    dc: DcFile,
    /// By class id; None for structs.
    classes: Vec<Option<ClassInfo>>,
    /// By field id.
    fields: Vec<FieldInfo>,
    validate: ValidateOptions,
}

impl Schema {
    pub fn new(dc: DcFile) -> Schema {
        let mut classes = Vec::with_capacity(dc.num_classes());
        for c in dc.classes() {
            if c.is_struct() {
                classes.push(None);
                continue;
            }
            let mut fields: Vec<u16> = dc
                .inherited(c)
                .filter(|f| f.number() >= 0)
                .map(|f| f.id())
                .collect();
            fields.sort_unstable();
            fields.dedup();
            classes.push(Some(ClassInfo {
                name: c.name().to_string(),
                fields,
                required: c.required_fields().to_vec(),
            }));
        }
        let mut fields = Vec::with_capacity(dc.num_fields());
        for id in 0..dc.num_fields() {
            let Some(f) = dc.field(id as u16) else {
                fields.push(FieldInfo {
                    flags: FieldFlags::default(),
                    components: Vec::new(),
                    default: Vec::new(),
                });
                continue;
            };
            let has_default = match f.kind() {
                otp_dc::FieldKind::Atomic(ps) => ps.iter().any(|p| p.default.is_some()),
                otp_dc::FieldKind::Parameter(p) => p.default.is_some(),
                otp_dc::FieldKind::Molecular(_) => false,
            };
            fields.push(FieldInfo {
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
                components: dc.components(f).map(|c| c.id()).collect(),
                default: dc.default_value(f),
            });
        }
        Schema {
            dc,
            classes,
            fields,
            // Internal traffic (AIs, UberDOGs) may carry UTF-8 text.
            validate: ValidateOptions {
                ascii_strings_only: false,
            },
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

    /// Whether `field` belongs to `class` (declared or inherited).
    pub fn class_has_field(&self, class: u16, field: u16) -> bool {
        self.class(class)
            .is_some_and(|c| c.fields.binary_search(&field).is_ok())
    }

    pub fn flags(&self, field: u16) -> FieldFlags {
        self.fields
            .get(field as usize)
            .map_or(FieldFlags::default(), |f| f.flags)
    }

    pub fn field_name(&self, field: u16) -> &str {
        self.dc.field(field).map_or("?", |f| f.name())
    }

    /// A molecular field's atomic components, in order; empty otherwise.
    pub fn components(&self, field: u16) -> &[u16] {
        self.fields
            .get(field as usize)
            .map_or(&[], |f| f.components.as_slice())
    }

    /// The field's packed default (the DC default, else the type's zero value).
    pub fn default_value(&self, field: u16) -> &[u8] {
        self.fields
            .get(field as usize)
            .map_or(&[], |f| f.default.as_slice())
    }

    /// Validates one value of `field` at the start of `bytes` (ranges, lengths, switch cases)
    /// and returns how many bytes it takes. Allocates nothing unless the value is bad.
    pub fn value_len(&self, field: u16, bytes: &[u8]) -> Result<usize, ValueError> {
        self.value_len_with(field, bytes, self.validate.ascii_strings_only)
    }

    /// As `value_len`, choosing whether string bytes >= 0x80 are refused (client input).
    pub fn value_len_with(
        &self,
        field: u16,
        bytes: &[u8],
        ascii_strings_only: bool,
    ) -> Result<usize, ValueError> {
        match self.dc.field(field) {
            Some(f) => self
                .dc
                .validate(f, bytes, ValidateOptions { ascii_strings_only }),
            None => Err(ValueError {
                at: 0,
                message: format!("unknown field {field}"),
                truncated: false,
            }),
        }
    }
}
