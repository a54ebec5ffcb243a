//! What can be checked of a run's settings before anything is registered or launched: the
//! base model (a built-in name, or a folder whose configs, weight headers, tokenizer and noise
//! schedule are sound), the resolution it can take, the layers LoRA adapts, the evaluation
//! models, and W&B's credentials in online mode. The
//! image folders are checked when the run's identity is computed (they are part of it). A
//! problem found here is bad input at the file, line and column that set the value, never a
//! run failing three times.

use serde_json::Value;

use crate::config::{ConfigError, Origin, Problem, ProblemKind, Resolved};
use crate::model::ModelError;
use crate::model::builtin::{self, eval_models};
use crate::model::lora::targets;
use crate::model::vision::Architecture;
use crate::sweep::Plan;
use crate::tracking::wandb;

/// Checks every value of `model.pretrained` and `data.resolution` a plan's runs use (each
/// model once), and W&B's credentials for its tracking settings.
pub fn check_plan(plan: &Plan, env: &[(String, String)]) -> Result<(), ConfigError> {
    let models = plan.settings_of("model.pretrained");
    let resolutions = plan.settings_of("data.resolution");
    let judges: Vec<(&str, Vec<(Value, Origin)>)> = JUDGES.iter().map(|k| (*k, plan.settings_of(k))).collect();
    let adapters: Vec<(&str, Vec<(Value, Origin)>)> = ADAPTERS.iter().map(|k| (*k, plan.settings_of(k))).collect();
    check(&models, &resolutions, &judges, &adapters, &plan.base, env)
}

/// Checks one experiment's settings as [`check_plan`] checks a sweep's.
pub fn check_experiment(resolved: &Resolved, env: &[(String, String)]) -> Result<(), ConfigError> {
    let setting = |key: &str| {
        let path: Vec<&str> = key.split('.').collect();
        let value = path.iter().try_fold(&resolved.json, |v, k| v.get(*k)).cloned().unwrap_or(Value::Null);
        vec![(value, resolved.provenance.get(key).cloned().unwrap_or(Origin::Default))]
    };
    let judges: Vec<(&str, Vec<(Value, Origin)>)> = JUDGES.iter().map(|k| (*k, setting(k))).collect();
    let adapters: Vec<(&str, Vec<(Value, Origin)>)> = ADAPTERS.iter().map(|k| (*k, setting(k))).collect();
    check(&setting("model.pretrained"), &setting("data.resolution"), &judges, &adapters, resolved, env)
}

/// The evaluation model settings.
const JUDGES: [&str; 2] = ["evaluation.clip_model", "evaluation.dino_model"];

/// The settings that decide which layers LoRA adapts, in the order [`check`] reads them.
const ADAPTERS: [&str; 4] =
    ["train.method", "train.train_text_encoder", "lora.target_modules", "lora.text_target_modules"];

fn check(
    models: &[(Value, Origin)],
    resolutions: &[(Value, Origin)],
    judges: &[(&str, Vec<(Value, Origin)>)],
    adapters: &[(&str, Vec<(Value, Origin)>)],
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
    problems.extend(check_targets(models, adapters));
    // Evaluation models: a built-in name, or a transformers folder of the right family.
    for (key, values) in judges {
        for (value, origin) in values {
            let Some(name) = value.as_str() else { continue };
            let problem = match eval_models::check(name) {
                Ok(Some(arch)) if (*key == "evaluation.clip_model") != (arch == Architecture::Clip) => {
                    let expected =
                        if *key == "evaluation.clip_model" { "a CLIPModel" } else { "a ViTModel or Dinov2Model" };
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

/// Checks that every target of `lora.target_modules` (and, when the text encoder is trained,
/// `lora.text_target_modules`) names layers of every model a LoRA run uses.
fn check_targets(models: &[(Value, Origin)], adapters: &[(&str, Vec<(Value, Origin)>)]) -> Vec<Problem> {
    let [(_, methods), (_, text), (_, unet_targets), (_, text_targets)] = adapters else { return Vec::new() };
    if !methods.iter().any(|(m, _)| m == "lora") {
        return Vec::new();
    }
    let with_text = text.iter().any(|(t, _)| t == &Value::Bool(true));
    let mut problems = Vec::new();
    for (model, _) in models {
        // An unusable model is reported above.
        let Ok((unet, encoder)) = builtin::linear_layers(model.as_str().unwrap_or_default()) else { continue };
        let lists = [("lora.target_modules", unet_targets, &unet, "the UNet")]
            .into_iter()
            .chain(with_text.then_some(("lora.text_target_modules", text_targets, &encoder, "the text encoder")));
        for (key, values, layers, name) in lists {
            for (value, origin) in values {
                let targets: Vec<String> = serde_json::from_value(value.clone()).unwrap_or_default();
                if let Err(e) = targets::select(layers, &targets, key, name) {
                    let found = match e {
                        ModelError::Adapter { message, .. } => message,
                        other => other.to_string(),
                    };
                    let kind = ProblemKind::Invalid { expected: format!("layer names of {name}"), found };
                    problems.push(Problem::new(origin.clone(), Some(key.to_string()), kind));
                }
            }
        }
    }
    problems
}
