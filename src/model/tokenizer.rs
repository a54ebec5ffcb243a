//! The CLIP tokenizer, from `tokenizer/tokenizer.json` (newer saves) or from `vocab.json` +
//! `merges.txt` (as hub repos of SD 1.x/2.x have it), built with Hugging Face's `tokenizers`
//! crate the way transformers' `CLIPTokenizerFast` converter builds it.

use std::path::Path;

use serde::Deserialize;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::error::{ModelError, Result};

const CLIP_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";

/// Tokenizes prompts into fixed-length id sequences for the text encoder.
pub struct ClipTokenizer {
    inner: Tokenizer,
    eos: u32,
    pad: u32,
    max_len: usize,
}

#[derive(Deserialize, Default)]
struct TokenizerConfig {
    #[serde(default)]
    model_max_length: Option<f64>,
    #[serde(default)]
    pad_token: Option<TokenText>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TokenText {
    Plain(String),
    Added { content: String },
}

impl ClipTokenizer {
    /// Loads the tokenizer of a diffusers `tokenizer/` folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let err = |message: String| ModelError::Tokenizer { path: dir.to_path_buf(), message };
        let json = dir.join("tokenizer.json");
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        let inner = if json.exists() {
            Tokenizer::from_file(&json).map_err(|e| err(e.to_string()))?
        } else if vocab.exists() && merges.exists() {
            clip_from_vocab(&vocab, &merges).map_err(|e| err(e.to_string()))?
        } else {
            return Err(ModelError::Layout {
                folder: dir.to_path_buf(),
                what: "tokenizer".into(),
                expected: "tokenizer.json, or vocab.json and merges.txt".into(),
            });
        };
        let config_path = dir.join("tokenizer_config.json");
        let config: TokenizerConfig =
            if config_path.exists() { super::json::read(&config_path)? } else { TokenizerConfig::default() };
        let id = |token: &str| inner.token_to_id(token).ok_or_else(|| err(format!("the vocabulary has no `{token}`")));
        let eos = id(EOS)?;
        let pad = match &config.pad_token {
            Some(TokenText::Plain(t) | TokenText::Added { content: t }) => id(t)?,
            None => eos,
        };
        let max_len = config.model_max_length.filter(|&m| (2.0..=4096.0).contains(&m)).map_or(77, |m| m as usize);
        Ok(Self { inner, eos, pad, max_len })
    }

    /// The sequence length every prompt is padded or truncated to.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// `[bos, tokens..., eos, pad...]` of length [`ClipTokenizer::max_len`]; a long prompt is
    /// truncated and still ends in `eos`.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(prompt, true)
            .map_err(|e| ModelError::Tokenizer { path: "tokenizer".into(), message: e.to_string() })?;
        let mut ids = encoding.get_ids().to_vec();
        if ids.len() > self.max_len {
            ids.truncate(self.max_len - 1);
            ids.push(self.eos);
        }
        ids.resize(self.max_len, self.pad);
        Ok(ids)
    }
}

fn clip_from_vocab(vocab: &Path, merges: &Path) -> tokenizers::Result<Tokenizer> {
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .end_of_word_suffix("</w>".into())
        .unk_token(EOS.into())
        .build()?;
    let mut tok = Tokenizer::new(bpe);
    let normalizer = NormalizerSequence::new(vec![
        NFC.into(),
        Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()), " ")?.into(),
        Lowercase.into(),
    ]);
    tok.with_normalizer(Some(normalizer))?;
    let split = Split::new(SplitPattern::Regex(CLIP_PATTERN.into()), SplitDelimiterBehavior::Removed, true)?;
    tok.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
        split.into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tok.with_decoder(Some(ByteLevel::default()));
    let (bos, eos) = (tok.token_to_id(BOS), tok.token_to_id(EOS));
    let (Some(bos), Some(eos)) = (bos, eos) else {
        return Err(format!("vocab.json lacks {BOS} or {EOS}").into());
    };
    let post = TemplateProcessing::builder()
        .try_single(format!("{BOS} $A {EOS}"))?
        .special_tokens(vec![(BOS, bos), (EOS, eos)])
        .build()?;
    tok.with_post_processor(Some(post));
    tok.add_special_tokens(vec![AddedToken::from(BOS, true), AddedToken::from(EOS, true)])?;
    Ok(tok)
}
