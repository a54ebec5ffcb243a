//! [`ApiKey`]: the W&B API key, which prints as `***` everywhere.
//!
//! The key is read from an explicit environment (`WANDB_API_KEY`) or a netrc file and then only
//! ever turned into the `Authorization` header of requests to the base URL. It has no
//! `Serialize`, and `Debug`/`Display` print `***`, so it cannot reach a log line, an error, the
//! spool, the lineage store or a config dump by accident.

use std::fmt;

use base64::Engine as _;

/// A W&B API key. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps `key`, trimming surrounding whitespace (a netrc or `.env` file often leaves some).
    pub fn new(key: &str) -> Self {
        ApiKey(key.trim().to_string())
    }

    /// The `Authorization` header value W&B expects: `Basic base64("api:" + key)`.
    pub(crate) fn basic_auth(&self) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("api:{}", self.0)))
    }

    /// `text` with every occurrence of the key, and of its `Authorization` form, replaced by
    /// `***` (for server replies quoted in errors: a server may echo a request back).
    pub fn redact(&self, text: &str) -> String {
        let token = self.basic_auth();
        let token = token.trim_start_matches("Basic ");
        let mut out = text.to_string();
        for secret in [self.0.as_str(), token] {
            if !secret.is_empty() {
                out = out.replace(secret, "***");
            }
        }
        out
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_stars_and_builds_the_sdk_header() {
        // The key and header of the captured wandb 0.31.0 session.
        let key = ApiKey::new(" 0123456789abcdef0123456789abcdef01234567\n");
        assert_eq!(format!("{key} {key:?} {:?}", Some(&key)), "*** *** Some(***)");
        assert_eq!(key.basic_auth(), "Basic YXBpOjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc=");
        let echoed = format!("bad key 0123456789abcdef0123456789abcdef01234567 in {}", key.basic_auth());
        assert_eq!(key.redact(&echoed), "bad key *** in Basic ***");
    }
}
