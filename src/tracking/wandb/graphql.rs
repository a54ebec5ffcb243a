//! The GraphQL operations, byte for byte as wandb-core 0.31 sends them (its genqlient
//! `gql_gen.go`; `UpsertBucket` and `CreateRunFiles` also match the captured SDK session), the
//! variables dbsweep fills in, and the parts of the replies it uses.

use serde_json::{Value, json};

use super::WandbError;
use super::spool::RunInfo;

/// `UpsertBucket`: creates or updates the run.
pub(crate) const UPSERT_BUCKET: &str = "\nmutation UpsertBucket ($id: String, $name: String, $project: String, $entity: String, $groupName: String, $description: String, $displayName: String, $notes: String, $commit: String, $config: JSONString, $host: String, $debug: Boolean, $program: String, $repo: String, $jobType: String, $state: String, $sweep: String, $tags: [String!], $summaryMetrics: JSONString) {\n\tupsertBucket(input: {id:$id,name:$name,groupName:$groupName,modelName:$project,entityName:$entity,description:$description,displayName:$displayName,notes:$notes,config:$config,commit:$commit,host:$host,debug:$debug,jobProgram:$program,jobRepo:$repo,jobType:$jobType,state:$state,sweep:$sweep,tags:$tags,summaryMetrics:$summaryMetrics}) {\n\t\tbucket {\n\t\t\tid\n\t\t\tname\n\t\t\tdisplayName\n\t\t\tdescription\n\t\t\tconfig\n\t\t\tsweepName\n\t\t\tproject {\n\t\t\t\tid\n\t\t\t\tname\n\t\t\t\tentity {\n\t\t\t\t\tid\n\t\t\t\t\tname\n\t\t\t\t}\n\t\t\t}\n\t\t\thistoryLineCount\n\t\t}\n\t\tinserted\n\t}\n}\n";

/// `RunResumeStatus`: what the server has of a run being resumed.
pub(crate) const RUN_RESUME_STATUS: &str = "\nquery RunResumeStatus ($project: String, $entity: String, $name: String!) {\n\tmodel(name: $project, entityName: $entity) {\n\t\tid\n\t\tname\n\t\tentity {\n\t\t\tid\n\t\t\tname\n\t\t}\n\t\tbucket(name: $name, missingOk: true) {\n\t\t\tid\n\t\t\tname\n\t\t\tsummaryMetrics\n\t\t\tdisplayName\n\t\t\tlogLineCount\n\t\t\thistoryLineCount\n\t\t\teventsLineCount\n\t\t\thistoryTail\n\t\t\teventsTail\n\t\t\tconfig\n\t\t\ttags\n\t\t\tnotes\n\t\t\twandbConfig(keys: [\"t\"])\n\t\t}\n\t}\n}\n";

/// `CreateRunFiles`: upload URLs for run files.
pub(crate) const CREATE_RUN_FILES: &str = "\nmutation CreateRunFiles ($entity: String!, $project: String!, $run: String!, $files: [String!]!) {\n\tcreateRunFiles(input: {entityName:$entity,projectName:$project,runName:$run,files:$files}) {\n\t\trunID\n\t\tuploadHeaders\n\t\tfiles {\n\t\t\tname\n\t\t\tuploadUrl\n\t\t}\n\t}\n}\n";

/// The request body: `{"query", "variables", "operationName"}`, in the SDK's key order.
pub(crate) fn body(operation: &str, query: &str, variables: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"query": query, "variables": variables, "operationName": operation}))
        .expect("JSON values serialize")
}

/// `UpsertBucket`'s variables for an attempt; what the SDK leaves null stays null.
pub(crate) fn upsert_bucket_variables(info: &RunInfo) -> Value {
    json!({
        "id": null,
        "name": info.run_id,
        "project": info.project,
        "entity": info.entity,
        "groupName": info.group,
        "description": null,
        "displayName": info.display_name,
        "notes": null,
        "commit": null,
        "config": info.config,
        "host": info.host,
        "debug": null,
        "program": null,
        "repo": null,
        "jobType": info.job_type,
        "state": null,
        "sweep": null,
        "tags": (!info.tags.is_empty()).then_some(&info.tags),
        "summaryMetrics": null,
    })
}

/// `RunResumeStatus`'s variables.
pub(crate) fn run_resume_status_variables(project: &str, entity: Option<&str>, run: &str) -> Value {
    json!({"project": project, "entity": entity, "name": run})
}

/// `CreateRunFiles`'s variables.
pub(crate) fn create_run_files_variables(entity: &str, project: &str, run: &str, files: &[String]) -> Value {
    json!({"entity": entity, "project": project, "run": run, "files": files})
}

/// The `data` of a GraphQL reply, or its `errors` as a [`WandbError::Protocol`].
pub(crate) fn data(operation: &str, reply: &[u8]) -> Result<Value, WandbError> {
    let bad = |message: String| WandbError::Protocol { operation: operation.into(), message };
    let mut value: Value = serde_json::from_slice(reply).map_err(|e| bad(format!("reply is not JSON: {e}")))?;
    if let Some(errors) = value.get("errors").and_then(Value::as_array).filter(|e| !e.is_empty()) {
        let messages: Vec<String> = errors
            .iter()
            .map(|e| e.get("message").and_then(Value::as_str).map_or_else(|| e.to_string(), str::to_string))
            .collect();
        return Err(bad(messages.join("; ")));
    }
    match value.get_mut("data").map(Value::take) {
        Some(data) if !data.is_null() => Ok(data),
        _ => Err(bad("reply has no data".into())),
    }
}

/// A count field that W&B sends as a number (or null).
fn count(value: Option<&Value>) -> u64 {
    value.and_then(Value::as_u64).unwrap_or(0)
}

/// What `UpsertBucket` answered.
#[derive(Debug, PartialEq)]
pub(crate) struct Upserted {
    /// The entity the run is under (the key's default entity when none was asked for).
    pub entity: String,
    /// The run's history lines on the server.
    pub history_line_count: u64,
}

/// Reads an `UpsertBucket` reply's data.
pub(crate) fn upserted(data: &Value) -> Result<Upserted, WandbError> {
    let bucket = &data["upsertBucket"]["bucket"];
    let entity = bucket["project"]["entity"]["name"].as_str().ok_or_else(|| WandbError::Protocol {
        operation: "UpsertBucket".into(),
        message: "reply lacks upsertBucket.bucket.project.entity.name".into(),
    })?;
    Ok(Upserted { entity: entity.to_string(), history_line_count: count(bucket.get("historyLineCount")) })
}

/// `RunResumeStatus`'s `historyLineCount` (0 when the run does not exist yet).
pub(crate) fn resumed_history_line_count(data: &Value) -> u64 {
    count(data["model"]["bucket"].get("historyLineCount"))
}

/// Upload targets from `CreateRunFiles`.
#[derive(Debug, PartialEq)]
pub(crate) struct RunFiles {
    /// Headers to send with every upload (`uploadHeaders`, `Name:Value` strings).
    pub headers: Vec<(String, String)>,
    /// `(name, uploadUrl)` per file.
    pub urls: Vec<(String, String)>,
}

/// Reads a `CreateRunFiles` reply's data.
pub(crate) fn run_files(data: &Value) -> RunFiles {
    let payload = &data["createRunFiles"];
    let headers = payload["uploadHeaders"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|h| h.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let urls = payload["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| Some((f["name"].as_str()?.to_string(), f["uploadUrl"].as_str()?.to_string())))
        .collect();
    RunFiles { headers, urls }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_and_errors_reported() {
        let reply = br#"{"data":{"upsertBucket":{"bucket":{"historyLineCount":7,"project":{"name":"p","entity":{"name":"e"}}},"inserted":false}}}"#;
        let up = upserted(&data("UpsertBucket", reply).unwrap()).unwrap();
        assert_eq!(up, Upserted { entity: "e".into(), history_line_count: 7 });
        let err = data("UpsertBucket", br#"{"errors":[{"message":"permission denied"}],"data":null}"#).unwrap_err();
        assert_eq!(err.to_string(), "UpsertBucket: permission denied");
        let files = run_files(&json!({"createRunFiles": {"uploadHeaders": ["X-Fake-Header:abc"],
            "files": [{"name": "a.png", "uploadUrl": "http://h/u"}]}}));
        assert_eq!(files.headers, vec![("X-Fake-Header".into(), "abc".into())]);
        assert_eq!(files.urls, vec![("a.png".into(), "http://h/u".into())]);
        assert_eq!(resumed_history_line_count(&json!({"model": {"bucket": null}})), 0);
    }
}
