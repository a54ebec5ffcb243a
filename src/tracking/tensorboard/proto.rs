//! The protobuf messages TensorBoard reads, as `prost` derive structs (no `protoc` at build
//! time).
//!
//! Only the fields dbsweep writes are declared; protobuf readers skip what they do not know and
//! default what is absent, so a subset is wire-compatible. Field numbers and enum values are
//! copied from TensorBoard 2.21's descriptors:
//! `tensorboard/compat/proto/{event,summary,tensor,tensor_shape,types}.proto`,
//! `tensorboard/plugins/hparams/{api,plugin_data}.proto`,
//! `tensorboard/plugins/custom_scalar/layout.proto` and `google/protobuf/struct.proto`.

use std::collections::BTreeMap;

/// `tensorboard.Event`: one record of an event file.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// Global step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event carries.
    #[prost(oneof = "event::What", tags = "3, 5, 7")]
    pub what: Option<event::What>,
}

/// Nested types of [`Event`].
pub(crate) mod event {
    /// `Event.what`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum What {
        /// `file_version`, e.g. `brain.Event:2`.
        #[prost(string, tag = "3")]
        FileVersion(String),
        /// `summary`.
        #[prost(message, tag = "5")]
        Summary(super::Summary),
        /// `session_log`.
        #[prost(message, tag = "7")]
        SessionLog(super::SessionLog),
    }
}

/// `tensorboard.SessionLog`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SessionLog {
    /// `SessionLog.SessionStatus`.
    #[prost(enumeration = "SessionStatus", tag = "1")]
    pub status: i32,
}

/// `SessionLog.SessionStatus`; only `START` is written.
///
/// Every enum here keeps its zero value first: prost's derived `Default` is the first variant,
/// and a proto3 field equal to its default is not encoded, so without it `START` would vanish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum SessionStatus {
    /// `STATUS_UNSPECIFIED`, the default.
    Unspecified = 0,
    /// A (re)started session: readers drop points at or after the event's step.
    Start = 1,
}

/// `tensorboard.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Summary {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorboard.Summary.Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SummaryValue {
    /// Tag.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// Which plugin owns the value.
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    /// The value.
    #[prost(oneof = "summary_value::Value", tags = "2, 4, 8")]
    pub value: Option<summary_value::Value>,
}

/// Nested types of [`SummaryValue`].
pub(crate) mod summary_value {
    /// `Summary.Value.value`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Value {
        /// `simple_value` (a 32-bit float on the wire).
        #[prost(float, tag = "2")]
        Simple(f32),
        /// `image`.
        #[prost(message, tag = "4")]
        Image(super::SummaryImage),
        /// `tensor`.
        #[prost(message, tag = "8")]
        Tensor(super::TensorProto),
    }
}

/// `tensorboard.Summary.Image`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SummaryImage {
    /// Height in pixels.
    #[prost(int32, tag = "1")]
    pub height: i32,
    /// Width in pixels.
    #[prost(int32, tag = "2")]
    pub width: i32,
    /// 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA.
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    /// The encoded image (PNG).
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// `tensorboard.SummaryMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SummaryMetadata {
    /// The owning plugin.
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

/// `tensorboard.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PluginData {
    /// e.g. `hparams`, `text`, `custom_scalars`.
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    /// Plugin-specific serialized bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorboard.DataType.DT_STRING`.
pub(crate) const DT_STRING: i32 = 7;

/// `tensorboard.TensorProto`, string tensors only.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TensorProto {
    /// `tensorboard.DataType`.
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    /// Shape; no dimensions is a scalar.
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// The strings, in row-major order.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `tensorboard.TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TensorShapeProto {
    /// Dimensions.
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<TensorShapeDim>,
}

/// `tensorboard.TensorShapeProto.Dim`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TensorShapeDim {
    /// Size.
    #[prost(int64, tag = "1")]
    pub size: i64,
}

/// `tensorboard.hparams.HParamsPluginData`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HParamsPluginData {
    /// Plugin data version, 0.
    #[prost(int32, tag = "1")]
    pub version: i32,
    /// What it carries.
    #[prost(oneof = "hparams_plugin_data::Data", tags = "2, 3, 4")]
    pub data: Option<hparams_plugin_data::Data>,
}

/// Nested types of [`HParamsPluginData`].
pub(crate) mod hparams_plugin_data {
    /// `HParamsPluginData.data`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Data {
        /// `experiment`.
        #[prost(message, tag = "2")]
        Experiment(super::Experiment),
        /// `session_start_info`.
        #[prost(message, tag = "3")]
        SessionStartInfo(super::SessionStartInfo),
        /// `session_end_info`.
        #[prost(message, tag = "4")]
        SessionEndInfo(super::SessionEndInfo),
    }
}

/// `tensorboard.hparams.Experiment`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Experiment {
    /// Shown as the experiment's name.
    #[prost(string, tag = "6")]
    pub name: String,
    /// When it was created.
    #[prost(double, tag = "3")]
    pub time_created_secs: f64,
    /// The hyperparameter columns.
    #[prost(message, repeated, tag = "4")]
    pub hparam_infos: Vec<HParamInfo>,
    /// The metric columns.
    #[prost(message, repeated, tag = "5")]
    pub metric_infos: Vec<MetricInfo>,
}

/// `tensorboard.hparams.HParamInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HParamInfo {
    /// Name: the key in each session's hparams map.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `tensorboard.hparams.DataType`.
    #[prost(enumeration = "HParamDataType", tag = "4")]
    pub r#type: i32,
    /// The values the sweep takes, if listed.
    #[prost(message, optional, tag = "5")]
    pub domain_discrete: Option<ListValue>,
}

/// `tensorboard.hparams.DataType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum HParamDataType {
    /// `DATA_TYPE_UNSET`, the default.
    Unset = 0,
    /// `DATA_TYPE_STRING`.
    String = 1,
    /// `DATA_TYPE_BOOL`.
    Bool = 2,
    /// `DATA_TYPE_FLOAT64`.
    Float64 = 3,
}

/// `tensorboard.hparams.MetricInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct MetricInfo {
    /// Which scalar.
    #[prost(message, optional, tag = "1")]
    pub name: Option<MetricName>,
}

/// `tensorboard.hparams.MetricName`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct MetricName {
    /// Sub-folder of the session's run folder holding the scalar; empty for the folder itself.
    #[prost(string, tag = "1")]
    pub group: String,
    /// The scalar's tag.
    #[prost(string, tag = "2")]
    pub tag: String,
}

/// `tensorboard.hparams.SessionStartInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SessionStartInfo {
    /// Hyperparameter values.
    #[prost(btree_map = "string, message", tag = "1")]
    pub hparams: BTreeMap<String, ProtoValue>,
    /// Sessions with the same group name are one row of the HParams table.
    #[prost(string, tag = "4")]
    pub group_name: String,
    /// When the session started.
    #[prost(double, tag = "5")]
    pub start_time_secs: f64,
}

/// `tensorboard.hparams.SessionEndInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SessionEndInfo {
    /// `tensorboard.hparams.Status`.
    #[prost(enumeration = "HParamsStatus", tag = "1")]
    pub status: i32,
    /// When the session ended.
    #[prost(double, tag = "2")]
    pub end_time_secs: f64,
}

/// `tensorboard.hparams.Status`; only the final states are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum HParamsStatus {
    /// `STATUS_UNKNOWN`, the default.
    Unknown = 0,
    /// `STATUS_SUCCESS`.
    Success = 1,
    /// `STATUS_FAILURE`.
    Failure = 2,
}

/// `google.protobuf.Value`, without `null_value` and `struct_value` (never written).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProtoValue {
    /// The value.
    #[prost(oneof = "proto_value::Kind", tags = "2, 3, 4, 6")]
    pub kind: Option<proto_value::Kind>,
}

/// Nested types of [`ProtoValue`].
pub(crate) mod proto_value {
    /// `google.protobuf.Value.kind`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Kind {
        /// `number_value`.
        #[prost(double, tag = "2")]
        Number(f64),
        /// `string_value`.
        #[prost(string, tag = "3")]
        String(String),
        /// `bool_value`.
        #[prost(bool, tag = "4")]
        Bool(bool),
        /// `list_value`.
        #[prost(message, tag = "6")]
        List(super::ListValue),
    }
}

/// `google.protobuf.ListValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ListValue {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<ProtoValue>,
}

/// `tensorboard.Layout` (custom scalars plugin).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Layout {
    /// The categories, top to bottom.
    #[prost(message, repeated, tag = "2")]
    pub category: Vec<Category>,
}

/// `tensorboard.Category`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Category {
    /// Title.
    #[prost(string, tag = "1")]
    pub title: String,
    /// Charts.
    #[prost(message, repeated, tag = "2")]
    pub chart: Vec<Chart>,
    /// Collapsed when the dashboard opens.
    #[prost(bool, tag = "3")]
    pub closed: bool,
}

/// `tensorboard.Chart` with multiline content (the only kind written).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Chart {
    /// Title.
    #[prost(string, tag = "1")]
    pub title: String,
    /// `multiline`.
    #[prost(message, optional, tag = "2")]
    pub multiline: Option<MultilineChartContent>,
}

/// `tensorboard.MultilineChartContent`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct MultilineChartContent {
    /// Regular expressions over tags (Python `re.match`: anchored at the start only).
    #[prost(string, repeated, tag = "1")]
    pub tag: Vec<String>,
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Bytes from TensorBoard 2.21's own `event_pb2.Event(wall_time=1.5,
    /// file_version="brain.Event:2").SerializeToString()`.
    #[test]
    fn file_version_event_matches_tensorboard_bytes() {
        let event = Event { wall_time: 1.5, step: 0, what: Some(event::What::FileVersion("brain.Event:2".to_owned())) };
        let hex: String = event.encode_to_vec().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "09000000000000f83f1a0d627261696e2e4576656e743a32");
    }
}
