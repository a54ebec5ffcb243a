//! [`Endpoint`]: the W&B server, its API key and the proxy to reach it, all read from an
//! explicit environment (a slice of name/value pairs) so nothing here reads the process
//! environment and tests stay hermetic.
//!
//! - Base URL: `WANDB_BASE_URL`, else [`DEFAULT_BASE_URL`].
//! - API key: `WANDB_API_KEY`, else the netrc entry for the base URL's `host[:port]` (as the
//!   SDK writes it), else for its bare host; the netrc file is `$NETRC`, else `$HOME/.netrc`.
//! - Proxy: `HTTPS_PROXY`/`HTTP_PROXY` (by the target's scheme, either case), else `ALL_PROXY`;
//!   hosts matching `NO_PROXY` (`*`, `host`, `.domain`) go direct.

use std::fmt;
use std::path::PathBuf;

use super::netrc;
use super::{ApiKey, WandbError};

/// W&B's hosted service.
pub const DEFAULT_BASE_URL: &str = "https://api.wandb.ai";

/// Where W&B is and how to reach it. `Debug` omits proxy credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    base_url: String,
    netloc: String,
    host: String,
    https_proxy: Option<String>,
    http_proxy: Option<String>,
    no_proxy: Vec<String>,
}

/// The value of `name` in `env` (the last one wins, as with `env` overrides); empty is unset.
pub(crate) fn var<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.trim().is_empty())
}

/// `(scheme, netloc, host)` of an `http(s)://` URL.
pub(crate) fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let netloc = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = if let Some(v6) = netloc.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        netloc.rsplit_once(':').map_or(netloc, |(h, _)| h)
    };
    (!host.is_empty()).then_some((scheme, netloc, host))
}

/// `url` with any `user:password@` removed, for messages.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.rfind('@').map_or_else(|| url.to_string(), |at| url[at + 1..].to_string()),
    }
}

impl Endpoint {
    /// Reads the base URL and proxy settings from `env`.
    pub fn from_env(env: &[(String, String)]) -> Result<Endpoint, WandbError> {
        let raw = var(env, "WANDB_BASE_URL").unwrap_or(DEFAULT_BASE_URL).trim();
        let bad = |message: &str| WandbError::BadUrl {
            variable: "WANDB_BASE_URL",
            url: without_userinfo(raw),
            message: message.into(),
        };
        let base_url = raw.trim_end_matches('/').to_string();
        let (scheme, netloc, host) = split_url(&base_url).ok_or_else(|| bad("expected http://HOST or https://HOST"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("expected an http:// or https:// URL"));
        }
        if netloc.contains('@') {
            return Err(bad("credentials in the URL are not supported; use WANDB_API_KEY or ~/.netrc"));
        }
        let proxy = |names: &[&str]| names.iter().find_map(|n| var(env, n)).map(|v| v.trim().to_string());
        let all = proxy(&["ALL_PROXY", "all_proxy"]);
        Ok(Endpoint {
            netloc: netloc.to_string(),
            host: host.to_string(),
            https_proxy: proxy(&["HTTPS_PROXY", "https_proxy"]).or_else(|| all.clone()),
            http_proxy: proxy(&["HTTP_PROXY", "http_proxy"]).or(all),
            no_proxy: proxy(&["NO_PROXY", "no_proxy"])
                .map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
            base_url,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The base URL's host (no port).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The API key: `WANDB_API_KEY`, else the netrc entry for this endpoint. `None` if neither
    /// has one; an unreadable or malformed netrc file counts as none (as in the SDK).
    pub fn api_key(&self, env: &[(String, String)]) -> Option<ApiKey> {
        if let Some(key) = var(env, "WANDB_API_KEY") {
            return Some(ApiKey::new(key));
        }
        let path = match (var(env, "NETRC"), var(env, "HOME")) {
            (Some(p), home) => match (p.strip_prefix("~/"), home) {
                (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
                _ => PathBuf::from(p),
            },
            (None, Some(home)) => PathBuf::from(home).join(".netrc"),
            (None, None) => return None,
        };
        let text = std::fs::read_to_string(path).ok()?;
        [self.netloc.as_str(), self.host.as_str()]
            .into_iter()
            .find_map(|machine| netrc::password(&text, machine))
            .map(|key| ApiKey::new(&key))
    }

    /// The proxy URL for a request to `url`, if one applies.
    pub(crate) fn proxy_for(&self, url: &str) -> Option<&str> {
        let (scheme, _, host) = split_url(url)?;
        let host = host.to_ascii_lowercase();
        let bypass = self.no_proxy.iter().any(|entry| {
            let domain = entry.trim_start_matches('.');
            entry == "*" || host == domain || host.ends_with(&format!(".{domain}"))
        });
        if bypass {
            return None;
        }
        if scheme == "https" { self.https_proxy.as_deref() } else { self.http_proxy.as_deref() }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("base_url", &self.base_url)
            .field("https_proxy", &self.https_proxy.as_deref().map(without_userinfo))
            .field("http_proxy", &self.http_proxy.as_deref().map(without_userinfo))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn base_url_defaults_and_is_validated() {
        let e = Endpoint::from_env(&[]).unwrap();
        assert_eq!((e.base_url(), e.host()), ("https://api.wandb.ai", "api.wandb.ai"));
        let e = Endpoint::from_env(&env(&[("WANDB_BASE_URL", "http://127.0.0.1:8080/")])).unwrap();
        assert_eq!(
            (e.base_url(), e.netloc.as_str(), e.host()),
            ("http://127.0.0.1:8080", "127.0.0.1:8080", "127.0.0.1")
        );
        let err = Endpoint::from_env(&env(&[("WANDB_BASE_URL", "https://me:pw@example.com")])).unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
        assert!(Endpoint::from_env(&env(&[("WANDB_BASE_URL", "ftp://x")])).is_err());
    }

    #[test]
    fn key_from_variable_then_netrc_by_netloc_then_host() {
        let dir = tempfile::tempdir().unwrap();
        let netrc = dir.path().join("n");
        std::fs::write(&netrc, "machine 127.0.0.1:9 login user password from-netloc\nmachine h password from-host\n")
            .unwrap();
        let n = netrc.display().to_string();
        let e = Endpoint::from_env(&env(&[("WANDB_BASE_URL", "http://127.0.0.1:9")])).unwrap();
        assert_eq!(e.api_key(&env(&[("WANDB_API_KEY", "k"), ("NETRC", &n)])), Some(ApiKey::new("k")));
        assert_eq!(e.api_key(&env(&[("NETRC", &n)])), Some(ApiKey::new("from-netloc")));
        let e = Endpoint::from_env(&env(&[("WANDB_BASE_URL", "https://h:443")])).unwrap();
        assert_eq!(e.api_key(&env(&[("NETRC", &n)])), Some(ApiKey::new("from-host")));
        let home = dir.path().display().to_string();
        std::fs::copy(&netrc, dir.path().join(".netrc")).unwrap();
        assert_eq!(e.api_key(&env(&[("HOME", &home)])), Some(ApiKey::new("from-host")));
        assert_eq!(e.api_key(&[]), None);
    }

    #[test]
    fn proxies_by_scheme_and_no_proxy() {
        let e = Endpoint::from_env(&env(&[
            ("HTTPS_PROXY", "http://u:secret@proxy:3128"),
            ("http_proxy", "http://plain:80"),
            ("NO_PROXY", "localhost, .internal"),
        ]))
        .unwrap();
        assert_eq!(e.proxy_for("https://api.wandb.ai/graphql"), Some("http://u:secret@proxy:3128"));
        assert_eq!(e.proxy_for("http://example.com/x"), Some("http://plain:80"));
        assert_eq!(e.proxy_for("https://a.b.internal/x"), None);
        assert_eq!(e.proxy_for("http://localhost:8080/x"), None);
        assert!(!format!("{e:?}").contains("secret"));
    }
}
