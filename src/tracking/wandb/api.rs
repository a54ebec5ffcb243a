//! [`Api`]: the W&B calls dbsweep makes: `UpsertBucket`, `RunResumeStatus` and
//! `CreateRunFiles` (GraphQL at `{base}/graphql`), file_stream at
//! `{base}/files/{entity}/{project}/{run}/file_stream`, and uploads with `PUT` to the URLs
//! `CreateRunFiles` returns, with its headers and without credentials.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::endpoint::Endpoint;
use super::graphql::{self, RunFiles, Upserted};
use super::http::{Method, Request, Transport};
use super::signal::Signal;
use super::spool::RunInfo;
use super::{ApiKey, RetryPolicy, WandbError};

/// A W&B server and the key for it.
pub(crate) struct Api {
    transport: Transport,
    key: ApiKey,
}

/// Percent-encodes a URL path segment (W&B names are plain; this only guards odd ones).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Api {
    /// Calls to `endpoint` authenticated with `key`.
    pub(crate) fn new(
        endpoint: Endpoint,
        key: ApiKey,
        retry: RetryPolicy,
        timeout: Duration,
        signal: Arc<Signal>,
    ) -> Self {
        Api { transport: Transport::new(endpoint, retry, timeout, signal, Some(key.clone())), key }
    }

    fn graphql(&mut self, operation: &str, query: &str, variables: Value) -> Result<Value, WandbError> {
        let url = format!("{}/graphql", self.transport.endpoint().base_url());
        let body = graphql::body(operation, query, variables);
        let reply = self.transport.send(&Request {
            operation,
            method: Method::Post,
            url: &url,
            headers: &[],
            body: &body,
            auth: Some(&self.key),
            content_type: Some("application/json"),
            upsert: operation == "UpsertBucket",
        })?;
        graphql::data(operation, &reply.body)
    }

    /// Creates or updates the run.
    pub(crate) fn upsert_bucket(&mut self, info: &RunInfo) -> Result<Upserted, WandbError> {
        let data = self.graphql("UpsertBucket", graphql::UPSERT_BUCKET, graphql::upsert_bucket_variables(info))?;
        graphql::upserted(&data)
    }

    /// The run's `historyLineCount` on the server (0 if it does not exist).
    pub(crate) fn run_resume_status(
        &mut self,
        project: &str,
        entity: Option<&str>,
        run: &str,
    ) -> Result<u64, WandbError> {
        let variables = graphql::run_resume_status_variables(project, entity, run);
        let data = self.graphql("RunResumeStatus", graphql::RUN_RESUME_STATUS, variables)?;
        Ok(graphql::resumed_history_line_count(&data))
    }

    /// Upload URLs for `files` of the run.
    pub(crate) fn create_run_files(
        &mut self,
        entity: &str,
        project: &str,
        run: &str,
        files: &[String],
    ) -> Result<RunFiles, WandbError> {
        let variables = graphql::create_run_files_variables(entity, project, run, files);
        let data = self.graphql("CreateRunFiles", graphql::CREATE_RUN_FILES, variables)?;
        Ok(graphql::run_files(&data))
    }

    /// Posts one file_stream request; whether the reply asks the run to stop.
    pub(crate) fn file_stream(
        &mut self,
        entity: &str,
        project: &str,
        run: &str,
        body: &Value,
    ) -> Result<bool, WandbError> {
        let url = format!(
            "{}/files/{}/{}/{}/file_stream",
            self.transport.endpoint().base_url(),
            segment(entity),
            segment(project),
            segment(run)
        );
        let body = serde_json::to_vec(body).expect("JSON values serialize");
        let reply = self.transport.send(&Request {
            operation: "file_stream",
            method: Method::Post,
            url: &url,
            headers: &[],
            body: &body,
            auth: Some(&self.key),
            content_type: Some("application/json"),
            upsert: false,
        })?;
        let stopped = serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("stopped").and_then(Value::as_bool))
            .unwrap_or(false);
        Ok(stopped)
    }

    /// `PUT`s `bytes` to an upload URL with the given headers and no credentials.
    pub(crate) fn upload(
        &mut self,
        name: &str,
        url: &str,
        headers: &[(String, String)],
        bytes: &[u8],
    ) -> Result<(), WandbError> {
        let operation = format!("upload {name}");
        self.transport.send(&Request {
            operation: &operation,
            method: Method::Put,
            url,
            headers,
            body: bytes,
            auth: None,
            content_type: None,
            upsert: false,
        })?;
        Ok(())
    }
}
