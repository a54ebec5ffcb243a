//! Fast canonical text for every point of a sweep.
//!
//! A run's configuration is the sweep's resolved base with the swept leaves replaced. Its
//! canonical JSON (sorted keys) is therefore fixed text with holes where the swept values go.
//! [`Template`] serializes the base once, splits it at the holes, and fills them per point, so
//! expanding a million points costs a memcpy and a hash each rather than a JSON build and
//! serialization. `tests` prove the text equals serializing the fully resolved config.

use serde_json::Value;

use crate::config::leaf_mut;

/// The base configuration's canonical text, split at the swept leaves.
#[derive(Clone, Debug)]
pub struct Template {
    /// Text between holes; one more segment than holes.
    segments: Vec<String>,
    /// For each hole in text order, the index of the parameter that fills it.
    slot_param: Vec<usize>,
}

const MARK: &str = "\u{1}dbsweep-slot-";

impl Template {
    /// Builds the template for `base` (canonical JSON) with the leaves at `keys` (dotted) as
    /// holes.
    pub fn new(base: &Value, keys: &[String]) -> Self {
        let mut json = base.clone();
        for (i, key) in keys.iter().enumerate() {
            let path: Vec<&str> = key.split('.').collect();
            *leaf_mut(&mut json, &path).expect("swept keys are known leaves") =
                Value::String(format!("{MARK}{i}\u{1}"));
        }
        let text = json.to_string();
        let mut segments = Vec::with_capacity(keys.len() + 1);
        let mut slot_param = Vec::with_capacity(keys.len());
        let mut rest = text.as_str();
        // Serialized, the marker string is `"\u0001dbsweep-slot-N\u0001"`.
        let open = "\"\\u0001dbsweep-slot-";
        while let Some(start) = rest.find(open) {
            segments.push(rest[..start].to_string());
            let after = &rest[start + open.len()..];
            let end = after.find("\\u0001\"").expect("closed marker");
            slot_param.push(after[..end].parse().expect("slot index"));
            rest = &after[end + "\\u0001\"".len()..];
        }
        segments.push(rest.to_string());
        Self { segments, slot_param }
    }

    /// Writes the canonical text of the point whose parameter `i` has the serialized value
    /// `value_text(i)` into `out` (cleared first).
    pub fn fill<'a>(&self, out: &mut String, value_text: impl Fn(usize) -> &'a str) {
        out.clear();
        for (segment, &param) in self.segments.iter().zip(&self.slot_param) {
            out.push_str(segment);
            out.push_str(value_text(param));
        }
        out.push_str(self.segments.last().expect("at least one segment"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filled_text_equals_serialized_config() {
        let base = json!({"a": {"x": 1, "y": [1, 2]}, "b": "s", "c": {"z": null}});
        let keys = vec!["c.z".to_string(), "a.x".to_string()];
        let t = Template::new(&base, &keys);
        let values = [json!(0.5), json!(7)];
        let texts: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let mut out = String::new();
        t.fill(&mut out, |i| texts[i].as_str());
        let expected = json!({"a": {"x": 7, "y": [1, 2]}, "b": "s", "c": {"z": 0.5}}).to_string();
        assert_eq!(out, expected);
    }
}
