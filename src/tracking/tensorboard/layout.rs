//! The CUSTOM SCALARS tab's layout: a small JSON file, turned into the custom_scalars plugin's
//! `Layout` proto and written into the sweep root.
//!
//! The JSON form (`dashboards/tensorboard-layout.json` is the default, built in):
//!
//! ```json
//! { "categories": [
//!     { "title": "loss", "closed": false,
//!       "charts": [ { "title": "training loss",
//!                     "tags": ["train/loss", "train/loss_instance"],
//!                     "patterns": ["^train/loss_.*$"] } ] } ] }
//! ```
//!
//! A chart draws every scalar whose tag is one of `tags` (exact names) or matches one of
//! `patterns` (regular expressions as TensorBoard reads them: Python `re.match`, anchored at the
//! start only). `closed` and `patterns` are optional; unknown keys are an error, so a typo does
//! not silently drop a chart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use serde::Deserialize;

use super::proto;
use super::summary::{plugin_tensor, summary_event};
use super::writer::EventFileWriter;
use crate::tracking::TrackingError;

/// The plugin's name.
const PLUGIN: &str = "custom_scalars";
/// The tag the plugin reads its layout from.
const CONFIG_TAG: &str = "custom_scalars__config__";
/// Where the built-in default comes from, for error messages.
const DEFAULT_PATH: &str = "dashboards/tensorboard-layout.json";
/// The built-in default layout.
const DEFAULT_JSON: &str = include_str!("../../../dashboards/tensorboard-layout.json");

/// A custom-scalars layout: categories of charts.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// Sections of the tab, top to bottom.
    pub categories: Vec<LayoutCategory>,
}

/// One section of the tab.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutCategory {
    /// Heading.
    pub title: String,
    /// Collapsed when the tab opens.
    #[serde(default)]
    pub closed: bool,
    /// Its charts.
    pub charts: Vec<LayoutChart>,
}

/// One chart: several scalar tags drawn together.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutChart {
    /// Title.
    pub title: String,
    /// Exact tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Regular expressions over tags.
    #[serde(default)]
    pub patterns: Vec<String>,
}

impl Layout {
    /// The built-in layout (a copy of `dashboards/tensorboard-layout.json`).
    pub fn builtin() -> Result<Self, TrackingError> {
        Self::from_json(DEFAULT_JSON, Path::new(DEFAULT_PATH))
    }

    /// Reads a layout file.
    pub fn from_file(path: &Path) -> Result<Self, TrackingError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| TrackingError::Io { path: path.to_owned(), source })?;
        Self::from_json(&text, path)
    }

    /// Parses a layout; `path` names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, TrackingError> {
        let invalid = |message: String| TrackingError::Invalid { path: path.to_owned(), message };
        let layout: Layout = serde_json::from_str(text).map_err(|err| invalid(format!("not a layout: {err}")))?;
        for category in &layout.categories {
            for chart in &category.charts {
                if chart.tags.is_empty() && chart.patterns.is_empty() {
                    return Err(invalid(format!(
                        "chart `{}` in category `{}` has neither `tags` nor `patterns`",
                        chart.title, category.title
                    )));
                }
            }
        }
        Ok(layout)
    }

    /// The plugin's `Layout` proto: exact tags become escaped, anchored expressions.
    pub(crate) fn to_proto(&self) -> proto::Layout {
        let category = self
            .categories
            .iter()
            .map(|category| proto::Category {
                title: category.title.clone(),
                closed: category.closed,
                chart: category
                    .charts
                    .iter()
                    .map(|chart| proto::Chart {
                        title: chart.title.clone(),
                        multiline: Some(proto::MultilineChartContent {
                            tag: chart
                                .tags
                                .iter()
                                .map(|tag| exact(tag))
                                .chain(chart.patterns.iter().cloned())
                                .collect(),
                        }),
                    })
                    .collect(),
            })
            .collect();
        proto::Layout { category }
    }
}

/// Writes `layout` into a new event file in `sweep_root`, where TensorBoard's CUSTOM SCALARS
/// tab finds it for every run below. Returns the file's path.
pub fn write_layout(sweep_root: &Path, layout: &Layout, wall_time: f64) -> Result<PathBuf, TrackingError> {
    let mut writer = EventFileWriter::create(sweep_root, Duration::MAX)?;
    let value = plugin_tensor(CONFIG_TAG, PLUGIN, Vec::new(), layout.to_proto().encode_to_vec());
    writer.write_event(&summary_event(wall_time, 0, value))?;
    writer.sync()?;
    Ok(writer.path().to_owned())
}

/// A Python regular expression that matches exactly `tag`.
fn exact(tag: &str) -> String {
    let mut pattern = String::with_capacity(tag.len() + 2);
    pattern.push('^');
    for c in tag.chars() {
        if "\\.^$*+?{}[]|()".contains(c) {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('$');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_layout_has_the_four_categories() {
        let layout = Layout::builtin().unwrap();
        let titles: Vec<&str> = layout.categories.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(titles, ["loss", "learning rate", "validation", "prior drift"]);
        let proto = layout.to_proto();
        assert_eq!(
            proto.category[0].chart[0].multiline.as_ref().unwrap().tag,
            ["^train/loss$", "^train/loss_instance$", "^train/loss_prior$"]
        );
    }

    #[test]
    fn exact_tags_escape_regex_characters() {
        assert_eq!(exact("val/a.b(c)"), r"^val/a\.b\(c\)$");
    }

    #[test]
    fn bad_layouts_name_the_file() {
        let path = Path::new("layout.json");
        let err =
            Layout::from_json(r#"{"categories": [{"title": "x", "charts": [], "colour": 1}]}"#, path).unwrap_err();
        assert!(err.to_string().starts_with("`layout.json`: not a layout: unknown field `colour`"), "{err}");
        let err =
            Layout::from_json(r#"{"categories": [{"title": "x", "charts": [{"title": "c"}]}]}"#, path).unwrap_err();
        assert_eq!(err.to_string(), "`layout.json`: chart `c` in category `x` has neither `tags` nor `patterns`");
        let err = Layout::from_file(Path::new("/nonexistent/layout.json")).unwrap_err();
        assert!(err.to_string().starts_with("`/nonexistent/layout.json`: "), "{err}");
    }
}
