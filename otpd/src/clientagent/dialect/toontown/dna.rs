//! The toon DNA a 2003 client may give a new toon (CREATE_AVATAR): exactly the strings its own
//! `AvatarDNA.makeNetString` writes for a toon, each index within the table the client looks
//! it up in when it parses (`makeFromNetString`) and draws (`Toon.generateToonClothes`) a toon.
//! Anything else would be stored and shown to every player, whose clients fail on it.
//!
//! The table sizes are those of the 2003 client's `AvatarDNA.py` (sv1.0.6.9); the names below
//! are its names. A server whose clients have other tables turns the check off
//! (`toontown.check_dna: false`).

/// The length of a toon's DNA: `'t'` and 14 uint8 fields (`makeNetString`).
pub const TOON_DNA_BYTES: usize = 15;

/// `toonHeadTypes` ("dls" .. "fll"): 22 heads.
pub const HEADS: u8 = 22;
/// `toonTorsoTypes` ("ss" .. "l"): 9 torsos.
pub const TORSOS: u8 = 9;
/// `toonLegTypes` ("s", "m", "l"): 3.
pub const LEGS: u8 = 3;
/// `Shirts` (the top texture, `topTex`): 23 textures.
pub const SHIRTS: u8 = 23;
/// `Sleeves` (`sleeveTex`): 14 textures.
pub const SLEEVES: u8 = 14;
/// `BoyShorts` (`botTex` of a boy): 8 textures.
pub const BOY_SHORTS: u8 = 8;
/// `GirlBottoms` (`botTex` of a girl: skirts and shorts): 10.
pub const GIRL_BOTTOMS: u8 = 10;
/// `ClothesColors` (`topTexColor`, `sleeveTexColor`, `botTexColor`): 28 colours.
pub const CLOTHES_COLORS: u8 = 28;
/// `allColorsList` (`armColor`, `gloveColor`, `legColor`, `headColor`): 26 colours.
pub const BODY_COLORS: u8 = 26;

/// Whether `dna` is a toon DNA the 2003 client writes and reads; the error names the first
/// field that is not (for the event and the log).
pub fn check_toon_dna(dna: &[u8]) -> Result<(), &'static str> {
    if dna.len() != TOON_DNA_BYTES {
        return Err("not 15 bytes long");
    }
    if dna[0] != b't' {
        return Err("not a toon (type is not 't')");
    }
    // makeNetString writes the gender as 1 (boy) or 0 (girl); the bottom texture is looked up
    // in BoyShorts or GirlBottoms by it.
    let bottoms = match dna[4] {
        1 => BOY_SHORTS,
        0 => GIRL_BOTTOMS,
        _ => return Err("gender is not 0 or 1"),
    };
    let fields: [(u8, u8, &'static str); 14] = [
        (dna[1], HEADS, "head out of range"),
        (dna[2], TORSOS, "torso out of range"),
        (dna[3], LEGS, "legs out of range"),
        (dna[4], 2, "gender is not 0 or 1"),
        (dna[5], SHIRTS, "top texture out of range"),
        (dna[6], CLOTHES_COLORS, "top colour out of range"),
        (dna[7], SLEEVES, "sleeve texture out of range"),
        (dna[8], CLOTHES_COLORS, "sleeve colour out of range"),
        (
            dna[9],
            bottoms,
            "bottom texture out of range for the gender",
        ),
        (dna[10], CLOTHES_COLORS, "bottom colour out of range"),
        (dna[11], BODY_COLORS, "arm colour out of range"),
        (dna[12], BODY_COLORS, "glove colour out of range"),
        (dna[13], BODY_COLORS, "leg colour out of range"),
        (dna[14], BODY_COLORS, "head colour out of range"),
    ];
    match fields.iter().find(|(v, n, _)| v >= n) {
        Some((_, _, why)) => Err(why),
        None => Ok(()),
    }
}

/// A valid toon DNA, for tests and load clients: a boy dog with short head and torso, the
/// first shirt, sleeve and shorts in colour 0, and body colour `color` (< `BODY_COLORS`).
pub fn sample_toon_dna(color: u8) -> [u8; TOON_DNA_BYTES] {
    [b't', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, color, 0, color, color]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dna(f: [u8; 14]) -> Vec<u8> {
        let mut v = vec![b't'];
        v.extend_from_slice(&f);
        v
    }

    /// Every field at its largest index of the client's tables is taken; one more is refused.
    #[test]
    fn each_field_is_an_index_into_the_clients_table() {
        let boy = [
            HEADS - 1,
            TORSOS - 1,
            LEGS - 1,
            1,
            SHIRTS - 1,
            CLOTHES_COLORS - 1,
            SLEEVES - 1,
            CLOTHES_COLORS - 1,
            BOY_SHORTS - 1,
            CLOTHES_COLORS - 1,
            BODY_COLORS - 1,
            BODY_COLORS - 1,
            BODY_COLORS - 1,
            BODY_COLORS - 1,
        ];
        assert_eq!(check_toon_dna(&dna(boy)), Ok(()));
        for i in [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13] {
            let mut f = boy;
            f[i] += 1;
            assert!(check_toon_dna(&dna(f)).is_err(), "field {i}");
            f[i] = u8::MAX;
            assert!(check_toon_dna(&dna(f)).is_err(), "field {i}");
        }
        assert_eq!(check_toon_dna(&sample_toon_dna(BODY_COLORS - 1)), Ok(()));
    }

    /// The bottom texture is a BoyShorts index for a boy, a GirlBottoms index for a girl.
    #[test]
    fn bottoms_follow_the_gender() {
        let mut f = [0u8; 14];
        f[3] = 0; // a girl
        f[8] = GIRL_BOTTOMS - 1;
        assert_eq!(check_toon_dna(&dna(f)), Ok(()));
        f[3] = 1; // the same bottom on a boy: past BoyShorts
        assert!(check_toon_dna(&dna(f)).is_err());
        f[8] = BOY_SHORTS - 1;
        assert_eq!(check_toon_dna(&dna(f)), Ok(()));
        f[3] = 2;
        assert!(check_toon_dna(&dna(f)).is_err());
    }

    /// Only 't' and exactly 15 bytes: a suit's or a character's DNA, a short or long string,
    /// trailing bytes.
    #[test]
    fn only_a_toon_of_the_exact_length() {
        let good = sample_toon_dna(0);
        assert!(check_toon_dna(&good).is_ok());
        assert!(check_toon_dna(&good[..14]).is_err());
        let mut long = good.to_vec();
        long.push(0);
        assert!(check_toon_dna(&long).is_err());
        assert!(check_toon_dna(&vec![0u8; 60_000]).is_err());
        assert!(check_toon_dna(b"").is_err());
        let mut suit = good;
        suit[0] = b's';
        assert!(check_toon_dna(&suit).is_err());
        // The short DNAs old test fixtures used.
        assert!(check_toon_dna(b"t\x05\x01\x00\x01\x00").is_err());
    }
}
