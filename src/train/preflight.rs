//! What can be checked of a run's settings before anything is registered or launched: the
//! base model (a built-in name, or a folder whose configs, weight headers, tokenizer and noise
//! schedule are sound), the resolution it can take, and W&B's credentials in online mode. The
//! image folders are checked when the run's identity is computed (they are part of it). A
//! problem found here is bad input at the file, line and column that set the value, never a
//! run failing three times.

use serde_json::Value;

use crate::config::{ConfigError, Origin, Problem, ProblemKind, Resolved};
use crate::model::builtin::{self, eval_models};
use crate::model::vision::Architecture;
use crate::sweep::Plan;
use crate::tracking::wandb;

/// Checks every value of `model.pretrained` and `data.resolution` a plan's runs use (each
/// model once), and W&B's credentials for its tracking settings.
pub fn check_plan(plan: &Plan, env: &[(String, String)]) -> Result<(), ConfigError> {
    let models = plan.settings_of("model.pretrained");
    let resolutions = plan.settings_of("data.resolution");
    let judges: Vec<(&str, Vec<(Value, Origin)>)> = JUDGES.iter().map(|k| (*k, plan.settings_of(k))).collect();
    check(&models, &resolutions, &judges, &plan.base, env)
}

/// Checks one experiment's settings as [`check_plan`] checks a sweep's.
pub fn check_experiment(resolved: &Resolved, env: &[(String, String)]) -> Result<(), ConfigError> {
    let setting = |key: &str| {
        let path: Vec<&str> = key.split('.').collect();
        let value = path.iter().try_fold(&resolved.json, |v, k| v.get(*k)).cloned().unwrap_or(Value::Null);
        vec![(value, resolved.provenance.get(key).cloned().unwrap_or(Origin::Default))]
    };
    let judges: Vec<(&str, Vec<(Value, Origin)>)> = JUDGES.iter().map(|k| (*k, setting(k))).collect();
    check(&setting("model.pretrained"), &setting("data.resolution"), &judges, resolved, env)
}

/// The evaluation model settings.
const JUDGES: [&str; 2] = ["evaluation.clip_model", "evaluation.dino_model"];

fn check(
    models: &[(Value, Origin)],
    resolutions: &[(Value, Origin)],
    judges: &[(&str, Vec<(Value, Origin)>)],
    base: &Resolved,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    let invalid = |origin: &Origin, key: &str, expected: String, found: String| {
        Problem::new(origin.clone(), Some(key.to_string()), ProblemKind::Invalid { expected, found })
    };
    for (model, origin) in models {
        let name = model.as_str().unwrap_or_default();
        match builtin::check(name) {
            Err(e) => problems.push(invalid(origin, "model.pretrained", "a usable model".into(), e.to_string())),
            Ok(geometry) => {
                for (resolution, at) in resolutions {
                    let px = resolution.as_u64().unwrap_or(0) as usize;
                    if px == 0 || !px.is_multiple_of(geometry.size_multiple) {
                        let expected =
                            format!("a multiple of {} pixels for the model `{name}`", geometry.size_multiple);
                        problems.push(invalid(at, "data.resolution", expected, px.to_string()));
                    }
                }
            }
        }
    }
    // Evaluation models: a built-in name, or a transformers folder of the right family.
    for (key, values) in judges {
        for (value, origin) in values {
            let Some(name) = value.as_str() else { continue };
            let problem = match eval_models::check(name) {
                Ok(Some(arch)) if (*key == "evaluation.clip_model") != (arch == Architecture::Clip) => {
                    let expected = if *key == "evaluation.clip_model" { "a CLIPModel" } else { "a ViTModel or Dinov2Model" };
                    Some(format!("`{name}` is a {arch:?} model; {key} needs {expected}"))
                }
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            };
            if let Some(found) = problem {
                problems.push(invalid(origin, key, "a usable evaluation model".into(), found));
            }
        }
    }
    if let Some(cfg) = &base.config.tracking.wandb
        && let Err(e) = wandb::credentials(cfg, env)
    {
        let origin = base.provenance.get("tracking.wandb.mode").cloned().unwrap_or(Origin::Default);
        problems.push(Problem::new(origin, Some("tracking.wandb".into()), ProblemKind::Conflict(e.to_string())));
    }
    ConfigError::check(problems, ())
}
