//! Building the summary values TensorBoard's dashboards read: scalars, images, text, and
//! plugin-owned string tensors (hparams, custom scalars).

use super::proto::{
    DT_STRING, Event, PluginData, Summary, SummaryImage, SummaryMetadata, SummaryValue, TensorProto, TensorShapeProto,
    event, summary_value,
};

/// `Summary.Image.colorspace` of RGB, what dbsweep's PNGs are.
pub(crate) const COLORSPACE_RGB: i32 = 3;

/// An event at `step` carrying one summary value.
pub(crate) fn summary_event(wall_time: f64, step: u64, value: SummaryValue) -> Event {
    Event { wall_time, step: step_i64(step), what: Some(event::What::Summary(Summary { value: vec![value] })) }
}

/// A scalar (`simple_value`, a 32-bit float as TensorBoard stores it).
pub(crate) fn scalar(tag: &str, value: f64) -> SummaryValue {
    SummaryValue { tag: tag.to_owned(), metadata: None, value: Some(summary_value::Value::Simple(value as f32)) }
}

/// An encoded image.
pub(crate) fn image(tag: &str, width: u32, height: u32, png: Vec<u8>) -> SummaryValue {
    let image = SummaryImage {
        height: i32::try_from(height).unwrap_or(i32::MAX),
        width: i32::try_from(width).unwrap_or(i32::MAX),
        colorspace: COLORSPACE_RGB,
        encoded_image_string: png,
    };
    SummaryValue { tag: tag.to_owned(), metadata: None, value: Some(summary_value::Value::Image(image)) }
}

/// A text for the text plugin: a scalar string tensor, rendered as Markdown.
///
/// The plugin's content is `TextPluginData { version: 0 }`, which encodes to no bytes.
pub(crate) fn text(tag: &str, text: &str) -> SummaryValue {
    plugin_tensor(tag, "text", Vec::new(), text.as_bytes().to_vec())
}

/// A value owned by `plugin` whose data is `content` in the metadata and `bytes` as a scalar
/// string tensor.
pub(crate) fn plugin_tensor(tag: &str, plugin: &str, content: Vec<u8>, bytes: Vec<u8>) -> SummaryValue {
    let tensor = TensorProto {
        dtype: DT_STRING,
        tensor_shape: Some(TensorShapeProto { dim: Vec::new() }),
        string_val: vec![bytes],
    };
    SummaryValue {
        tag: tag.to_owned(),
        metadata: Some(plugin_metadata(plugin, content)),
        value: Some(summary_value::Value::Tensor(tensor)),
    }
}

/// A value that only carries plugin metadata, as the hparams plugin's summaries do.
pub(crate) fn plugin_only(tag: &str, plugin: &str, content: Vec<u8>) -> SummaryValue {
    SummaryValue { tag: tag.to_owned(), metadata: Some(plugin_metadata(plugin, content)), value: None }
}

fn plugin_metadata(plugin: &str, content: Vec<u8>) -> SummaryMetadata {
    SummaryMetadata { plugin_data: Some(PluginData { plugin_name: plugin.to_owned(), content }) }
}

/// A step as the proto's `int64` (steps past `i64::MAX` saturate).
pub(crate) fn step_i64(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}
