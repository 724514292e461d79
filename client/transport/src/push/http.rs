//! A treectl server as a publish target: `/v1/objects/missing`, pack
//! uploads to `/v1/objects`, `/v1/publish`, `/v1/revert`, `/v1/history`.

use treectl_release::publish::HistoryEntry;
use treectl_release::sign::PublicKey;
use treectl_store::object::{Commit, ObjectKind};
use treectl_store::refs::RefName;
use treectl_store::{ObjectId, Repo};
use treectl_wire::{
    write_pack_end, write_pack_record, write_pack_start, HistoryResponse, HoldRequest,
    MissingRequest, MissingResponse, ObjectRef, PromoteRequest, PublishCheckResponse,
    PublishRequest, PublishResponse, ReleaseRequest, RevertRequest, RolloutRequest, RotateRequest,
    RotateResponse, UploadResponse,
};

use super::{PublishOptions, PublishTarget, RolloutAction, Uploaded};
use crate::error::{ErrorClass, TransportError};
use crate::http::HttpRemote;

/// Objects per "which do you lack" request.
const MISSING_BATCH: usize = 20_000;
/// Upload packs are cut at about this many bytes.
const PACK_TARGET_BYTES: usize = 32 << 20;

/// A server, by its API client.
pub struct HttpTarget {
    remote: HttpRemote,
}

impl HttpTarget {
    pub fn new(remote: HttpRemote) -> HttpTarget {
        HttpTarget { remote }
    }

    /// Ends `pack` and uploads it, if it holds anything.
    fn flush(&self, pack: &mut Vec<u8>, up: &mut Uploaded) -> Result<(), TransportError> {
        if pack.is_empty() {
            return Ok(());
        }
        write_pack_end(pack).expect("writing to a Vec");
        up.bytes += pack.len() as u64;
        let resp: UploadResponse =
            self.remote
                .post_pack("/v1/objects", std::mem::take(pack), "uploading objects")?;
        up.stored += resp.stored;
        Ok(())
    }
}

impl PublishTarget for HttpTarget {
    fn missing(&self, objects: &[ObjectRef]) -> Result<Vec<ObjectRef>, TransportError> {
        let mut out = Vec::new();
        for chunk in objects.chunks(MISSING_BATCH) {
            let resp: MissingResponse = self.remote.post_json(
                "/v1/objects/missing",
                &MissingRequest {
                    objects: chunk.to_vec(),
                },
                "asking which objects the server lacks",
            )?;
            out.extend(resp.missing);
        }
        Ok(out)
    }

    fn upload(&self, src: &Repo, objects: &[ObjectRef]) -> Result<Uploaded, TransportError> {
        let mut up = Uploaded::default();
        let mut pack = Vec::new();
        for o in objects {
            if pack.is_empty() {
                write_pack_start(&mut pack).expect("writing to a Vec");
            }
            let data = src.read_wire_form(&o.id, o.kind)?;
            write_pack_record(&mut pack, o.kind, &o.id, &data).expect("writing to a Vec");
            if pack.len() >= PACK_TARGET_BYTES {
                self.flush(&mut pack, &mut up)?;
            }
        }
        self.flush(&mut pack, &mut up)?;
        Ok(up)
    }

    fn publish(
        &self,
        name: &RefName,
        commit: &ObjectId,
        opts: &PublishOptions,
    ) -> Result<PublishResponse, TransportError> {
        self.remote.post_json(
            "/v1/publish",
            &PublishRequest {
                ref_name: name.to_string(),
                commit: *commit,
                force: opts.force,
                rollout: opts.rollout,
                barrier: opts.barrier,
            },
            &format!("publishing {name}"),
        )
    }

    fn check_publish(
        &self,
        name: &RefName,
        commit: &ObjectId,
        opts: &PublishOptions,
    ) -> Result<(), TransportError> {
        let asked: Result<PublishCheckResponse, _> = self.remote.post_json(
            "/v1/publish/check",
            &PublishRequest {
                ref_name: name.to_string(),
                commit: *commit,
                force: opts.force,
                rollout: opts.rollout,
                barrier: opts.barrier,
            },
            &format!("publishing {name}"),
        );
        match asked {
            Ok(_) => Ok(()),
            // A server older than the check: the publish itself decides.
            Err(TransportError::Api { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn rollout(
        &self,
        name: &RefName,
        action: RolloutAction,
    ) -> Result<PublishResponse, TransportError> {
        let action = match action {
            RolloutAction::Percent(p) => p.to_string(),
            other => other.to_string(),
        };
        self.remote.post_json(
            "/v1/rollout",
            &RolloutRequest {
                ref_name: name.to_string(),
                action,
            },
            &format!("changing the rollout of {name}"),
        )
    }

    fn promote(
        &self,
        from: &RefName,
        to: &RefName,
        force: bool,
    ) -> Result<PublishResponse, TransportError> {
        self.remote.post_json(
            "/v1/promote",
            &PromoteRequest {
                from: from.to_string(),
                to: to.to_string(),
                force,
            },
            &format!("promoting {from} to {to}"),
        )
    }

    fn read_commit(&self, id: &ObjectId) -> Result<Commit, TransportError> {
        let hex = id.to_hex();
        let what = format!("reading commit {id}");
        let bytes = self.remote.get_bytes(
            &format!("/objects/{}/{}.commit", &hex[..2], &hex[2..]),
            &what,
        )?;
        let got = ObjectId::of(&bytes);
        if got != *id {
            return Err(TransportError::WrongObject {
                url: self.remote.base().to_owned(),
                kind: ObjectKind::Commit,
                id: got,
                want: format!("commit {id}"),
            });
        }
        Commit::decode(&bytes).map_err(|err| TransportError::Decode {
            what: "commit",
            id: *id,
            err,
        })
    }

    fn hold(&self, name: &RefName, reason: &str) -> Result<HistoryEntry, TransportError> {
        self.remote.post_json(
            "/v1/hold",
            &HoldRequest {
                ref_name: name.to_string(),
                reason: reason.to_owned(),
            },
            &format!("holding {name}"),
        )
    }

    fn rotate_keys(
        &self,
        keys: &[PublicKey],
        threshold: u32,
    ) -> Result<RotateResponse, TransportError> {
        self.remote.post_json(
            "/v1/keys/rotate",
            &RotateRequest {
                keys: keys.iter().map(PublicKey::to_hex).collect(),
                threshold,
            },
            "rotating the signing keys",
        )
    }

    fn read_public_file(&self, name: &str) -> Result<Option<Vec<u8>>, TransportError> {
        match self
            .remote
            .get_bytes(&format!("/{name}"), &format!("reading {name}"))
        {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.class() == ErrorClass::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn release(&self, name: &RefName) -> Result<HistoryEntry, TransportError> {
        self.remote.post_json(
            "/v1/release",
            &ReleaseRequest {
                ref_name: name.to_string(),
            },
            &format!("releasing {name}"),
        )
    }

    fn revert(
        &self,
        name: &RefName,
        to: Option<&str>,
        reason: &str,
    ) -> Result<PublishResponse, TransportError> {
        self.remote.post_json(
            "/v1/revert",
            &RevertRequest {
                ref_name: name.to_string(),
                to: to.map(str::to_owned),
                reason: reason.to_owned(),
            },
            &format!("reverting {name}"),
        )
    }

    fn history(&self, name: &RefName) -> Result<Vec<HistoryEntry>, TransportError> {
        let resp: HistoryResponse = self.remote.get_json(
            "/v1/history",
            &[("ref", name.as_str())],
            &format!("reading the history of {name}"),
        )?;
        Ok(resp.entries)
    }
}
