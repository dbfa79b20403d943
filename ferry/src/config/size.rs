//! Sizes in the configuration: a number of bytes, or a number with
//! PostgreSQL's units (`kB`, `MB`, `GB`, `TB`, each 1024 of the one
//! before), as `max_slot_wal_keep_size` takes them; and thresholds that
//! are a size, a number of rows (`"100000 rows"`) or `"off"`.

use ferry_batcher::compact::CompactAfter;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a size or threshold is written: a bare number (bytes) or text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Bytes(u64),
    Text(String),
}

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

/// `[retention] compact_after`: a size, `"<n> rows"`, or `"off"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold(pub CompactAfter);

impl Default for Threshold {
    /// 16 MB: a replica away costs the master little before its changes
    /// are netted, and a pass nets enough to be worth its scan.
    fn default() -> Self {
        Threshold(CompactAfter::Bytes(16 << 20))
    }
}

impl Threshold {
    /// `16MB`, `100000 rows`, `off`; None for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text == "off" {
            return Some(Threshold(CompactAfter::Off));
        }
        if let Some(rows) = text.strip_suffix("rows") {
            let rows: u64 = rows.trim().parse().ok()?;
            return Some(Threshold(CompactAfter::Rows(rows)));
        }
        ByteSize::parse(text).map(|b| Threshold(CompactAfter::Bytes(b.0)))
    }

    /// Whether it would compact at every pass (a threshold of nothing).
    pub fn is_zero(self) -> bool {
        matches!(self.0, CompactAfter::Rows(0) | CompactAfter::Bytes(0))
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(Threshold(CompactAfter::Bytes(n))),
            Raw::Text(t) => Threshold::parse(&t).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{t:?} is not a threshold: a size (bytes, or a number with kB, MB, GB or TB), \
                     a number of rows (\"100000 rows\") or \"off\""
                ))
            }),
        }
    }
}

impl Serialize for Threshold {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            CompactAfter::Off => s.serialize_str("off"),
            CompactAfter::Rows(n) => s.serialize_str(&format!("{n} rows")),
            CompactAfter::Bytes(n) => s.serialize_u64(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_a_size_a_number_of_rows_or_off() {
        let t = |s: &str| Threshold::parse(s).map(|t| t.0);
        assert_eq!(t("16MB"), Some(CompactAfter::Bytes(16 << 20)));
        assert_eq!(t("100000 rows"), Some(CompactAfter::Rows(100_000)));
        assert_eq!(t("5rows"), Some(CompactAfter::Rows(5)));
        assert_eq!(t("off"), Some(CompactAfter::Off));
        for bad in ["", "rows", "-1 rows", "1.5 rows", "of", "16 mb"] {
            assert_eq!(t(bad), None, "{bad}");
        }
        assert_eq!(Threshold::default().0, CompactAfter::Bytes(16 << 20));
    }

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
