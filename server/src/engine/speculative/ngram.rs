//! Draft tokens without a draft model (prompt lookup): when the last `n` tokens of a sequence
//! also occur earlier in it, the tokens that followed that earlier occurrence are proposed.
//! Editing, quoting and code completion repeat long spans of their prompt, so such drafts are
//! often right; checking them costs little more than decoding one token.

/// Up to `k` tokens that followed the most recent earlier occurrence of the longest suffix of
/// `tokens` whose length is in `min_n..=max_n`. Empty when no such suffix recurs.
pub(crate) fn propose(tokens: &[u32], min_n: usize, max_n: usize, k: usize) -> Vec<u32> {
    let len = tokens.len();
    if k == 0 || min_n == 0 {
        return Vec::new();
    }
    for n in (min_n..=max_n.min(len.saturating_sub(1))).rev() {
        let suffix = &tokens[len - n..];
        // Candidate starts from the most recent one; the suffix itself (start len - n) excluded.
        for start in (0..len - n).rev() {
            if &tokens[start..start + n] == suffix {
                let from = start + n;
                let to = (from + k).min(len);
                return tokens[from..to].to_vec();
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_recurring_suffix_proposes_what_followed_it() {
        // "a b c d | x a b c" -> suffix "a b c" recurs at 0, followed by "d x".
        let t = [1, 2, 3, 4, 9, 1, 2, 3];
        assert_eq!(propose(&t, 1, 3, 2), vec![4, 9]);
        assert_eq!(propose(&t, 1, 3, 10), vec![4, 9, 1, 2, 3]);
        // Only 1-grams allowed: the last 3 recurs at position 2.
        assert_eq!(propose(&t, 1, 1, 1), vec![4]);
    }

    #[test]
    fn the_most_recent_occurrence_wins_and_nothing_recurring_proposes_nothing() {
        let t = [5, 6, 1, 5, 7, 5];
        assert_eq!(propose(&t, 1, 2, 1), vec![7]);
        assert!(propose(&[1, 2, 3, 4], 1, 3, 4).is_empty());
        assert!(
            propose(&[1, 2, 3, 1, 2], 3, 4, 4).is_empty(),
            "2-grams are below min_n"
        );
        assert!(propose(&[7], 1, 3, 4).is_empty());
        assert!(propose(&[7, 7], 1, 3, 0).is_empty());
        assert_eq!(propose(&[7, 7], 1, 3, 3), vec![7]);
    }
}
