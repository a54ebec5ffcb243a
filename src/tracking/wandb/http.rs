//! [`Transport`]: HTTP requests with W&B's retry policy, over `ureq` (blocking, rustls with
//! the `ring` provider). Certificates are checked against the system trust store, as
//! wandb-core's Go client does, so a site CA for a TLS-inspecting proxy works too.
//!
//! Credentials are attached per request and only when the caller passes the key, which the
//! W&B calls do for the base URL alone. Redirects never carry the `Authorization` header
//! (ureq's default, set explicitly). Proxies come from the [`Endpoint`], never from the process
//! environment. Waits between retries go through the [`Signal`], so a finishing sink is not
//! held up by a backoff.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ureq::Agent;
use ureq::config::RedirectAuthHeaders;
use ureq::tls::{RootCerts, TlsConfig};

use super::endpoint::Endpoint;
use super::retry::{RetryPolicy, parse_retry_after, retryable_status};
use super::signal::Signal;
use super::{ApiKey, WandbError};
use crate::rng::Rng;

/// The `User-Agent` of every request.
const USER_AGENT: &str = concat!("dbsweep/", env!("CARGO_PKG_VERSION"), " (W&B file_stream protocol)");

/// Largest reply body read (GraphQL and file_stream replies are small).
const MAX_REPLY: u64 = 16 << 20;

/// An HTTP method this module sends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Method {
    /// GraphQL and file_stream.
    Post,
    /// Uploads.
    Put,
}

/// One request.
pub(crate) struct Request<'a> {
    /// For messages: `UpsertBucket`, `file_stream`, `upload media/...`.
    pub operation: &'a str,
    /// Method.
    pub method: Method,
    /// Absolute URL.
    pub url: &'a str,
    /// Extra headers.
    pub headers: &'a [(String, String)],
    /// Body.
    pub body: &'a [u8],
    /// Send `Authorization: Basic ...` (only for the base URL).
    pub auth: Option<&'a ApiKey>,
    /// Content type of the body, if any.
    pub content_type: Option<&'a str>,
    /// `UpsertBucket`'s policy (409 is retried).
    pub upsert: bool,
}

/// A successful (2xx) reply.
pub(crate) struct Reply {
    /// The body.
    pub body: Vec<u8>,
}

/// What one try came to.
enum Outcome {
    Done(Reply),
    Status { status: u16, retry_after: Option<Duration>, body: Vec<u8> },
    Failed { retry: bool, message: String },
}

/// Sends requests with retries.
pub(crate) struct Transport {
    endpoint: Endpoint,
    agents: Vec<(Option<String>, Agent)>,
    timeout: Duration,
    retry: RetryPolicy,
    rng: Rng,
    signal: Arc<Signal>,
    redact: Option<ApiKey>,
}

impl Transport {
    /// A transport for `endpoint` whose requests each time out after `timeout`; `redact` is
    /// removed from every message quoting the server.
    pub(crate) fn new(
        endpoint: Endpoint,
        retry: RetryPolicy,
        timeout: Duration,
        signal: Arc<Signal>,
        redact: Option<ApiKey>,
    ) -> Self {
        let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Transport { endpoint, agents: Vec::new(), timeout, retry, rng: Rng::new(seed), signal, redact }
    }

    /// The endpoint.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn agent(&mut self, url: &str) -> Result<Agent, WandbError> {
        let proxy = self.endpoint.proxy_for(url).map(str::to_string);
        if let Some((_, agent)) = self.agents.iter().find(|(p, _)| *p == proxy) {
            return Ok(agent.clone());
        }
        let parsed = proxy.as_deref().map(ureq::Proxy::new).transpose().map_err(|_| WandbError::BadUrl {
            variable: "HTTPS_PROXY/HTTP_PROXY/ALL_PROXY",
            url: "(proxy)".into(),
            message: "not a usable proxy URL".into(),
        })?;
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(self.timeout))
            .redirect_auth_headers(RedirectAuthHeaders::Never)
            .tls_config(TlsConfig::builder().root_certs(RootCerts::PlatformVerifier).build())
            .proxy(parsed)
            .user_agent(USER_AGENT)
            .build();
        let agent = Agent::new_with_config(config);
        self.agents.push((proxy, agent.clone()));
        Ok(agent)
    }

    fn clean(&self, text: &str) -> String {
        match &self.redact {
            Some(key) => key.redact(text),
            None => text.to_string(),
        }
    }

    fn try_once(&mut self, req: &Request<'_>) -> Result<Outcome, WandbError> {
        let agent = self.agent(req.url)?;
        // Upload URLs come from the server and may name files with spaces: encode what a URI
        // cannot hold, keep what it can.
        let url = encode_uri(req.url);
        let mut builder = match req.method {
            Method::Post => agent.post(&url),
            Method::Put => agent.put(&url),
        };
        if let Some(key) = req.auth {
            builder = builder.header("Authorization", key.basic_auth());
        }
        if let Some(ct) = req.content_type {
            builder = builder.header("Content-Type", ct);
        }
        for (name, value) in req.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let outcome = match builder.send(req.body) {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                match response.body_mut().with_config().limit(MAX_REPLY).read_to_vec() {
                    Ok(body) if (200..300).contains(&status) => Outcome::Done(Reply { body }),
                    Ok(body) => Outcome::Status { status, retry_after, body },
                    Err(e) => Outcome::Failed { retry: true, message: format!("reading the reply: {e}") },
                }
            }
            Err(e) => {
                use ureq::Error as E;
                let retry = !matches!(
                    e,
                    E::BadUri(_)
                        | E::Http(_)
                        | E::InvalidProxyUrl
                        | E::Tls(_)
                        | E::Rustls(_)
                        | E::Pem(_)
                        | E::TooManyRedirects
                        | E::RedirectFailed
                        | E::BodyExceedsLimit(_)
                );
                Outcome::Failed { retry, message: e.to_string() }
            }
        };
        Ok(outcome)
    }

    /// Sends `req`, retrying per the policy; the reply of the first 2xx answer.
    pub(crate) fn send(&mut self, req: &Request<'_>) -> Result<Reply, WandbError> {
        let operation = req.operation.to_string();
        let mut attempt = 0;
        loop {
            let (last, retry_after) = match self.try_once(req)? {
                Outcome::Done(reply) => return Ok(reply),
                Outcome::Status { status, retry_after, body } => {
                    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_string();
                    let detail = if text.is_empty() { String::new() } else { format!(": {}", self.clean(&text)) };
                    if !retryable_status(status, req.upsert) {
                        return Err(WandbError::Rejected { operation, status, detail });
                    }
                    (format!("HTTP {status}{detail}"), retry_after)
                }
                Outcome::Failed { retry, message } => {
                    let message = self.clean(&message);
                    if !retry {
                        return Err(WandbError::Protocol { operation, message });
                    }
                    (message, None)
                }
            };
            if attempt >= self.retry.max_retries {
                return Err(WandbError::Unreachable { operation, attempts: attempt + 1, last });
            }
            let wait = self.retry.backoff(attempt, retry_after, &mut self.rng);
            if !self.signal.sleep(wait) {
                return Err(WandbError::Cancelled { operation });
            }
            attempt += 1;
        }
    }
}

/// `url` with every byte a URI may not hold (spaces, quotes, `<>{}|\^` and backquotes, control
/// and non-ASCII bytes) percent-encoded; reserved characters and existing `%XX` escapes are
/// kept, so an encoded URL comes back unchanged.
pub fn encode_uri(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for b in url.bytes() {
        let keep = b.is_ascii_graphic() && !matches!(b, b'"' | b'<' | b'>' | b'{' | b'}' | b'|' | b'\\' | b'^' | b'`');
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::encode_uri;

    #[test]
    fn upload_urls_are_encoded_where_a_uri_needs_it() {
        let url = "http://h:1/files/media/images/validation/a photo of sks dog/0_4_ab.png?sig=x%2By&e=1";
        let encoded = encode_uri(url);
        assert_eq!(
            encoded,
            "http://h:1/files/media/images/validation/a%20photo%20of%20sks%20dog/0_4_ab.png?sig=x%2By&e=1"
        );
        assert_eq!(encode_uri(&encoded), encoded, "encoding twice changes nothing");
        assert_eq!(encode_uri("http://h/é\"x"), "http://h/%C3%A9%22x");
    }
}
