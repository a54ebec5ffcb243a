//! The DreamBooth paper's metrics (Ruiz et al. 2022, section 4.1) over embeddings, each a mean
//! of cosine similarities:
//!
//! - DINO: generated images against real instance images, every pair, DINO ViT CLS embeddings;
//! - CLIP-I: the same pairs with CLIP image embeddings;
//! - CLIP-T: each generated image against its prompt's CLIP text embedding (the prompt with
//!   the subject replaced by its class noun);
//! - PRES: images generated from the class prompt alone against the real instance images, DINO
//!   embeddings (lower: the class prior survived);
//! - DIV: 1 minus the mean DINO similarity of the distinct pairs of images generated from the
//!   same prompt, averaged over prompts (the paper's DIV uses LPIPS, which needs a network
//!   download: this is the same idea with the DINO model already at hand).
//!
//! Similarities are accumulated in f64 from f32 embeddings, so the order of images or prompts
//! changes a metric only by rounding.

/// An embedding: one row of a model's output.
pub type Embedding = Vec<f32>;

/// Cosine similarity of `a` and `b` (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na.sqrt() * nb.sqrt()) }
}

/// Mean cosine similarity over every pair (one of `a`, one of `b`); `None` when either is empty.
pub fn mean_pairwise(a: &[Embedding], b: &[Embedding]) -> Option<f64> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let total: f64 = a.iter().flat_map(|x| b.iter().map(move |y| cosine(x, y))).sum();
    Some(total / (a.len() * b.len()) as f64)
}

/// Mean cosine similarity of matched pairs (`a[i]` with `b[i]`); `None` when empty.
pub fn mean_matched(a: &[Embedding], b: &[Embedding]) -> Option<f64> {
    if a.is_empty() || a.len() != b.len() {
        return None;
    }
    Some(a.iter().zip(b).map(|(x, y)| cosine(x, y)).sum::<f64>() / a.len() as f64)
}

/// DIV: 1 minus the mean similarity of the distinct pairs within each group (images of one
/// prompt), averaged over the groups that have a pair; `None` when none has.
pub fn diversity(groups: &[Vec<Embedding>]) -> Option<f64> {
    let per_group: Vec<f64> = groups
        .iter()
        .filter(|g| g.len() >= 2)
        .map(|g| {
            let pairs: Vec<f64> = (0..g.len())
                .flat_map(|i| (i + 1..g.len()).map(move |j| (i, j)))
                .map(|(i, j)| cosine(&g[i], &g[j]))
                .collect();
            1.0 - pairs.iter().sum::<f64>() / pairs.len() as f64
        })
        .collect();
    (!per_group.is_empty()).then(|| per_group.iter().sum::<f64>() / per_group.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(seed: u64, n: usize) -> Vec<Embedding> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n).map(|_| rng.normals_f32(16)).collect()
    }

    #[test]
    fn identical_sets_score_one_and_order_does_not_matter() {
        let a = set(1, 1);
        assert!((mean_pairwise(&a, &a).unwrap() - 1.0).abs() < 1e-12);
        let repeated = vec![a[0].clone(); 3];
        assert!((mean_pairwise(&repeated, &a).unwrap() - 1.0).abs() < 1e-12);
        let (g, r) = (set(2, 5), set(3, 4));
        let mut shuffled = g.clone();
        shuffled.reverse();
        shuffled.swap(0, 2);
        let (x, y) = (mean_pairwise(&g, &r).unwrap(), mean_pairwise(&shuffled, &r).unwrap());
        assert!((x - y).abs() < 1e-12, "{x} vs {y}");
        assert!(mean_pairwise(&g, &[]).is_none());
    }

    #[test]
    fn diversity_is_zero_for_copies_and_ignores_single_images() {
        let one = set(4, 1);
        assert_eq!(diversity(&[vec![one[0].clone(); 3]]), Some(0.0));
        assert_eq!(diversity(std::slice::from_ref(&one)), None, "a single image has no pair");
        let d = diversity(&[set(5, 4), one]).unwrap();
        assert!(d > 0.0 && d < 2.0, "{d}");
        assert!((cosine(&[1.0, 0.0], &[-1.0, 0.0]) + 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
