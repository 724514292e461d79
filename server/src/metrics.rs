//! Counters exported in the Prometheus text format at `/v1/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub file_requests: AtomicU64,
    pub file_bytes: AtomicU64,
    pub api_requests: AtomicU64,
    pub responses_2xx: AtomicU64,
    pub responses_3xx: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
    pub objects_received: AtomicU64,
    pub objects_stored: AtomicU64,
    pub upload_bytes: AtomicU64,
    pub uploads_rejected: AtomicU64,
    pub objects_fetched: AtomicU64,
    /// Objects sent (GET of an object file or the batched fetch), by kind.
    pub file_objects_sent: AtomicU64,
    pub meta_objects_sent: AtomicU64,
    /// Their bytes (wire form; a range request counts what it sent).
    pub file_object_bytes_sent: AtomicU64,
    pub meta_object_bytes_sent: AtomicU64,
    pub publishes: AtomicU64,
    pub reverts: AtomicU64,
    pub auth_failures: AtomicU64,
    pub index_serial: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn status(&self, code: u16) {
        let c = match code {
            200..=299 => &self.responses_2xx,
            300..=399 => &self.responses_3xx,
            400..=499 => &self.responses_4xx,
            _ => &self.responses_5xx,
        };
        Metrics::add(c, 1);
    }

    /// Counts one object sent (`bytes` of its wire form).
    pub fn object_sent(&self, kind: treectl_store::ObjectKind, bytes: u64) {
        let (n, b) = match kind {
            treectl_store::ObjectKind::File => {
                (&self.file_objects_sent, &self.file_object_bytes_sent)
            }
            _ => (&self.meta_objects_sent, &self.meta_object_bytes_sent),
        };
        Metrics::add(n, 1);
        Metrics::add(b, bytes);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        counter(
            "treectl_http_requests_total",
            "HTTP requests by kind.",
            &[
                ("{kind=\"file\"}", get(&self.file_requests)),
                ("{kind=\"api\"}", get(&self.api_requests)),
            ],
        );
        counter(
            "treectl_http_responses_total",
            "HTTP responses by status class.",
            &[
                ("{class=\"2xx\"}", get(&self.responses_2xx)),
                ("{class=\"3xx\"}", get(&self.responses_3xx)),
                ("{class=\"4xx\"}", get(&self.responses_4xx)),
                ("{class=\"5xx\"}", get(&self.responses_5xx)),
            ],
        );
        counter(
            "treectl_file_bytes_sent_total",
            "Bytes of repository files served.",
            &[("", get(&self.file_bytes))],
        );
        counter(
            "treectl_objects_sent_total",
            "Objects sent, as files or in batched fetches, by kind (file; tree, dirmeta and commit).",
            &[
                ("{kind=\"file\"}", get(&self.file_objects_sent)),
                ("{kind=\"meta\"}", get(&self.meta_objects_sent)),
            ],
        );
        counter(
            "treectl_object_bytes_sent_total",
            "Bytes of objects sent, as files or in batched fetches, by kind.",
            &[
                ("{kind=\"file\"}", get(&self.file_object_bytes_sent)),
                ("{kind=\"meta\"}", get(&self.meta_object_bytes_sent)),
            ],
        );
        counter(
            "treectl_objects_received_total",
            "Objects received in uploads.",
            &[("", get(&self.objects_received))],
        );
        counter(
            "treectl_objects_stored_total",
            "Uploaded objects newly stored.",
            &[("", get(&self.objects_stored))],
        );
        counter(
            "treectl_upload_bytes_total",
            "Bytes of accepted upload bodies.",
            &[("", get(&self.upload_bytes))],
        );
        counter(
            "treectl_uploads_rejected_total",
            "Uploads refused (bad object, bad pack, too large).",
            &[("", get(&self.uploads_rejected))],
        );
        counter(
            "treectl_objects_fetched_total",
            "Objects sent by batched fetches.",
            &[("", get(&self.objects_fetched))],
        );
        counter(
            "treectl_publishes_total",
            "Refs published.",
            &[("", get(&self.publishes))],
        );
        counter(
            "treectl_reverts_total",
            "Refs reverted.",
            &[("", get(&self.reverts))],
        );
        counter(
            "treectl_auth_failures_total",
            "Requests refused with 401 or 403.",
            &[("", get(&self.auth_failures))],
        );
        counter(
            "treectl_index_serial",
            "Serial of the published ref index.",
            &[("", get(&self.index_serial))],
        );
        out
    }
}
