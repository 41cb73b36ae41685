//! Attention groups of one forward step. One-token sequences (decodes) form one group whose
//! keys are padded to the longest of them, so a layer's decode attention is a few batched
//! kernels whatever the batch size; each multi-token sequence (a prefill chunk) is a group of
//! its own. A decode group is split where its gathered keys (members x padded width x the
//! larger of kv_dim and the heads' scores per key) would pass a limit: that bounds the memory
//! one layer's attention takes, and keeps every tensor under the 32-bit element counts of
//! candle's CUDA gather and softmax kernels. Groups are fixed for the step, so a source layer's
//! probabilities have the same padded width as the sharing layers that reuse them.

use candle_core::{Device, Tensor};

use crate::error::Result;

/// One group: `slots` index the step's depth-ordered sequences; every member has `t` new tokens.
#[derive(Debug)]
pub(super) struct AttentionGroup {
    pub slots: Vec<usize>,
    pub t: usize,
    /// Keys attended by the longest member (its cached plus new positions), rounded up to whole
    /// blocks (keys are gathered block by block).
    pub width: usize,
    /// `(members, 1, 1, t, width)`: 0 where a query may see a key, -inf elsewhere (the future and
    /// the padding past a member's own length).
    pub mask: Tensor,
    /// Rows of the members' new tokens in the step's row order (one per member when `t` is 1).
    pub rows: Vec<u32>,
}

/// What grouping needs of one depth-ordered sequence.
#[derive(Debug, Clone, Copy)]
pub(super) struct Member {
    /// First row of its new tokens in the step.
    pub offset: usize,
    /// Positions cached before this step.
    pub start: usize,
    pub t: usize,
}

/// How big one decode group may get.
#[derive(Debug, Clone, Copy)]
pub(super) struct AttentionGroupLimit {
    /// Values per member and key position: the larger of kv_dim (gathered K or V) and the
    /// number of query heads (scores).
    pub values_per_key: usize,
    /// Most values a group's largest tensor may hold.
    pub max_values: usize,
}

/// Groups in the order their outputs are concatenated. Members of a group stay in ascending
/// slot (depth) order, so its computing members come first.
pub(super) fn plan_groups(
    members: &[Member],
    block_size: usize,
    limit: AttentionGroupLimit,
    device: &Device,
) -> Result<Vec<AttentionGroup>> {
    let mut groups = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut width = 0;
    for slot in (0..members.len()).filter(|&s| members[s].t == 1) {
        let own = (members[slot].start + 1).div_ceil(block_size) * block_size;
        let wider = width.max(own);
        let values = (current.len() + 1) * wider * limit.values_per_key;
        if !current.is_empty() && values > limit.max_values {
            groups.push(group(
                members,
                std::mem::take(&mut current),
                block_size,
                device,
            )?);
            width = own;
        } else {
            width = wider;
        }
        current.push(slot);
    }
    if !current.is_empty() {
        groups.push(group(members, current, block_size, device)?);
    }
    for slot in (0..members.len()).filter(|&s| members[s].t > 1) {
        groups.push(group(members, vec![slot], block_size, device)?);
    }
    Ok(groups)
}

fn group(
    members: &[Member],
    slots: Vec<usize>,
    block_size: usize,
    device: &Device,
) -> Result<AttentionGroup> {
    let t = members[slots[0]].t;
    let longest = slots
        .iter()
        .map(|&s| members[s].start + members[s].t)
        .max()
        .unwrap_or(0);
    let width = longest.div_ceil(block_size) * block_size;
    let mut mask = Vec::with_capacity(slots.len() * t * width);
    let mut rows = Vec::with_capacity(slots.len() * t);
    for &s in &slots {
        let m = members[s];
        for r in 0..t {
            let visible = m.start + r + 1;
            mask.extend((0..width).map(|j| if j < visible { 0f32 } else { f32::NEG_INFINITY }));
            rows.push((m.offset + r) as u32);
        }
    }
    let mask = Tensor::from_vec(mask, (slots.len(), 1, 1, t, width), device)?;
    Ok(AttentionGroup {
        slots,
        t,
        width,
        mask,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNLIMITED: AttentionGroupLimit = AttentionGroupLimit {
        values_per_key: 1,
        max_values: usize::MAX,
    };

    #[test]
    fn decodes_share_a_group_and_prefills_stand_alone() {
        let members = [
            Member {
                offset: 0,
                start: 5,
                t: 1,
            },
            Member {
                offset: 1,
                start: 0,
                t: 3,
            },
            Member {
                offset: 4,
                start: 2,
                t: 1,
            },
        ];
        let groups = plan_groups(&members, 4, UNLIMITED, &Device::Cpu).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(
            (groups[0].slots.clone(), groups[0].t, groups[0].width),
            (vec![0, 2], 1, 8)
        );
        assert_eq!(groups[0].rows, vec![0, 4]);
        let mask = groups[0]
            .mask
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let seen = |row: &[f32]| row.iter().filter(|v| v.is_finite()).count();
        assert_eq!((seen(&mask[..8]), seen(&mask[8..])), (6, 3));
        assert_eq!(
            (groups[1].slots.clone(), groups[1].t, groups[1].width),
            (vec![1], 3, 4)
        );
        assert_eq!(groups[1].rows, vec![1, 2, 3]);
        let causal = groups[1]
            .mask
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let per_query: Vec<usize> = causal.chunks(4).map(seen).collect();
        assert_eq!(per_query, vec![1, 2, 3]);
    }

    #[test]
    fn decode_groups_split_where_their_keys_would_pass_the_limit() {
        // Decodes of 3, 9, 2, 2, 30 and 1 cached positions, with a prefill chunk in between.
        let starts = [3, 9, 2, 2, 30, 1];
        let mut members: Vec<Member> = starts
            .iter()
            .enumerate()
            .map(|(i, &start)| Member {
                offset: i,
                start,
                t: 1,
            })
            .collect();
        members.insert(
            2,
            Member {
                offset: 9,
                start: 0,
                t: 4,
            },
        );
        let limit = AttentionGroupLimit {
            values_per_key: 2,
            max_values: 48,
        };
        let groups = plan_groups(&members, 4, limit, &Device::Cpu).unwrap();
        let decode_groups: Vec<(Vec<usize>, usize)> = groups
            .iter()
            .filter(|g| g.t == 1)
            .map(|g| (g.slots.clone(), g.width))
            .collect();
        // Widths (rounded to 4): 4, 12, -, 4, 4, 32, 4. [0, 1, 3] would be 3 x 12 x 2 = 72 > 48.
        assert_eq!(
            decode_groups,
            vec![
                (vec![0, 1], 12),
                (vec![3, 4], 4),
                (vec![5], 32),
                (vec![6], 4)
            ]
        );
        for g in groups.iter().filter(|g| g.t == 1 && g.slots.len() > 1) {
            assert!(g.slots.len() * g.width * limit.values_per_key <= limit.max_values);
        }
        let prefills: Vec<Vec<usize>> = groups
            .iter()
            .filter(|g| g.t > 1)
            .map(|g| g.slots.clone())
            .collect();
        assert_eq!(prefills, vec![vec![2]]);
    }
}
