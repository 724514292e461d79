//! The transport's one error type, [`TransportError`], and the question a
//! caller asks of it: [`ErrorClass`] (retry later? refused on trust? bad
//! data? nothing there? the server said no? a local problem?), so an
//! update timer or the CLI decides without parsing text.
//!
//! The messages are the sentences users and tests know; a variant whose
//! text already carries its cause keeps the cause as a field rather than as
//! [`std::error::Error::source`], so `{:#}` (anyhow's chain) does not print
//! it twice.

use std::error::Error as StdError;
use std::io;
use std::path::PathBuf;

use treectl_release::keyset::KeySetError;
use treectl_release::publish::PublishError;
use treectl_release::remote::RemoteError;
use treectl_release::sign::SignError;
use treectl_release::summary::IndexError;
use treectl_store::object::DecodeError;
use treectl_store::store::WireHeaderError;
use treectl_store::{ObjectId, ObjectKind};
use treectl_wire::PackError;

/// What kind of failure an error is: what a caller can do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// Offline, timed out, cut short, too slow, or the server is failing
    /// (5xx, 408, 429): retry later.
    Transient,
    /// Refused on trust grounds: a missing or bad signature, an untrusted
    /// key, a replayed or older index, an expired index, a commit signed
    /// for another ref, a ref moving backwards.
    TrustRefused,
    /// Data that is not what it claims: a hash mismatch, a truncated or
    /// malformed object or pack, a body over its size limit.
    Corrupt,
    /// Nothing there: no published index, a ref the remote does not
    /// publish, an object or ref that does not exist.
    NotFound,
    /// The server refused the request (authentication, permission, a bad
    /// request).
    Refused,
    /// A local problem: the store's I/O, the configuration, the arguments.
    Local,
}

impl ErrorClass {
    /// Whether trying again later may succeed.
    pub fn retry_later(self) -> bool {
        self == ErrorClass::Transient
    }

    /// The class of the first [`TransportError`] in `err`'s source chain
    /// (`err` included), for callers that hold a wrapped error.
    pub fn of(err: &(dyn StdError + 'static)) -> Option<ErrorClass> {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(t) = e.downcast_ref::<TransportError>() {
                return Some(t.class());
            }
            cur = e.source();
        }
        None
    }

    /// How much a class says about a set of failures: when every source
    /// failed, a trust refusal anywhere matters more than one mirror being
    /// offline.
    fn weight(self) -> u8 {
        match self {
            ErrorClass::TrustRefused => 5,
            ErrorClass::Corrupt => 4,
            ErrorClass::Local => 3,
            ErrorClass::Refused => 2,
            ErrorClass::Transient => 1,
            ErrorClass::NotFound => 0,
        }
    }
}

/// Everything that can go wrong moving objects between repositories.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A request could not be sent or answered (connect, timeout, reset).
    #[error("GET {url}: {what}: {cause}")]
    Request {
        url: String,
        what: &'static str,
        cause: String,
    },
    /// A plain GET or fetch answered something other than success.
    #[error("{url} answered {}{}", status_text(*status), auth_hint(*status))]
    Status { url: String, status: u16 },
    /// The `/v1/` API answered with an error (its JSON `error` sentence).
    #[error("{what}: {base} answered {}: {message}{}", status_text(*status), auth_hint(*status))]
    Api {
        what: String,
        base: String,
        status: u16,
        message: String,
    },
    /// The `/v1/` API could not be reached.
    #[error("{what}: cannot reach {base}")]
    Unreachable {
        what: String,
        base: String,
        #[source]
        err: reqwest::Error,
    },
    #[error("{what}: reading the answer")]
    ReadAnswer {
        what: String,
        #[source]
        err: reqwest::Error,
    },
    #[error("{what}: the server's answer is not the expected JSON")]
    BadAnswer {
        what: String,
        #[source]
        err: serde_json::Error,
    },
    #[error("encoding the request")]
    Encode(#[source] serde_json::Error),
    #[error("setting up the HTTP client")]
    Client(#[source] reqwest::Error),

    /// A body that stopped (`stalled`: slower than the low-speed limit).
    #[error("the body {} after {got} bytes: {cause}", if *stalled { "stalled" } else { "was cut short" })]
    BodyCut {
        got: usize,
        stalled: bool,
        cause: String,
    },
    #[error("the body was cut short after {got} of {declared} bytes")]
    BodyShort { got: usize, declared: u64 },
    #[error("the body declares {declared} bytes, over the limit of {limit}")]
    DeclaredTooLong { declared: u64, limit: u64 },
    #[error("the body is longer than the limit of {limit} bytes")]
    TooLong { limit: u64 },
    /// A file object whose header declares more content than allowed
    /// (refused before decompressing it).
    #[error("it declares {size} bytes of content, over the limit of {limit}")]
    ContentTooLarge { size: u64, limit: u64 },
    #[error(transparent)]
    FileHeader(#[from] WireHeaderError),
    #[error("{url}: {err}")]
    Pack { url: String, err: PackError },
    #[error("{url}: the pack ended early")]
    PackEnded { url: String },
    /// A static mirror's answer to a Range request of a pack that is not
    /// exactly the bytes asked for.
    #[error("{url} answered {status} with Content-Range {got:?} to a request for {want:?}")]
    BadRange {
        url: String,
        status: u16,
        got: String,
        want: String,
    },
    /// A pack index that is not the one the signed index lists.
    #[error("{url}: the pack index is not the signed one: {reason}")]
    BadPackIndex { url: String, reason: String },
    #[error("{url} sent {kind} object {id} where {want} was expected")]
    WrongObject {
        url: String,
        kind: ObjectKind,
        id: ObjectId,
        want: String,
    },
    /// An object from `url` failed the receiver's checks.
    #[error("{url} sent a bad object")]
    BadObject {
        url: String,
        #[source]
        err: Box<TransportError>,
    },
    /// An object of a batched fetch failed the receiver's checks.
    #[error("{what} from {url}")]
    BadPackObject {
        what: String,
        url: String,
        #[source]
        err: Box<TransportError>,
    },
    #[error("decoding {what} {id}")]
    Decode {
        what: &'static str,
        id: ObjectId,
        #[source]
        err: DecodeError,
    },
    #[error("the tree is more than {0} directories deep")]
    TooDeep(usize),

    /// Every source of the remote failed to give an acceptable index.
    #[error("{}", sources_message(target, attempts))]
    AllSources {
        /// `REMOTE:REF`.
        target: String,
        /// Each source tried, with why it failed, in order.
        attempts: Vec<(String, TransportError)>,
    },
    #[error("{url} has no summary.json: nothing is published there")]
    NothingPublished { url: String },
    #[error("the ref index has serial {serial}, lower than serial {accepted} already accepted from {remote}: refusing a replayed or stale index (a mirror may be behind)")]
    ReplayedIndex {
        serial: u64,
        accepted: u64,
        remote: String,
    },
    #[error("the ref index has serial {serial} like the one accepted from {remote} before, but different content: refusing it")]
    ForkedIndex { serial: u64, remote: String },
    #[error(
        "{remote} does not publish {ref_name} (published: {})",
        published_list(published)
    )]
    NotPublished {
        remote: String,
        ref_name: String,
        published: Vec<String>,
    },
    #[error("{remote}:{ref_name} has serial {serial}, lower than serial {accepted} accepted before: refusing a downgrade")]
    Downgrade {
        remote: String,
        ref_name: String,
        serial: u64,
        accepted: u64,
    },
    #[error("commit {commit} has no signature at {url}: refusing unsigned content (the remote has a trusted key)")]
    UnsignedCommit { commit: ObjectId, url: String },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    KeySet(#[from] KeySetError),

    #[error(transparent)]
    Store(#[from] treectl_store::Error),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("the token file {} is empty", path.display())]
    EmptyToken { path: PathBuf },
    /// A local repository's commit lacks objects, so it cannot be pushed.
    #[error("commit {commit} of {ref_name} is incomplete in {}: {first_kind} {first} and {more} more object(s) are missing; run `treectl fsck`", repo.display())]
    Incomplete {
        commit: ObjectId,
        ref_name: String,
        repo: PathBuf,
        first: ObjectId,
        first_kind: ObjectKind,
        more: usize,
    },
    /// Arguments that do not make sense together.
    #[error("{0}")]
    Usage(String),
    #[error("{kind} object {id} was not fetched")]
    NotFetched { kind: ObjectKind, id: ObjectId },
    #[error("a commit thread panicked")]
    Panicked,
    /// Another worker failed first; this one gave up.
    #[error("stopped")]
    Stopped,

    /// What was being done when `err` happened.
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        err: Box<TransportError>,
    },
}

impl TransportError {
    /// What kind of failure this is.
    pub fn class(&self) -> ErrorClass {
        use ErrorClass::*;
        use TransportError as E;
        match self {
            E::Request { .. }
            | E::Unreachable { .. }
            | E::ReadAnswer { .. }
            | E::BodyCut { .. }
            | E::BodyShort { .. } => Transient,
            E::Status { status, .. } | E::Api { status, .. } => status_class(*status),
            E::Pack { err, .. } => match err {
                PackError::Truncated | PackError::Io(_) => Transient,
                _ => Corrupt,
            },
            E::BadAnswer { .. }
            | E::DeclaredTooLong { .. }
            | E::TooLong { .. }
            | E::ContentTooLarge { .. }
            | E::FileHeader(_)
            | E::PackEnded { .. }
            | E::BadRange { .. }
            | E::BadPackIndex { .. }
            | E::WrongObject { .. }
            | E::Decode { .. }
            | E::TooDeep(_) => Corrupt,
            E::BadObject { err, .. } | E::BadPackObject { err, .. } | E::Context { err, .. } => {
                err.class()
            }
            E::AllSources { attempts, .. } => attempts
                .iter()
                .map(|(_, e)| e.class())
                .max_by_key(|c| c.weight())
                .unwrap_or(Local),
            E::NothingPublished { .. } | E::NotPublished { .. } => NotFound,
            E::ReplayedIndex { .. }
            | E::ForkedIndex { .. }
            | E::Downgrade { .. }
            | E::UnsignedCommit { .. } => TrustRefused,
            E::Index(e) => index_class(e),
            E::Sign(e) => sign_class(e),
            E::KeySet(e) => key_set_class(e),
            E::Store(e) => store_class(e),
            E::Remote(RemoteError::Repo(e)) => store_class(e),
            E::Publish(e) => publish_class(e),
            E::Encode(_)
            | E::Client(_)
            | E::Remote(_)
            | E::Io { .. }
            | E::EmptyToken { .. }
            | E::Incomplete { .. }
            | E::Usage(_)
            | E::NotFetched { .. }
            | E::Panicked
            | E::Stopped => Local,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        self.class().retry_later()
    }

    /// Wraps this error in what was being done.
    pub fn context(self, what: impl Into<String>) -> TransportError {
        TransportError::Context {
            what: what.into(),
            err: Box::new(self),
        }
    }

    /// The message with its causes, `: `-separated (as anyhow's `{:#}`).
    pub fn chain_text(&self) -> String {
        chain_text(self)
    }

    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |err| TransportError::Io { what, path, err }
    }
}

/// `err` and its sources, `: `-separated.
pub(crate) fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

/// The innermost cause's message: what a transport library's error is
/// really about, without its wrapping.
pub(crate) fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn status_text(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .map(|s| s.to_string())
        .unwrap_or_else(|_| status.to_string())
}

fn auth_hint(status: u16) -> &'static str {
    match status {
        401 => " (pass a token with --token-file FILE or $TREECTL_TOKEN)",
        _ => "",
    }
}

fn status_class(status: u16) -> ErrorClass {
    match status {
        404 => ErrorClass::NotFound,
        408 | 429 | 500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Refused,
    }
}

fn index_class(e: &IndexError) -> ErrorClass {
    match e {
        IndexError::Malformed { .. } => ErrorClass::Corrupt,
        IndexError::UnsupportedFormat { .. } => ErrorClass::Local,
        IndexError::Expired { .. } => ErrorClass::TrustRefused,
        IndexError::Sign(e) => sign_class(e),
        IndexError::KeySet(e) => key_set_class(e),
        IndexError::Repo(e) => store_class(e),
    }
}

fn key_set_class(e: &KeySetError) -> ErrorClass {
    match e {
        KeySetError::Malformed { .. } => ErrorClass::Corrupt,
        KeySetError::UnsupportedFormat { .. } => ErrorClass::Local,
        KeySetError::BelowThreshold { .. }
        | KeySetError::Missing { .. }
        | KeySetError::Replayed { .. }
        | KeySetError::Forked { .. }
        | KeySetError::NoAnchor { .. } => ErrorClass::TrustRefused,
        KeySetError::Sign(e) => sign_class(e),
        KeySetError::Repo(e) => store_class(e),
    }
}

fn sign_class(e: &SignError) -> ErrorClass {
    match e {
        SignError::Unsigned { .. } | SignError::BadSignature { .. } => ErrorClass::TrustRefused,
        SignError::CommitSignatures { .. } => ErrorClass::Corrupt,
        SignError::KeyFileIo { .. } | SignError::BadKeyFile { .. } => ErrorClass::Local,
        SignError::Repo(e) => store_class(e),
    }
}

fn store_class(e: &treectl_store::Error) -> ErrorClass {
    match e {
        treectl_store::Error::Corrupt { .. } | treectl_store::Error::Decode { .. } => {
            ErrorClass::Corrupt
        }
        treectl_store::Error::NotFound { .. } => ErrorClass::NotFound,
        _ => ErrorClass::Local,
    }
}

fn publish_class(e: &PublishError) -> ErrorClass {
    match e {
        PublishError::NotPublished { .. } => ErrorClass::NotFound,
        PublishError::Index(e) => index_class(e),
        PublishError::Sign(e) => sign_class(e),
        PublishError::KeySet(e) => key_set_class(e),
        PublishError::Repo(e) => store_class(e),
        _ => ErrorClass::Local,
    }
}

fn published_list(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

fn sources_message(target: &str, attempts: &[(String, TransportError)]) -> String {
    let mut out = String::new();
    for (i, (url, err)) in attempts.iter().enumerate() {
        let err = chain_text(err);
        if i == 0 {
            out = format!("pulling {target} from {url}: {err}");
        } else {
            out = format!("{out}; then from mirror {url}: {err}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_cause() {
        let cut = TransportError::BodyShort {
            got: 1,
            declared: 2,
        };
        assert!(cut.is_transient());
        let wrapped = cut.context("pulling o:os/stable");
        assert_eq!(wrapped.class(), ErrorClass::Transient);
        assert_eq!(
            wrapped.chain_text(),
            "pulling o:os/stable: the body was cut short after 1 of 2 bytes"
        );
        let status = |s| TransportError::Status {
            url: "u".into(),
            status: s,
        };
        assert_eq!(status(404).class(), ErrorClass::NotFound);
        assert_eq!(status(503).class(), ErrorClass::Transient);
        assert_eq!(status(403).class(), ErrorClass::Refused);
        assert_eq!(
            status(401).to_string(),
            "u answered 401 Unauthorized (pass a token with --token-file FILE or $TREECTL_TOKEN)"
        );
    }

    #[test]
    fn all_sources_name_each_and_weigh_trust_highest() {
        let e = TransportError::AllSources {
            target: "o:r".into(),
            attempts: vec![
                (
                    "http://a".into(),
                    TransportError::Request {
                        url: "http://a/summary.json".into(),
                        what: "cannot connect",
                        cause: "refused".into(),
                    },
                ),
                (
                    "http://b".into(),
                    TransportError::ReplayedIndex {
                        serial: 1,
                        accepted: 2,
                        remote: "o".into(),
                    },
                ),
            ],
        };
        assert_eq!(e.class(), ErrorClass::TrustRefused);
        let text = e.to_string();
        assert!(text.starts_with("pulling o:r from http://a: GET http://a/summary.json"));
        assert!(text.contains("; then from mirror http://b: the ref index has serial 1"));
        let any: Box<dyn StdError + 'static> = Box::new(e.context("outer"));
        assert_eq!(ErrorClass::of(any.as_ref()), Some(ErrorClass::TrustRefused));
    }
}
