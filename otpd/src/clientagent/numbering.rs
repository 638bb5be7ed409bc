//! Field numbers as a client dialect reads them. The 2003 Toontown client numbers a class's
//! fields by their place along its first-parent chain (its DC parser's rule), while the
//! cluster may number them file-wide; this owns the per-class tables between the two.

use crate::roles::Schema;

/// No such field on the other side.
const NONE: u16 = u16::MAX;

/// Per class, the client's field numbers to the cluster's and back.
pub struct ClientNumbering {
    to_cluster: Vec<Vec<u16>>,
    to_client: Vec<Vec<u16>>,
}

impl ClientNumbering {
    /// The 2003 client's numbering of the cluster's DC files. A field the client cannot name
    /// (from a second parent) or the cluster does not have in that class (a shadowed one)
    /// has no entry, and is neither sent nor accepted.
    pub fn legacy_2003(schema: &Schema) -> ClientNumbering {
        let dc = schema.dc();
        let mut to_cluster = Vec::with_capacity(dc.num_classes());
        let mut to_client = Vec::with_capacity(dc.num_classes());
        for c in dc.classes() {
            let mut inward = Vec::new();
            let mut outward = Vec::new();
            if !c.is_struct() {
                for (pos, f) in dc.legacy_fields(c).iter().enumerate() {
                    let cluster = f.number();
                    let same = cluster >= 0
                        && schema
                            .dc_field(c.id(), cluster as u16)
                            .is_some_and(|g| g.decl_index() == f.decl_index());
                    let cluster = if same { cluster as u16 } else { NONE };
                    inward.push(cluster);
                    if cluster != NONE {
                        let at = cluster as usize;
                        if outward.len() <= at {
                            outward.resize(at + 1, NONE);
                        }
                        outward[at] = pos as u16;
                    }
                }
            }
            to_cluster.push(inward);
            to_client.push(outward);
        }
        ClientNumbering {
            to_cluster,
            to_client,
        }
    }

    /// The cluster's number for the field the client calls `field` in `class`.
    pub fn to_cluster(&self, class: u16, field: u16) -> Option<u16> {
        Self::look(&self.to_cluster, class, field)
    }

    /// The client's number for the cluster's `field` of `class`.
    pub fn to_client(&self, class: u16, field: u16) -> Option<u16> {
        Self::look(&self.to_client, class, field)
    }

    fn look(table: &[Vec<u16>], class: u16, field: u16) -> Option<u16> {
        match table.get(class as usize)?.get(field as usize) {
            Some(&n) if n != NONE => Some(n),
            _ => None,
        }
    }
}
