//! Object ids: the SHA-256 of an object's canonical encoding.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Length of an object id in bytes.
pub const ID_LEN: usize = 32;

/// A SHA-256 object id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; ID_LEN]);

impl ObjectId {
    /// Hashes `data` as one whole canonical encoding.
    pub fn of(data: &[u8]) -> ObjectId {
        ObjectId(Sha256::digest(data).into())
    }

    /// Lower-case hexadecimal, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first `n` hex digits, for display.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(12);
        s
    }

    /// Parses exactly 64 hex digits.
    pub fn from_hex(s: &str) -> Option<ObjectId> {
        if s.len() != ID_LEN * 2 {
            return None;
        }
        let mut out = [0u8; ID_LEN];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(ObjectId(out))
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.to_hex())
    }
}

impl FromStr for ObjectId {
    type Err = InvalidObjectId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ObjectId::from_hex(s).ok_or_else(|| InvalidObjectId(s.to_owned()))
    }
}

impl serde::Serialize for ObjectId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ObjectId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A string that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("not an object id (64 hex digits): {0:?}")]
pub struct InvalidObjectId(pub String);

/// Incremental hashing, for file objects whose header and content arrive apart.
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> ObjectId {
        ObjectId(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects() {
        let id = ObjectId::of(b"");
        assert_eq!(
            id.to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(ObjectId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ObjectId::from_hex("e3b0"), None);
        assert_eq!(ObjectId::from_hex(&"g".repeat(64)), None);
    }
}
