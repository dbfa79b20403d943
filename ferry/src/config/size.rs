//! Sizes in the configuration: a number of bytes, or a number with
//! PostgreSQL's units (`kB`, `MB`, `GB`, `TB`, each 1024 of the one
//! before), as `max_slot_wal_keep_size` takes them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `20000`, `512kB`, `10 GB`; None for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let number: u64 = number.parse().ok()?;
        let shift = match unit.trim() {
            "" | "B" => 0,
            "kB" => 10,
            "MB" => 20,
            "GB" => 30,
            "TB" => 40,
            _ => return None,
        };
        number.checked_mul(1 << shift).map(ByteSize)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(ByteSize(n)),
            Raw::Text(t) => ByteSize::parse(&t).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{t:?} is not a size: a number of bytes, or a number with kB, MB, GB or TB"
                ))
            }),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_postgresqls_units() {
        assert_eq!(ByteSize::parse("20000"), Some(ByteSize(20000)));
        assert_eq!(ByteSize::parse("512kB"), Some(ByteSize(512 << 10)));
        assert_eq!(ByteSize::parse("10 GB"), Some(ByteSize(10 << 30)));
        assert_eq!(ByteSize::parse("1TB"), Some(ByteSize(1 << 40)));
        for bad in ["", "GB", "10 gb", "-1", "1.5GB", "99999999999999TB"] {
            assert_eq!(ByteSize::parse(bad), None, "{bad}");
        }
    }
}
