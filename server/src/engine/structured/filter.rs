//! A sequence's output constraint as the sampler's [`TokenFilter`]: single tokens are checked
//! against the matcher's state directly, and the whole mask is computed only when the sampler
//! needs it (or was computed beside the forward). Every end-of-sequence token of the model
//! (Llama 3.1 has three) ends the constraint where llguidance's one EOS token would.

use epas_model::TokenFilter;
use llguidance::toktrie::SimpleVob;
use llguidance::Matcher;

pub(crate) struct MatcherFilter<'a> {
    matcher: &'a mut Matcher,
    mask: Option<SimpleVob>,
    /// The model's end-of-sequence tokens; the first is llguidance's.
    eos: &'a [u32],
}

impl<'a> MatcherFilter<'a> {
    /// A filter over `matcher`, with its mask when that was computed already.
    pub fn new(matcher: &'a mut Matcher, mask: Option<SimpleVob>, eos: &'a [u32]) -> Self {
        Self { matcher, mask, eos }
    }
}

/// `token` as llguidance knows it: any end-of-sequence token becomes the first.
pub(crate) fn as_matcher_token(token: u32, eos: &[u32]) -> u32 {
    match eos.first() {
        Some(&first) if eos.contains(&token) => first,
        _ => token,
    }
}

impl TokenFilter for MatcherFilter<'_> {
    fn allows(&mut self, token: u32) -> Result<bool, String> {
        let token = as_matcher_token(token, self.eos);
        match &self.mask {
            Some(mask) => Ok(mask.is_allowed(token)),
            None => self
                .matcher
                .validate_tokens(&[token])
                .map(|valid| valid == 1)
                .map_err(|e| e.to_string()),
        }
    }

    fn allowed(&mut self) -> Result<&[u32], String> {
        if self.mask.is_none() {
            self.mask = Some(self.matcher.compute_mask().map_err(|e| e.to_string())?);
        }
        let mask = self.mask.as_mut().expect("computed above");
        if let Some(&first) = self.eos.first() {
            if mask.is_allowed(first) {
                for &t in &self.eos[1..] {
                    if (t as usize) < mask.len() {
                        mask.allow_token(t);
                    }
                }
            }
        }
        Ok(self.mask.as_ref().expect("computed above").as_slice())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::structured::{ConstraintCompiler, OutputConstraint};

    #[test]
    fn every_end_of_sequence_token_ends_the_constraint() {
        let (_, tokenizer) = epas_builtin::load_builtin(&candle_core::Device::Cpu).unwrap();
        let tokenizer = Arc::new(tokenizer);
        let vocab = tokenizer.inner().get_vocab_size(true);
        let compiler = ConstraintCompiler::new(tokenizer.clone(), vocab);
        let mut matcher = compiler
            .compile(&OutputConstraint::Regex("a+".into()))
            .unwrap();
        let a = tokenizer.encode("a").unwrap()[0];
        matcher.consume_token(a).unwrap();
        let first = tokenizer.eos_tokens[0];
        // A second end-of-sequence token, as Llama 3.1's <|eot_id|> beside <|end_of_text|>.
        let second = tokenizer.encode("b").unwrap()[0];
        let eos = [first, second];
        let mut filter = MatcherFilter::new(&mut matcher, None, &eos);
        assert!(filter.allows(second).unwrap());
        assert!(filter.allows(a).unwrap());
        let mask = filter.allowed().unwrap().to_vec();
        let bit = |t: u32| mask[t as usize / 32] >> (t % 32) & 1 == 1;
        assert!(bit(first) && bit(second) && bit(a));
        matcher
            .consume_token(as_matcher_token(second, &eos))
            .unwrap();
        assert!(matcher.is_stopped());
    }
}
