//! The HParams plugin's summaries: a session (one run folder) starts and ends, and the sweep
//! root describes the experiment's columns.
//!
//! TensorBoard keeps only the first `session_start_info` and the first `session_end_info` it
//! reads in a run folder ("we only store the first instance of the metadata",
//! `plugin_event_accumulator.py`). Every attempt writes its start info again (harmless, and it
//! survives the loss of an earlier attempt's file), but an end info is final, so only an attempt
//! that ends for good writes one:
//!
//! | [`EndStatus`] | written             | the HParams tab shows                      |
//! |---------------|---------------------|--------------------------------------------|
//! | `Success`     | `STATUS_SUCCESS`    | Success                                    |
//! | `Failure`     | `STATUS_FAILURE`    | Failure                                    |
//! | `Interrupted` | no end info at all  | Unknown, until a later attempt of the run ends |
//!
//! `STATUS_RUNNING` would be wrong once the process is gone, and writing anything for an
//! interruption would pin that status even after the resumed attempt succeeds.
//!
//! Hyperparameter values become `google.protobuf.Value`s: numbers, strings and booleans as
//! themselves, arrays and objects as their compact JSON text, and `null` is left out (the run
//! shows no value for that column).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use serde_json::Value;

use super::proto::{
    self, HParamDataType, HParamsPluginData, HParamsStatus, ListValue, MetricInfo, MetricName, ProtoValue,
    SessionEndInfo, SessionStartInfo, SummaryValue, hparams_plugin_data::Data, proto_value::Kind,
};
use super::summary::{plugin_only, summary_event};
use super::writer::EventFileWriter;
use crate::tracking::{EndStatus, TrackingError};

/// The plugin's name.
const PLUGIN: &str = "hparams";
/// Tag of the experiment summary.
const EXPERIMENT_TAG: &str = "_hparams_/experiment";
/// Tag of a session's start.
const SESSION_START_TAG: &str = "_hparams_/session_start_info";
/// Tag of a session's end.
const SESSION_END_TAG: &str = "_hparams_/session_end_info";

/// The type of a hyperparameter column in the HParams tab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HParamType {
    /// Numbers (`DATA_TYPE_FLOAT64`).
    Number,
    /// Strings, and anything that mixes types (`DATA_TYPE_STRING`).
    String,
    /// Booleans (`DATA_TYPE_BOOL`).
    Bool,
}

/// One hyperparameter column of the HParams tab.
#[derive(Clone, Debug, PartialEq)]
pub struct HParamColumn {
    /// Dotted key, as in [`Record::Start`](crate::tracking::Record::Start)'s `hparams`.
    pub name: String,
    /// Its type.
    pub kind: HParamType,
    /// The values the sweep gives it, offered as filters; empty for none.
    pub values: Vec<Value>,
}

/// What the HParams tab compares across the runs below a sweep root.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentSummary {
    /// Shown as the experiment's name (e.g. the sweep id).
    pub name: String,
    /// Hyperparameter columns.
    pub hparams: Vec<HParamColumn>,
    /// Scalar tags shown as metric columns (the sweep metric first). Each run's value is its
    /// last point of that tag in the run folder itself.
    pub metrics: Vec<String>,
    /// When the sweep was created, seconds since the Unix epoch.
    pub time_created_secs: f64,
}

impl ExperimentSummary {
    /// Columns for every key found in `runs`' hyperparameters, with the type and the distinct
    /// values they take (numbers ascending, strings in byte order; no values listed when a
    /// column mixes types).
    pub fn from_runs<'a>(
        name: &str,
        runs: impl IntoIterator<Item = &'a BTreeMap<String, Value>>,
        metrics: Vec<String>,
        time_created_secs: f64,
    ) -> Self {
        let mut seen: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for hparams in runs {
            for (key, value) in hparams {
                seen.entry(key.as_str()).or_default().push(value);
            }
        }
        let hparams = seen.into_iter().map(|(name, values)| column(name, &values)).collect();
        ExperimentSummary { name: name.to_owned(), hparams, metrics, time_created_secs }
    }
}

/// Writes `experiment` as the HParams plugin's experiment summary into a new event file in
/// `sweep_root`, whose sub-folders are the run folders. Returns the file's path.
///
/// TensorBoard keeps the first experiment summary it reads in a folder, so write it once per
/// sweep root (remove the old file to replace it).
pub fn write_experiment(sweep_root: &Path, experiment: &ExperimentSummary) -> Result<PathBuf, TrackingError> {
    let mut writer = EventFileWriter::create(sweep_root, Duration::MAX)?;
    let value = plugin_value(EXPERIMENT_TAG, Data::Experiment(experiment_proto(experiment)));
    writer.write_event(&summary_event(experiment.time_created_secs, 0, value))?;
    writer.sync()?;
    Ok(writer.path().to_owned())
}

/// The `_hparams_/session_start_info` value of a run.
pub(crate) fn session_start(run_id: &str, hparams: &BTreeMap<String, Value>, start_time_secs: f64) -> SummaryValue {
    let hparams = hparams.iter().filter_map(|(key, value)| Some((key.clone(), proto_value(value)?))).collect();
    let info = SessionStartInfo { hparams, group_name: run_id.to_owned(), start_time_secs };
    plugin_value(SESSION_START_TAG, Data::SessionStartInfo(info))
}

/// The `_hparams_/session_end_info` value for an attempt that ended with `status`, or `None`
/// when the attempt must not end the session (see the module doc).
pub(crate) fn session_end(status: EndStatus, end_time_secs: f64) -> Option<SummaryValue> {
    let status = match status {
        EndStatus::Success => HParamsStatus::Success,
        EndStatus::Failure => HParamsStatus::Failure,
        EndStatus::Interrupted => return None,
    };
    let info = SessionEndInfo { status: status as i32, end_time_secs };
    Some(plugin_value(SESSION_END_TAG, Data::SessionEndInfo(info)))
}

fn plugin_value(tag: &str, data: Data) -> SummaryValue {
    let content = HParamsPluginData { version: 0, data: Some(data) }.encode_to_vec();
    plugin_only(tag, PLUGIN, content)
}

fn experiment_proto(experiment: &ExperimentSummary) -> proto::Experiment {
    let hparam_infos = experiment
        .hparams
        .iter()
        .map(|column| {
            let r#type = match column.kind {
                HParamType::Number => HParamDataType::Float64,
                HParamType::String => HParamDataType::String,
                HParamType::Bool => HParamDataType::Bool,
            };
            let values: Vec<ProtoValue> = column.values.iter().filter_map(proto_value).collect();
            let domain_discrete = (!values.is_empty()).then_some(ListValue { values });
            proto::HParamInfo { name: column.name.clone(), r#type: r#type as i32, domain_discrete }
        })
        .collect();
    let metric_infos = experiment
        .metrics
        .iter()
        .map(|tag| MetricInfo { name: Some(MetricName { group: String::new(), tag: tag.clone() }) })
        .collect();
    proto::Experiment {
        name: experiment.name.clone(),
        time_created_secs: experiment.time_created_secs,
        hparam_infos,
        metric_infos,
    }
}

/// A hyperparameter value as TensorBoard stores it; `None` for `null`.
fn proto_value(value: &Value) -> Option<ProtoValue> {
    let kind = match value {
        Value::Null => return None,
        Value::Bool(b) => Kind::Bool(*b),
        Value::Number(n) => Kind::Number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::String(s.clone()),
        Value::Array(_) | Value::Object(_) => Kind::String(value.to_string()),
    };
    Some(ProtoValue { kind: Some(kind) })
}

/// A column from the values one key takes across runs.
fn column(name: &str, values: &[&Value]) -> HParamColumn {
    let kinds: Vec<Option<HParamType>> = values.iter().map(|v| value_type(v)).collect();
    let present: Vec<HParamType> = kinds.iter().flatten().copied().collect();
    let uniform = present.first().filter(|first| present.iter().all(|k| k == *first)).copied();
    let kind = uniform.unwrap_or(HParamType::String);
    let mut distinct: Vec<Value> = Vec::new();
    if uniform.is_some() {
        for value in values.iter().filter(|v| !v.is_null()) {
            let as_listed = match value {
                Value::Array(_) | Value::Object(_) => Value::String(value.to_string()),
                other => (*other).clone(),
            };
            if !distinct.contains(&as_listed) {
                distinct.push(as_listed);
            }
        }
        distinct.sort_by(|a, b| match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                x.as_f64().unwrap_or(f64::NAN).total_cmp(&y.as_f64().unwrap_or(f64::NAN))
            }
            (Value::String(x), Value::String(y)) => x.cmp(y),
            (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
            _ => std::cmp::Ordering::Equal,
        });
    }
    HParamColumn { name: name.to_owned(), kind, values: distinct }
}

/// The column type a value belongs to; `None` for `null`.
fn value_type(value: &Value) -> Option<HParamType> {
    match value {
        Value::Null => None,
        Value::Bool(_) => Some(HParamType::Bool),
        Value::Number(_) => Some(HParamType::Number),
        Value::String(_) | Value::Array(_) | Value::Object(_) => Some(HParamType::String),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_take_the_type_and_sorted_distinct_values_of_their_runs() {
        let runs: Vec<BTreeMap<String, Value>> = vec![
            serde_json::from_value(json!({"lr": 1e-5, "prior": true, "name": "b", "mixed": 1, "opt": null})).unwrap(),
            serde_json::from_value(json!({"lr": 5e-6, "prior": false, "name": "a", "mixed": "x", "opt": [1, 2]}))
                .unwrap(),
            serde_json::from_value(json!({"lr": 1e-5, "prior": true, "name": "a"})).unwrap(),
        ];
        let summary = ExperimentSummary::from_runs("sweep", &runs, vec!["val/loss".to_owned()], 1.0);
        let by_name: BTreeMap<&str, &HParamColumn> = summary.hparams.iter().map(|c| (c.name.as_str(), c)).collect();
        assert_eq!(by_name["lr"].kind, HParamType::Number);
        assert_eq!(by_name["lr"].values, vec![json!(5e-6), json!(1e-5)]);
        assert_eq!(by_name["prior"].kind, HParamType::Bool);
        assert_eq!(by_name["prior"].values, vec![json!(false), json!(true)]);
        assert_eq!(by_name["name"].values, vec![json!("a"), json!("b")]);
        assert_eq!(by_name["mixed"].kind, HParamType::String);
        assert!(by_name["mixed"].values.is_empty());
        assert_eq!(by_name["opt"].kind, HParamType::String);
        assert_eq!(by_name["opt"].values, vec![json!("[1,2]")]);
    }

    #[test]
    fn interrupted_attempts_leave_the_session_open() {
        assert!(session_end(EndStatus::Interrupted, 1.0).is_none());
        for (status, expected) in
            [(EndStatus::Success, HParamsStatus::Success), (EndStatus::Failure, HParamsStatus::Failure)]
        {
            let value = session_end(status, 2.0).unwrap();
            assert_eq!(value.tag, SESSION_END_TAG);
            let content = value.metadata.unwrap().plugin_data.unwrap().content;
            let data = HParamsPluginData::decode(content.as_slice()).unwrap();
            assert_eq!(
                data.data,
                Some(Data::SessionEndInfo(SessionEndInfo { status: expected as i32, end_time_secs: 2.0 }))
            );
        }
    }

    #[test]
    fn start_info_drops_nulls_and_stringifies_structures() {
        let hparams: BTreeMap<String, Value> =
            serde_json::from_value(json!({"a": 1, "b": null, "c": {"k": "v"}, "d": "s", "e": false})).unwrap();
        let value = session_start("run-1", &hparams, 3.0);
        let content = value.metadata.unwrap().plugin_data.unwrap().content;
        let Some(Data::SessionStartInfo(info)) = HParamsPluginData::decode(content.as_slice()).unwrap().data else {
            panic!("not a start info");
        };
        assert_eq!(info.group_name, "run-1");
        let kinds: Vec<(&str, Kind)> =
            info.hparams.iter().map(|(k, v)| (k.as_str(), v.kind.clone().unwrap())).collect();
        assert_eq!(
            kinds,
            vec![
                ("a", Kind::Number(1.0)),
                ("c", Kind::String(r#"{"k":"v"}"#.to_owned())),
                ("d", Kind::String("s".to_owned())),
                ("e", Kind::Bool(false)),
            ]
        );
    }
}
