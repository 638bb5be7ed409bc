//! What roles need to know of the DC schema, as a narrow trait: class membership, keywords,
//! required fields and defaults, and the length of one validated field value. `otp_dc`
//! implements it for real DC files; tests may implement it by hand.

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
}

pub trait Schema: Send + Sync {
    /// None for an unknown class id.
    fn class_name(&self, class: u16) -> Option<&str>;
    /// The class's `required` fields (inherited ones included), ascending id: the REQUIRED
    /// encoding's order.
    fn required_fields(&self, class: u16) -> &[u16];
    /// Every field of the class (inherited included), ascending id.
    fn class_fields(&self, class: u16) -> &[u16];
    /// Whether `field` belongs to `class` (declared or inherited).
    fn class_has_field(&self, class: u16, field: u16) -> bool;
    /// None for an unknown field id.
    fn field_flags(&self, field: u16) -> Option<FieldFlags>;
    fn field_name(&self, field: u16) -> Option<&str>;
    /// For a molecular field, its atomic components in order; empty otherwise.
    fn molecular_components(&self, field: u16) -> &[u16];
    /// Validates one value of `field` at the start of `bytes` (ranges, lengths, switch cases)
    /// and returns how many bytes it takes.
    fn value_len(&self, field: u16, bytes: &[u8]) -> Result<usize, String>;
    /// The field's default value, packed (the DC default, or the type's zero value).
    fn default_value(&self, field: u16) -> Option<&[u8]>;
}
