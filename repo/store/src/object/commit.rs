//! Commit objects: a root tree plus history and metadata.

use std::collections::BTreeMap;

use super::codec::{Reader, Writer};
use super::{DecodeError, ObjectKind};
use crate::hash::ObjectId;

/// A commit: which tree, which parent, when, why, and free-form metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub parent: Option<ObjectId>,
    pub root_tree: ObjectId,
    pub root_meta: ObjectId,
    /// Seconds since the Unix epoch, UTC.
    pub timestamp: i64,
    pub subject: String,
    pub body: String,
    /// Key/value metadata, kept sorted by key.
    pub metadata: BTreeMap<String, String>,
}

impl Commit {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(ObjectKind::Commit);
        match &self.parent {
            Some(p) => {
                w.u8(1);
                w.id(p);
            }
            None => w.u8(0),
        }
        w.id(&self.root_tree);
        w.id(&self.root_meta);
        w.i64(self.timestamp);
        w.bytes(self.subject.as_bytes());
        w.bytes(self.body.as_bytes());
        w.count(self.metadata.len());
        for (k, v) in &self.metadata {
            w.bytes(k.as_bytes());
            w.bytes(v.as_bytes());
        }
        w.0
    }

    pub fn decode(data: &[u8]) -> Result<Commit, DecodeError> {
        let mut r = Reader::new(ObjectKind::Commit, data)?;
        let parent = match r.u8()? {
            0 => None,
            1 => Some(r.id()?),
            _ => return Err(r.invalid("parent flag must be 0 or 1")),
        };
        let root_tree = r.id()?;
        let root_meta = r.id()?;
        let timestamp = r.i64()?;
        let subject = r.text()?;
        let body = r.text()?;
        let n = r.count(8)?;
        let mut metadata = BTreeMap::new();
        let mut last: Option<String> = None;
        for _ in 0..n {
            let k = r.text()?;
            let v = r.text()?;
            if last.as_ref().is_some_and(|l| *l >= k) {
                return Err(r.invalid("metadata keys not sorted and unique"));
            }
            last = Some(k.clone());
            metadata.insert(k, v);
        }
        r.finish()?;
        Ok(Commit {
            parent,
            root_tree,
            root_meta,
            timestamp,
            subject,
            body,
            metadata,
        })
    }

    pub fn id(&self) -> ObjectId {
        ObjectId::of(&self.encode())
    }

    /// The `version` metadata value, when the commit has one.
    pub fn version(&self) -> Option<&str> {
        self.metadata.get("version").map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = Commit {
            parent: Some(ObjectId::of(b"p")),
            root_tree: ObjectId::of(b"t"),
            root_meta: ObjectId::of(b"m"),
            timestamp: 1_700_000_000,
            subject: "subject".into(),
            body: "body\nmore".into(),
            metadata: [("version".to_string(), "1.0".to_string())].into(),
        };
        let back = Commit::decode(&c.encode()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.version(), Some("1.0"));
        let enc = c.encode();
        for cut in 0..enc.len() {
            assert!(Commit::decode(&enc[..cut]).is_err());
        }
    }
}
