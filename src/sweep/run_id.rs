//! Run ids and config hashes.
//!
//! A run's identity is the hash of its fully resolved configuration (canonical JSON, keys
//! sorted): the same settings are the same run, whichever sweep file produced them. Its id is
//! a readable name derived from that hash, `adjective-noun-hex` (`brisk-otter-3fa9c2`), so
//! ids are stable across machines and re-submissions.

use std::fmt;

/// xxh3-128 of a run's canonical configuration text. Not cryptographic: it identifies
/// configurations, it does not defend against crafted collisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigHash(pub u128);

impl ConfigHash {
    /// Hashes canonical configuration text.
    pub fn of(text: &str) -> Self {
        Self(xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
    }
}

impl fmt::Display for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

const ADJECTIVES: [&str; 64] = [
    "able", "amber", "azure", "bold", "brave", "brisk", "calm", "clever", "cosmic", "crisp", "daring", "deft", "eager",
    "early", "fancy", "fair", "fleet", "fond", "gentle", "glad", "golden", "grand", "happy", "hardy", "honest",
    "ivory", "jolly", "keen", "kind", "lively", "lucid", "lucky", "merry", "mellow", "misty", "modest", "noble",
    "olive", "plucky", "polite", "proud", "quick", "quiet", "rapid", "rosy", "royal", "rustic", "shiny", "silent",
    "silver", "sleek", "snowy", "solar", "steady", "stout", "sunny", "swift", "tidy", "urban", "vivid", "warm", "wise",
    "witty", "zesty",
];

const NOUNS: [&str; 64] = [
    "acorn", "badger", "beacon", "birch", "bison", "breeze", "brook", "canyon", "cedar", "comet", "coral", "crane",
    "delta", "dune", "eagle", "ember", "falcon", "fern", "fjord", "forest", "fox", "glade", "glacier", "grove",
    "harbor", "hawk", "heron", "island", "jaguar", "lagoon", "lark", "lynx", "maple", "meadow", "mesa", "moose",
    "nebula", "oak", "orca", "otter", "panda", "pebble", "pine", "prairie", "quartz", "raven", "reef", "ridge",
    "river", "robin", "sage", "salmon", "sequoia", "sparrow", "spruce", "summit", "thicket", "tiger", "tundra",
    "valley", "walrus", "willow", "wren", "zephyr",
];

/// Shortest hex suffix of a run id.
pub const MIN_HEX: usize = 6;

/// The run id for `hash` with `hex` hexadecimal digits of suffix (at least [`MIN_HEX`]; a
/// longer suffix resolves the rare clash of two configurations on the shorter id).
pub fn run_id(hash: ConfigHash, hex: usize) -> String {
    let h = hash.0;
    let adjective = ADJECTIVES[(h >> 122) as usize];
    let noun = NOUNS[((h >> 116) & 63) as usize];
    let hex = hex.clamp(MIN_HEX, 28);
    format!("{adjective}-{noun}-{:0width$x}", h & ((1u128 << (hex * 4)) - 1), width = hex)
}

/// Whether `text` has the shape of a run id (for friendlier errors on typos).
pub fn looks_like_run_id(text: &str) -> bool {
    let mut parts = text.splitn(3, '-');
    let (Some(a), Some(n), Some(h)) = (parts.next(), parts.next(), parts.next()) else { return false };
    ADJECTIVES.contains(&a)
        && NOUNS.contains(&n)
        && h.len() >= MIN_HEX
        && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_a_function_of_the_hash() {
        let h = ConfigHash::of("{\"seed\":0}");
        assert_eq!(run_id(h, 6), run_id(h, 6));
        assert_ne!(run_id(h, 6), run_id(ConfigHash::of("{\"seed\":1}"), 6));
        let id = run_id(h, 6);
        assert!(looks_like_run_id(&id), "{id}");
        assert_eq!(id.rsplit('-').next().unwrap().len(), 6);
        assert!(run_id(h, 8).starts_with(&id[..id.len() - 6]));
        assert!(!looks_like_run_id("lr_grid"));
    }

    #[test]
    fn word_lists_have_no_dashes_or_duplicates() {
        for list in [&ADJECTIVES, &NOUNS] {
            let mut sorted = list.to_vec();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 64);
            assert!(list.iter().all(|w| !w.contains('-')));
        }
    }
}
