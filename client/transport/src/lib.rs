//! treectl-transport: how objects travel between repositories.
//!
//! A client *pulls* a published ref from a remote server or mirror
//! ([`pull`]): the signed index, the commit's signature and every object's
//! hash are verified before anything enters the store. A release engineer
//! *pushes* and *publishes* to a server or to a local repository
//! ([`push`]). Everything on the wire goes through one HTTP client policy
//! ([`client`]), one retry policy ([`retry`]) and one worker pool
//! ([`parallel`]); failures are [`TransportError`]s whose [`ErrorClass`]
//! tells a caller whether to retry later, distrust the remote, or look
//! locally.
//!
//! ```
//! use treectl_transport::pull::{parse_target, PullOptions};
//! use treectl_transport::ErrorClass;
//!
//! let (remote, r) = parse_target("origin:os/stable").unwrap();
//! assert_eq!((remote.as_str(), r.as_str()), ("origin", "os/stable"));
//! let err = parse_target("os/stable").unwrap_err();
//! assert_eq!(err.class(), ErrorClass::Local);
//! assert_eq!(PullOptions::default().jobs, 8);
//! ```

pub mod body;
pub mod client;
pub mod error;
pub mod http;
pub mod parallel;
pub mod progress;
pub mod pull;
pub mod push;
pub mod retry;
pub mod source;
pub mod token;

pub use error::{ErrorClass, TransportError};
pub use token::read_token;
