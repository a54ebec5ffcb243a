//! The `evaluation` settings: scoring a run's checkpoints by what DreamBooth is for (subject
//! fidelity, prompt fidelity, prior preservation), with the models and prompts of the
//! DreamBooth paper (Ruiz et al. 2022, arXiv 2208.12242) as defaults.

use serde::{Deserialize, Serialize};

/// Which of the paper's two prompt lists the default prompts are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalSubject {
    /// An object (backpack, teapot...): the paper's 25 object prompts.
    Object,
    /// A live subject (a dog, a cat): the paper's 25 live-subject prompts (outfits, hats...).
    Live,
}

/// How checkpoints are scored. Nothing is computed unless a model is given: `clip_model` gives
/// CLIP-I and CLIP-T, `dino_model` gives DINO, PRES and DIV.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvaluationConfig {
    /// A transformers `CLIPModel` folder (`save_pretrained`), or `builtin:clip-tiny`.
    pub clip_model: Option<String>,
    /// A transformers `ViTModel` (e.g. facebook/dino-vits16) or `Dinov2Model` folder, or
    /// `builtin:dino-tiny`.
    pub dino_model: Option<String>,
    /// Which default prompt list: `object` or `live`.
    pub subject: EvalSubject,
    /// What `{}` stands for in the prompts the model generates from: the subject's identifier
    /// and class, as in the instance prompt.
    pub subject_phrase: String,
    /// What `{}` stands for in the text CLIP-T compares with: the class noun alone, as the
    /// paper does.
    pub class_phrase: String,
    /// Prompt templates with `{}` for the subject; unset: the paper's 25 for `subject`.
    pub prompts: Option<Vec<String>>,
    /// Images generated per prompt (seeds `seed`, `seed + 1`, ...).
    pub images_per_prompt: u32,
    /// Also evaluate every this many steps (always at step 0, the base model, and at the end).
    pub every_steps: Option<u64>,
    /// DDIM steps of each generated image.
    pub steps: u32,
    /// Classifier-free guidance scale.
    pub guidance: f64,
    /// Seed of each prompt's first image.
    pub seed: u64,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        Self {
            clip_model: None,
            dino_model: None,
            subject: EvalSubject::Live,
            subject_phrase: "sks dog".into(),
            class_phrase: "dog".into(),
            prompts: None,
            images_per_prompt: 4,
            every_steps: None,
            steps: 50,
            guidance: 7.5,
            seed: 0,
        }
    }
}

/// The first ten prompts of both of the paper's lists (`{}` is the subject).
const SETTINGS: [&str; 10] = [
    "a {} in the jungle",
    "a {} in the snow",
    "a {} on the beach",
    "a {} on a cobblestone street",
    "a {} on top of pink fabric",
    "a {} on top of a wooden floor",
    "a {} with a city in the background",
    "a {} with a mountain in the background",
    "a {} with a blue house in the background",
    "a {} on top of a purple rug in a forest",
];

/// The paper's ten prompts for objects only.
const OBJECT_MIDDLE: [&str; 10] = [
    "a {} with a wheat field in the background",
    "a {} with a tree and autumn leaves in the background",
    "a {} with the Eiffel Tower in the background",
    "a {} floating on top of water",
    "a {} floating in an ocean of milk",
    "a {} on top of green grass with sunflowers around it",
    "a {} on top of a mirror",
    "a {} on top of the sidewalk in a crowded street",
    "a {} on top of a dirt road",
    "a {} on top of a white rug",
];

/// The paper's ten prompts for live subjects only.
const LIVE_MIDDLE: [&str; 10] = [
    "a {} wearing a red hat",
    "a {} wearing a santa hat",
    "a {} wearing a rainbow scarf",
    "a {} wearing a black top hat and a monocle",
    "a {} in a chef outfit",
    "a {} in a firefighter outfit",
    "a {} in a police outfit",
    "a {} wearing pink glasses",
    "a {} wearing a yellow shirt",
    "a {} in a purple wizard outfit",
];

/// The last five prompts of both lists.
const PROPERTIES: [&str; 5] = ["a red {}", "a purple {}", "a shiny {}", "a wet {}", "a cube shaped {}"];

/// The paper's 25 prompts for `subject` (`{}` is the subject): the shared ten, the ten of
/// the subject kind, the shared five.
pub fn paper_prompts(subject: EvalSubject) -> Vec<&'static str> {
    let middle = match subject {
        EvalSubject::Object => OBJECT_MIDDLE,
        EvalSubject::Live => LIVE_MIDDLE,
    };
    SETTINGS.iter().chain(&middle).chain(&PROPERTIES).copied().collect()
}

impl EvaluationConfig {
    /// Whether anything is scored (a model is given).
    pub fn enabled(&self) -> bool {
        self.clip_model.is_some() || self.dino_model.is_some()
    }

    /// The prompt templates: the configured ones, or the paper's for the subject.
    pub fn templates(&self) -> Vec<String> {
        match &self.prompts {
            Some(prompts) => prompts.clone(),
            None => paper_prompts(self.subject).into_iter().map(String::from).collect(),
        }
    }

    /// Every range rule these settings break, as `(key, expected, found)`.
    pub fn violations(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut out = Vec::new();
        let mut rule = |ok: bool, key: &'static str, expected: &'static str, found: String| {
            if !ok {
                out.push((key, expected, found));
            }
        };
        for (key, model) in [("evaluation.clip_model", &self.clip_model), ("evaluation.dino_model", &self.dino_model)] {
            if let Some(m) = model {
                rule(!m.trim().is_empty(), key, "a model folder or builtin name, or unset", format!("{m:?}"));
            }
        }
        rule(
            !self.subject_phrase.trim().is_empty(),
            "evaluation.subject_phrase",
            "a non-empty phrase",
            format!("{:?}", self.subject_phrase),
        );
        rule(
            !self.class_phrase.trim().is_empty(),
            "evaluation.class_phrase",
            "a non-empty phrase",
            format!("{:?}", self.class_phrase),
        );
        if let Some(prompts) = &self.prompts {
            let bad = prompts.iter().find(|p| !p.contains("{}"));
            rule(
                !prompts.is_empty() && bad.is_none(),
                "evaluation.prompts",
                "a non-empty list of prompts, each with `{}` where the subject goes",
                bad.map_or_else(|| "[]".to_string(), |p| format!("{p:?}")),
            );
        }
        rule(
            self.images_per_prompt >= 1,
            "evaluation.images_per_prompt",
            "an integer >= 1",
            self.images_per_prompt.to_string(),
        );
        if let Some(every) = self.every_steps {
            rule(every >= 1, "evaluation.every_steps", "an integer >= 1, or unset", every.to_string());
        }
        rule(self.steps >= 1, "evaluation.steps", "an integer >= 1", self.steps.to_string());
        rule(
            self.guidance >= 1.0,
            "evaluation.guidance",
            "a number >= 1 (1 disables guidance)",
            self.guidance.to_string(),
        );
        out
    }
}

/// `template` with its `{}` replaced by `subject`.
pub fn fill(template: &str, subject: &str) -> String {
    template.replace("{}", subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_lists_differ_only_in_the_middle() {
        let (object, live) = (paper_prompts(EvalSubject::Object), paper_prompts(EvalSubject::Live));
        assert_eq!((object.len(), live.len()), (25, 25));
        assert_eq!(object[0], "a {} in the jungle");
        assert_eq!(object[24], "a cube shaped {}");
        assert_eq!(object[10], "a {} with a wheat field in the background");
        assert_eq!(fill(live[13], "sks dog"), "a sks dog wearing a black top hat and a monocle");
        let mut c = EvaluationConfig::default();
        assert_eq!(c.templates().len(), 25);
        c.prompts = Some(vec!["a photo of a {}".into(), "no subject".into()]);
        assert_eq!(c.violations()[0].0, "evaluation.prompts");
    }
}
