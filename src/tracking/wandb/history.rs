//! History rows and the run summary, in W&B's JSON forms.
//!
//! Records are grouped into one row per step: consecutive records with the same step fill one
//! row, a record with another step (or a flush, or the end) closes it. A row renders as
//! `{"key": value, ..., "_step": s, "_runtime": r, "_timestamp": t}`. `_runtime` is seconds
//! since the attempt started plus the runtime earlier attempts reached; `_timestamp` is the
//! newest record's wall time.
//!
//! Values are kept as JSON text so non-finite scalars survive: W&B's encoder writes them as
//! `NaN`, `Infinity` and `-Infinity`, which `serde_json` cannot hold. The summary is the newest
//! value of every key over all rows, plus `_step`, `_runtime`, `_timestamp` and
//! `_wandb.runtime`, as the SDK sends it.

use serde::{Deserialize, Serialize};
use serde_json::json;

/// One history row as spooled: values are JSON texts, in the order first logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Row {
    /// `_step`.
    pub step: u64,
    /// `_runtime`, seconds.
    pub runtime: f64,
    /// `_timestamp`, seconds since the epoch.
    pub timestamp: f64,
    /// `(key, JSON text)` pairs.
    pub values: Vec<(String, String)>,
}

/// A number as W&B's JSON encoder writes it (`NaN`, `Infinity`, `-Infinity` included).
pub(crate) fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity".into() } else { "-Infinity".into() }
    } else {
        serde_json::to_string(&v).expect("finite floats serialize")
    }
}

/// Appends `"key":` to `out`.
fn push_key(out: &mut String, key: &str) {
    if out.len() > 1 {
        out.push(',');
    }
    out.push_str(&serde_json::to_string(key).expect("strings serialize"));
    out.push(':');
}

impl Row {
    /// The row as one history line.
    pub(crate) fn render(&self) -> String {
        let mut out = String::from("{");
        for (key, value) in &self.values {
            push_key(&mut out, key);
            out.push_str(value);
        }
        for (key, value) in [
            ("_step", self.step.to_string()),
            ("_runtime", number(self.runtime)),
            ("_timestamp", number(self.timestamp)),
        ] {
            push_key(&mut out, key);
            out.push_str(&value);
        }
        out.push('}');
        out
    }
}

/// The upload name of an image, as the SDK names it: `media/images/{key}_{step}_{sha[:20]}.png`,
/// with a leading `/` dropped and `.`/`..` path segments replaced by `_` (the SDK's
/// `make_file_path_upload_safe`); slashes in the key make subfolders.
pub(crate) fn media_path(key: &str, step: u64, sha256_hex: &str) -> String {
    let safe: Vec<&str> = key
        .trim_start_matches('/')
        .split('/')
        .map(|segment| if segment == "." || segment == ".." { "_" } else { segment })
        .collect();
    format!("media/images/{}_{step}_{}.png", safe.join("/"), &sha256_hex[..20.min(sha256_hex.len())])
}

/// An image's history value.
pub(crate) fn image_value(path: &str, sha256_hex: &str, size: u64, width: u32, height: u32) -> String {
    json!({
        "_type": "image-file",
        "path": path,
        "sha256": sha256_hex,
        "size": size,
        "format": "png",
        "width": width,
        "height": height,
    })
    .to_string()
}

/// Builds rows from records, one per step.
#[derive(Debug)]
pub(crate) struct RowBuilder {
    open: Option<Row>,
    start_wall: f64,
    runtime_before: f64,
}

impl RowBuilder {
    /// Rows of an attempt that started at `start_wall`, after earlier attempts ran for
    /// `runtime_before` seconds.
    pub(crate) fn new(start_wall: f64, runtime_before: f64) -> Self {
        RowBuilder { open: None, start_wall, runtime_before }
    }

    /// Adds `key = value` (JSON text) at `step`; returns the row this closes, if any.
    pub(crate) fn push(&mut self, step: u64, key: &str, value: String, wall_time: f64) -> Option<Row> {
        let closed = match &self.open {
            Some(row) if row.step != step => self.open.take(),
            _ => None,
        };
        let runtime = self.runtime_before + (wall_time - self.start_wall).max(0.0);
        let row = self.open.get_or_insert_with(|| Row { step, runtime, timestamp: wall_time, values: Vec::new() });
        row.runtime = row.runtime.max(runtime);
        row.timestamp = row.timestamp.max(wall_time);
        match row.values.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => row.values.push((key.to_string(), value)),
        }
        closed
    }

    /// Closes the open row.
    pub(crate) fn close(&mut self) -> Option<Row> {
        self.open.take()
    }
}

/// The newest value of every key over the rows folded in.
#[derive(Clone, Debug, Default)]
pub(crate) struct Summary {
    values: Vec<(String, String)>,
    last: Option<(u64, f64, f64)>,
}

impl Summary {
    /// Takes `row`'s values as the newest.
    pub(crate) fn fold(&mut self, row: &Row) {
        for (key, value) in &row.values {
            match self.values.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1.clone_from(value),
                None => self.values.push((key.clone(), value.clone())),
            }
        }
        self.last = Some((row.step, row.runtime, row.timestamp));
    }

    /// The summary as `wandb-summary.json`'s one line; `None` before any row.
    pub(crate) fn render(&self) -> Option<String> {
        let (step, runtime, timestamp) = self.last?;
        let mut out = String::from("{");
        for (key, value) in &self.values {
            push_key(&mut out, key);
            out.push_str(value);
        }
        let whole = runtime.max(0.0).floor() as u64;
        for (key, value) in [
            ("_step", step.to_string()),
            ("_runtime", number(runtime)),
            ("_timestamp", number(timestamp)),
            ("_wandb", format!("{{\"runtime\":{whole}}}")),
        ] {
            push_key(&mut out, key);
            out.push_str(&value);
        }
        out.push('}');
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_group_by_step_and_render_non_finite_values() {
        let mut b = RowBuilder::new(100.0, 5.0);
        assert_eq!(b.push(0, "loss", number(1.0), 100.5), None);
        assert_eq!(b.push(0, "acc", number(f64::NAN), 101.0), None);
        let row = b.push(1, "loss", number(f64::NEG_INFINITY), 102.0).unwrap();
        assert_eq!(row.render(), r#"{"loss":1.0,"acc":NaN,"_step":0,"_runtime":6.0,"_timestamp":101.0}"#);
        let row = b.close().unwrap();
        assert_eq!(row.render(), r#"{"loss":-Infinity,"_step":1,"_runtime":7.0,"_timestamp":102.0}"#);
        assert_eq!(b.close(), None);
    }

    #[test]
    fn summary_keeps_the_newest_value_of_every_key() {
        let mut s = Summary::default();
        assert_eq!(s.render(), None);
        let row = |step, values: &[(&str, &str)]| Row {
            step,
            runtime: step as f64 + 0.5,
            timestamp: 1000.0 + step as f64,
            values: values.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        s.fold(&row(0, &[("a", "1"), ("b", "2")]));
        s.fold(&row(3, &[("a", "3")]));
        assert_eq!(
            s.render().unwrap(),
            r#"{"a":3,"b":2,"_step":3,"_runtime":3.5,"_timestamp":1003.0,"_wandb":{"runtime":3}}"#
        );
    }

    #[test]
    fn media_paths_follow_the_sdk() {
        let sha = "d6a441bfe7e8f09712a97927d56fc98879ffbce791ace14559d0442f2432ee14";
        assert_eq!(media_path("img", 3, sha), "media/images/img_3_d6a441bfe7e8f09712a9.png");
        assert_eq!(
            media_path("/validation/../a dog/0", 10, sha),
            "media/images/validation/_/a dog/0_10_d6a441bfe7e8f09712a9.png"
        );
    }
}
