//! The HTTP client for a treectl server's `/v1/` API (docs/http-api.md):
//! blocking reqwest over rustls, a bearer token, JSON errors turned into one
//! sentence.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use treectl_repo::wire::{ErrorBody, PACK_CONTENT_TYPE};

/// A server, by base URL.
pub struct HttpRemote {
    base: String,
    client: Client,
    token: Option<String>,
}

/// True for `http://` and `https://` targets.
pub fn is_url(target: &str) -> bool {
    target.starts_with("http://") || target.starts_with("https://")
}

impl HttpRemote {
    pub fn new(base: &str, token: Option<String>) -> Result<HttpRemote> {
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(900))
            .user_agent(concat!("treectl/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("setting up the HTTP client")?;
        Ok(HttpRemote {
            base: base.trim_end_matches('/').to_owned(),
            client,
            token,
        })
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
    fn send(&self, req: RequestBuilder, what: &str) -> Result<Response> {
        let resp = self
            .authed(req)
            .send()
            .with_context(|| format!("{what}: cannot reach {}", self.base))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or_else(|_| text.trim().chars().take(200).collect());
        let hint = match status.as_u16() {
            401 => " (pass a token with --token-file FILE or $TREECTL_TOKEN)",
            _ => "",
        };
        Err(anyhow!(
            "{what}: {} answered {status}: {message}{hint}",
            self.base
        ))
    }

    pub fn post_json<Q: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        body: &Q,
        what: &str,
    ) -> Result<A> {
        let req = self
            .client
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).context("encoding the request")?);
        self.send(req, what)?.json_body(what)
    }

    pub fn get_json<A: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<A> {
        let req = self.client.get(self.url(path)).query(query);
        self.send(req, what)?.json_body(what)
    }

    pub fn post_pack<A: DeserializeOwned>(
        &self,
        path: &str,
        pack: Vec<u8>,
        what: &str,
    ) -> Result<A> {
        let req = self
            .client
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, PACK_CONTENT_TYPE)
            .body(pack);
        self.send(req, what)?.json_body(what)
    }
}

trait JsonBody {
    fn json_body<A: DeserializeOwned>(self, what: &str) -> Result<A>;
}

impl JsonBody for Response {
    fn json_body<A: DeserializeOwned>(self, what: &str) -> Result<A> {
        let bytes = self
            .bytes()
            .with_context(|| format!("{what}: reading the answer"))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{what}: the server's answer is not the expected JSON"))
    }
}
