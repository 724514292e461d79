//! The client of a treectl server's `/v1/` API (docs/http-api.md): JSON
//! requests and pack uploads with a bearer token, on a client built by
//! [`HttpPolicy`], with the server's JSON errors turned into one sentence.

use reqwest::blocking::{Client, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use treectl_wire::{ErrorBody, PACK_CONTENT_TYPE};

use crate::client::HttpPolicy;
use crate::error::TransportError;

/// A server, by base URL.
pub struct HttpRemote {
    base: String,
    client: Client,
    policy: HttpPolicy,
    token: Option<String>,
}

/// True for `http://` and `https://` targets.
pub fn is_url(target: &str) -> bool {
    target.starts_with("http://") || target.starts_with("https://")
}

impl HttpRemote {
    /// A server at `base` with the default [`HttpPolicy`].
    pub fn new(base: &str, token: Option<String>) -> Result<HttpRemote, TransportError> {
        HttpRemote::with_policy(base, token, HttpPolicy::default())
    }

    pub fn with_policy(
        base: &str,
        token: Option<String>,
        policy: HttpPolicy,
    ) -> Result<HttpRemote, TransportError> {
        Ok(HttpRemote {
            base: base.trim_end_matches('/').to_owned(),
            client: policy.client()?,
            policy,
            token,
        })
    }

    /// The base URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authed(&self, req: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends, and turns a non-2xx answer into an error naming `what`.
    fn send(&self, req: RequestBuilder, what: &str) -> Result<Response, TransportError> {
        let resp = self
            .authed(req)
            .send()
            .map_err(|err| TransportError::Unreachable {
                what: what.to_owned(),
                base: self.base.clone(),
                err,
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or_else(|_| text.trim().chars().take(200).collect());
        Err(TransportError::Api {
            what: what.to_owned(),
            base: self.base.clone(),
            status: status.as_u16(),
            message,
        })
    }

    pub fn post_json<Q: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        body: &Q,
        what: &str,
    ) -> Result<A, TransportError> {
        let req = self
            .client
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).map_err(TransportError::Encode)?);
        json_body(self.send(req, what)?, what)
    }

    pub fn get_json<A: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<A, TransportError> {
        let req = self.client.get(self.url(path)).query(query);
        json_body(self.send(req, what)?, what)
    }

    /// GETs a file's bytes.
    pub fn get_bytes(&self, path: &str, what: &str) -> Result<Vec<u8>, TransportError> {
        let req = self.client.get(self.url(path));
        let resp = self.send(req, what)?;
        resp.bytes()
            .map(|b| b.to_vec())
            .map_err(|err| TransportError::ReadAnswer {
                what: what.to_owned(),
                err,
            })
    }

    /// Uploads a pack; it has time for its size ([`HttpPolicy::upload_timeout`]).
    pub fn post_pack<A: DeserializeOwned>(
        &self,
        path: &str,
        pack: Vec<u8>,
        what: &str,
    ) -> Result<A, TransportError> {
        let req = self
            .client
            .post(self.url(path))
            .timeout(self.policy.upload_timeout(pack.len() as u64))
            .header(reqwest::header::CONTENT_TYPE, PACK_CONTENT_TYPE)
            .body(pack);
        json_body(self.send(req, what)?, what)
    }
}

fn json_body<A: DeserializeOwned>(resp: Response, what: &str) -> Result<A, TransportError> {
    let bytes = resp.bytes().map_err(|err| TransportError::ReadAnswer {
        what: what.to_owned(),
        err,
    })?;
    serde_json::from_slice(&bytes).map_err(|err| TransportError::BadAnswer {
        what: what.to_owned(),
        err,
    })
}
