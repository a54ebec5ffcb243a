//! Scores from embeddings: the paper's metrics overall and per prompt, given the embeddings of
//! the real instance images, of each prompt's generated images and texts, and of the images
//! generated from the class prompt.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::metrics::{Embedding, diversity, mean_matched, mean_pairwise};

/// What one prompt's images were scored (absent: its model is not configured).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptScore {
    /// The prompt the images were generated from.
    pub prompt: String,
    /// The text CLIP-T compared them with (the subject replaced by its class).
    pub text: String,
    /// DINO against the real images.
    pub dino: Option<f64>,
    /// CLIP-I against the real images.
    pub clip_i: Option<f64>,
    /// CLIP-T against `text`.
    pub clip_t: Option<f64>,
}

/// One evaluation's results: the metrics by name (`eval/dino`, ...), and per prompt.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// `eval/dino`, `eval/clip_i`, `eval/clip_t`, `eval/pres`, `eval/div` (those computed).
    pub metrics: BTreeMap<String, f64>,
    /// Per prompt, in prompt order.
    pub per_prompt: Vec<PromptScore>,
}

/// The embeddings of one evaluation, by model (`None`: the model is not configured).
#[derive(Clone, Debug, Default)]
pub struct Embeddings {
    /// DINO embeddings of the real instance images.
    pub dino_real: Option<Vec<Embedding>>,
    /// CLIP image embeddings of the real instance images.
    pub clip_real: Option<Vec<Embedding>>,
    /// Per prompt: DINO embeddings of its generated images.
    pub dino_generated: Option<Vec<Vec<Embedding>>>,
    /// Per prompt: CLIP image embeddings of its generated images.
    pub clip_generated: Option<Vec<Vec<Embedding>>>,
    /// Per prompt: the CLIP text embedding of its class text.
    pub clip_text: Option<Vec<Embedding>>,
    /// DINO embeddings of the images generated from the class prompt.
    pub dino_class: Option<Vec<Embedding>>,
}

/// Scores `prompts` (the prompt each group of images came from, with its class text) from
/// `e`.
pub fn score(prompts: &[(String, String)], e: &Embeddings) -> Scores {
    let mut metrics = BTreeMap::new();
    let all = |groups: &Vec<Vec<Embedding>>| groups.iter().flatten().cloned().collect::<Vec<_>>();
    if let (Some(real), Some(generated)) = (&e.dino_real, &e.dino_generated) {
        metrics.extend(mean_pairwise(&all(generated), real).map(|v| ("eval/dino".to_string(), v)));
        metrics.extend(diversity(generated).map(|v| ("eval/div".to_string(), v)));
    }
    if let (Some(real), Some(class)) = (&e.dino_real, &e.dino_class) {
        metrics.extend(mean_pairwise(class, real).map(|v| ("eval/pres".to_string(), v)));
    }
    if let (Some(real), Some(generated)) = (&e.clip_real, &e.clip_generated) {
        metrics.extend(mean_pairwise(&all(generated), real).map(|v| ("eval/clip_i".to_string(), v)));
    }
    // CLIP-T: each image with its own prompt's text.
    let clip_t_pairs = |groups: &Vec<Vec<Embedding>>, texts: &Vec<Embedding>| {
        let images = all(groups);
        let matched: Vec<Embedding> =
            groups.iter().zip(texts).flat_map(|(g, t)| std::iter::repeat_n(t.clone(), g.len())).collect();
        mean_matched(&images, &matched)
    };
    if let (Some(generated), Some(texts)) = (&e.clip_generated, &e.clip_text) {
        metrics.extend(clip_t_pairs(generated, texts).map(|v| ("eval/clip_t".to_string(), v)));
    }
    let per_prompt = prompts
        .iter()
        .enumerate()
        .map(|(i, (prompt, text))| PromptScore {
            prompt: prompt.clone(),
            text: text.clone(),
            dino: e.dino_real.as_ref().zip(e.dino_generated.as_ref()).and_then(|(r, g)| mean_pairwise(&g[i], r)),
            clip_i: e.clip_real.as_ref().zip(e.clip_generated.as_ref()).and_then(|(r, g)| mean_pairwise(&g[i], r)),
            clip_t: e
                .clip_generated
                .as_ref()
                .zip(e.clip_text.as_ref())
                .and_then(|(g, t)| mean_matched(&g[i], &vec![t[i].clone(); g[i].len()])),
        })
        .collect();
    Scores { metrics, per_prompt }
}

impl Scores {
    /// The per-prompt table as Markdown (TensorBoard's text tab and W&B render it).
    pub fn table(&self) -> String {
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        let mut out = String::from("| prompt | DINO | CLIP-I | CLIP-T |\n|---|---|---|---|\n");
        for p in &self.per_prompt {
            out.push_str(&format!("| {} | {} | {} | {} |\n", p.prompt, cell(p.dino), cell(p.clip_i), cell(p.clip_t)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_order_and_grouping_change_nothing_but_the_table_order() {
        let mut rng = crate::rng::Rng::new(9);
        let mut emb = |n: usize| (0..n).map(|_| rng.normals_f32(8)).collect::<Vec<_>>();
        let (real_d, real_c) = (emb(3), emb(3));
        let groups_d = vec![emb(2), emb(2)];
        let groups_c = vec![emb(2), emb(2)];
        let texts = emb(2);
        let e = Embeddings {
            dino_real: Some(real_d.clone()),
            clip_real: Some(real_c.clone()),
            dino_generated: Some(groups_d.clone()),
            clip_generated: Some(groups_c.clone()),
            clip_text: Some(texts.clone()),
            dino_class: Some(emb(2)),
        };
        let prompts = vec![("a".to_string(), "A".to_string()), ("b".to_string(), "B".to_string())];
        let s = score(&prompts, &e);
        let swapped = Embeddings {
            dino_generated: Some(vec![groups_d[1].clone(), groups_d[0].clone()]),
            clip_generated: Some(vec![groups_c[1].clone(), groups_c[0].clone()]),
            clip_text: Some(vec![texts[1].clone(), texts[0].clone()]),
            ..e.clone()
        };
        let t = score(&[prompts[1].clone(), prompts[0].clone()], &swapped);
        for (k, v) in &s.metrics {
            assert!((v - t.metrics[k]).abs() < 1e-12, "{k}: {v} vs {}", t.metrics[k]);
        }
        assert_eq!(s.metrics.len(), 5, "{:?}", s.metrics);
        assert_eq!(t.per_prompt[0].clip_t, s.per_prompt[1].clip_t);
        assert!(s.table().contains("| a | "));
        let without_clip = Embeddings { clip_real: None, clip_generated: None, clip_text: None, ..e };
        let keys: Vec<String> = score(&prompts, &without_clip).metrics.into_keys().collect();
        assert_eq!(keys, ["eval/dino", "eval/div", "eval/pres"]);
    }
}
