//! A sequence's output constraint as the sampler's [`TokenFilter`]: single tokens are checked
//! against the matcher's state directly, and the whole mask is computed only when the sampler
//! needs it (or was computed beside the forward).

use epas_model::TokenFilter;
use llguidance::toktrie::SimpleVob;
use llguidance::Matcher;

pub(crate) struct MatcherFilter<'a> {
    matcher: &'a mut Matcher,
    mask: Option<SimpleVob>,
}

impl<'a> MatcherFilter<'a> {
    /// A filter over `matcher`, with its mask when that was computed already.
    pub fn new(matcher: &'a mut Matcher, mask: Option<SimpleVob>) -> Self {
        Self { matcher, mask }
    }
}

impl TokenFilter for MatcherFilter<'_> {
    fn allows(&mut self, token: u32) -> Result<bool, String> {
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
        Ok(self.mask.as_ref().expect("computed above").as_slice())
    }
}
