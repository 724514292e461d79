//! The one place treectl's HTTP clients are built, and the policy that
//! bounds every request.
//!
//! The policy, for the pull, the push/publish API and the lockfiles'
//! downloads alike:
//!
//! - connecting may take [`HttpPolicy::connect_timeout`];
//! - a small request (JSON, the ref index, a health probe) has
//!   [`HttpPolicy::request_timeout`] to send itself and get its answer's
//!   headers, and again for its body (reqwest's blocking client times each
//!   wait separately);
//! - a big body being *downloaded* is not bounded in total, but aborted
//!   when it moves slower than [`LowSpeed`] (see
//!   [`crate::body::Metered`]): a slow mirror fails over, a slow but steady
//!   one finishes;
//! - a big body being *uploaded* gets the request timeout plus one second
//!   per [`LowSpeed::limit`] bytes ([`HttpPolicy::upload_timeout`]): the
//!   same floor as a download, so a large pack is never cut for its size.
//!
//! Every client sends treectl's user agent, keeps idle connections (up to
//! [`HttpPolicy::pool_max_idle_per_host`] per host) for keep-alive, and
//! turns off Nagle's algorithm (requests are small and latency-bound).

use std::time::Duration;

use reqwest::blocking::Client;

use crate::error::TransportError;

/// `treectl/VERSION`, sent with every request.
pub const USER_AGENT: &str = concat!("treectl/", env!("CARGO_PKG_VERSION"));

/// The low-speed abort: a transfer slower than `limit` bytes per second,
/// measured over `time`, is aborted (and counts as transient).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowSpeed {
    pub limit: u64,
    pub time: Duration,
}

impl Default for LowSpeed {
    fn default() -> Self {
        LowSpeed {
            limit: 1024,
            time: Duration::from_secs(30),
        }
    }
}

/// How every request of one client is bounded; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpPolicy {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub low_speed: LowSpeed,
    pub pool_max_idle_per_host: usize,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy {
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(300),
            low_speed: LowSpeed::default(),
            pool_max_idle_per_host: 16,
        }
    }
}

impl HttpPolicy {
    /// A blocking client that follows this policy.
    pub fn client(&self) -> Result<Client, TransportError> {
        Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host.max(1))
            .tcp_nodelay(true)
            .user_agent(USER_AGENT)
            .build()
            .map_err(TransportError::Client)
    }

    /// The time allowed to send a body of `len` bytes and get the answer.
    pub fn upload_timeout(&self, len: u64) -> Duration {
        let floor = self.low_speed.limit.max(1);
        self.request_timeout + Duration::from_secs(len / floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_get_time_for_their_size() {
        let p = HttpPolicy::default();
        assert_eq!(p.upload_timeout(0), p.request_timeout);
        assert_eq!(
            p.upload_timeout(32 << 20),
            p.request_timeout + Duration::from_secs(32 << 10)
        );
        p.client().expect("a client");
    }
}
