//! "Did you mean" suggestions for misspelt keys and names.

/// The candidate closest to `input`, when it is close enough to be a likely typo.
///
/// Dotted keys are compared whole and by their last segment, so `train.learnin_rate`,
/// `learning_rate` (section forgotten) and `train.lerning_rate` all suggest
/// `train.learning_rate`.
pub fn suggest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let last = |s: &'a str| s.rsplit('.').next().unwrap_or(s);
    let input_last = input.rsplit('.').next().unwrap_or(input);
    candidates
        .into_iter()
        .map(|c| {
            let whole = strsim::normalized_damerau_levenshtein(input, c);
            let tail = strsim::normalized_damerau_levenshtein(input_last, last(c));
            (whole.max(tail * 0.95), c)
        })
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::suggest;

    const KEYS: [&str; 4] = ["train.learning_rate", "train.epochs", "train.prior_loss_weight", "seed"];

    #[test]
    fn typos_and_forgotten_sections() {
        assert_eq!(suggest("train.learnin_rate", KEYS).as_deref(), Some("train.learning_rate"));
        assert_eq!(suggest("learning_rate", KEYS).as_deref(), Some("train.learning_rate"));
        assert_eq!(suggest("train.epoch", KEYS).as_deref(), Some("train.epochs"));
    }

    #[test]
    fn nothing_close_gives_none() {
        assert_eq!(suggest("banana", KEYS), None);
    }
}
