//! One forward step on tensors: the same EPAS computation as the host path, as candle ops.

use candle_core::{DType, Device, Tensor};
use candle_nn::ops::{rms_norm, silu, softmax_last_dim};
use candle_nn::rotary_emb::rope;

use super::attention_groups::{plan_groups, AttentionGroup, AttentionGroupLimit, Member};
use super::{DeviceLayer, DeviceModel};
use crate::error::{ModelError, Result};
use crate::kv_cache::ArenaKv;
use crate::model::{
    computing_prefix, depth_order, split_rows, Logits, SequenceStep, SharedAttention,
};
use crate::paged::arena::scatter_rows;

/// The model's shape and options for one forward.
pub(crate) struct DeviceForward<'a> {
    pub model: &'a DeviceModel,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub eps: f32,
    pub shared: SharedAttention,
    /// False in `no-sharing` builds: every layer computes Q/K.
    pub sharing: bool,
    /// Most values one decode group's gathered keys (or scores) may hold; larger groups split.
    pub max_group_values: usize,
}

/// candle's CUDA gather, copy and softmax kernels count elements in 32-bit integers.
const MAX_KERNEL_ELEMENTS: usize = i32::MAX as usize;

/// What a source layer leaves for one sequence's sharing layers.
struct Source {
    /// Scaled queries `(1, kv_heads, group * t, head_dim)`, for recomputing.
    q: Tensor,
    /// `(1, kv_heads, group * t, width)`; `None` when over the size limit (then recomputed).
    probs: Option<Tensor>,
}

/// The step's sequences in depth order and their arenas.
struct Batch<'s> {
    order: Vec<usize>,
    members: Vec<Member>,
    arenas: Vec<&'s dyn ArenaKv>,
    rows: usize,
}

impl DeviceForward<'_> {
    /// Runs a validated step whose room is reserved; returns host logits like the host path.
    pub(crate) fn run(&self, steps: &[SequenceStep<'_>]) -> Result<Vec<Option<Tensor>>> {
        let m = self.model;
        let device = &m.device;
        let batch = self.batch(steps)?;
        let arena = batch.arenas[0].arena();
        let block_size = batch.arenas[0].block_size();
        let (_, kv_dim) = self.dims();
        let limit = AttentionGroupLimit {
            values_per_key: kv_dim.max(self.num_heads),
            max_values: self.max_group_values.min(MAX_KERNEL_ELEMENTS),
        };
        let groups = plan_groups(&batch.members, block_size, limit, device)?;
        let n = batch.rows;
        let computing: Vec<usize> = (0..m.layers.len())
            .map(|l| computing_prefix(steps, &batch.order, l, self.sharing))
            .collect();
        // Every index of the step (tokens, positions, arena rows and blocks of every layer) goes
        // to the device in one copy: a copy per layer would wait for the layer before it.
        let mut index = StepIndex::default();
        let ids = index.section(|out| {
            for &i in &batch.order {
                out.extend_from_slice(steps[i].tokens);
            }
            Ok(())
        })?;
        let positions = index.section(|out| {
            for mb in &batch.members {
                out.extend((mb.start..mb.start + mb.t).map(|p| p as u32));
            }
            Ok(())
        })?;
        let group_rows = groups
            .iter()
            .map(|g| {
                index.section(|out| {
                    out.extend_from_slice(&g.rows);
                    Ok(())
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let restore = output_order(&groups, n)
            .map(|order| {
                index.section(|out| {
                    out.extend(order);
                    Ok(())
                })
            })
            .transpose()?;
        let layer_index = computing
            .iter()
            .enumerate()
            .map(|(l, &c)| self.layer_index(&mut index, &batch, &groups, l, c, block_size))
            .collect::<Result<Vec<_>>>()?;
        let index = index.upload(device)?;
        let group_rows = group_rows
            .into_iter()
            .map(|s| index.get(s))
            .collect::<Result<Vec<_>>>()?;
        let restore = restore.map(|s| index.get(s)).transpose()?;

        let half = self.head_dim / 2;
        let positions = index.get(positions)?;
        let cos = m.cos.index_select(&positions, 0)?.reshape((n, 1, half))?;
        let sin = m.sin.index_select(&positions, 0)?.reshape((n, 1, half))?;
        let mut x = m.embed.index_select(&index.get(ids)?, 0)?;
        let mut sources: Vec<Option<Source>> = (0..steps.len()).map(|_| None).collect();

        for (l, layer) in m.layers.iter().enumerate() {
            let at = &layer_index[l];
            let computing = computing[l];
            let n_compute = batch.members.get(computing).map_or(n, |mb| mb.offset);
            let h = rms_norm(&x, &layer.attn_norm, self.eps)?;
            let v = layer.wv.apply(&h)?;
            scatter_rows(arena, &index.get(at.new_values)?, &v)?;
            let q = if n_compute > 0 {
                let qk = layer.wqk.apply(&h.narrow(0, 0, n_compute)?)?;
                let (q_dim, kv_dim) = self.dims();
                let q = self.rotate(&qk.narrow(1, 0, q_dim)?, &cos, &sin, self.num_heads)?;
                let k =
                    self.rotate(&qk.narrow(1, q_dim, kv_dim)?, &cos, &sin, self.num_kv_heads)?;
                scatter_rows(arena, &index.get(at.new_keys)?, &k)?;
                Some(q)
            } else {
                None
            };
            let layer_input = LayerInput {
                steps,
                batch: &batch,
                layer: l,
                computing,
                q: q.as_ref(),
                arena,
                block_size,
            };
            let keys = index.get_nonempty(at.key_blocks)?;
            let values = index.get(at.value_blocks)?;
            let blocks = (keys.as_ref(), &values);
            let attn = self.attend(&layer_input, &groups, &group_rows, blocks, &mut sources)?;
            let attn = match &restore {
                Some(order) => attn.index_select(order, 0)?,
                None => attn,
            };
            x = (x + layer.wo.apply(&attn)?)?;
            x = (&x + self.mlp(layer, &x)?)?;
        }
        self.logits(steps, &batch, &x)
    }

    fn dims(&self) -> (usize, usize) {
        (
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
        )
    }

    fn batch<'s>(&self, steps: &'s [SequenceStep<'_>]) -> Result<Batch<'s>> {
        let arenas = steps
            .iter()
            .map(|s| {
                s.cache.arena().ok_or_else(|| {
                    ModelError::Batch(
                        "the model runs on a device: its caches must come from a device block pool"
                            .into(),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if arenas.iter().any(|a| a.pool_id() != arenas[0].pool_id()) {
            return Err(ModelError::Batch(
                "the sequences of one device forward must share a block pool".into(),
            ));
        }
        let order = depth_order(steps, self.sharing);
        let mut members = Vec::with_capacity(order.len());
        let mut rows = 0;
        for &i in &order {
            let t = steps[i].tokens.len();
            members.push(Member {
                offset: rows,
                start: steps[i].cache.len(),
                t,
            });
            rows += t;
        }
        Ok(Batch {
            order,
            members,
            arenas,
            rows,
        })
    }

    /// One layer's indices: arena rows of the new V rows (every sequence) and K rows (the
    /// `computing` ones), and the arena blocks attention reads, group by group, each member's
    /// padded to the group's width with block 0 (masked out).
    fn layer_index(
        &self,
        index: &mut StepIndex,
        batch: &Batch<'_>,
        groups: &[AttentionGroup],
        l: usize,
        computing: usize,
        block_size: usize,
    ) -> Result<LayerIndex> {
        let new_rows = |index: &mut StepIndex, keys: bool, count: usize| {
            index.section(|out| {
                for (&i, mb) in batch.order.iter().zip(&batch.members).take(count) {
                    batch.arenas[i].arena_rows(l, keys, mb.start..mb.start + mb.t, out)?;
                }
                Ok(())
            })
        };
        let new_values = new_rows(index, false, batch.order.len())?;
        let new_keys = new_rows(index, true, computing)?;
        let blocks = |index: &mut StepIndex, keys: bool| {
            index.section(|out| {
                for g in groups {
                    let width = g.width / block_size;
                    for &s in g.slots.iter().filter(|&&s| !keys || s < computing) {
                        let mb = batch.members[s];
                        let held = (mb.start + mb.t).div_ceil(block_size);
                        batch.arenas[batch.order[s]].arena_blocks(l, keys, held, out)?;
                        out.resize(out.len() + width - held, 0);
                    }
                }
                Ok(())
            })
        };
        Ok(LayerIndex {
            new_values,
            new_keys,
            key_blocks: blocks(index, true)?,
            value_blocks: blocks(index, false)?,
        })
    }

    /// RoPE on `(rows, heads * head_dim)` rows, each at its own position.
    fn rotate(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, heads: usize) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let x = x.contiguous()?.reshape((rows, heads, 1, self.head_dim))?;
        let out = rope(&x, &cos.narrow(0, 0, rows)?, &sin.narrow(0, 0, rows)?)?;
        Ok(out.reshape((rows, heads * self.head_dim))?)
    }

    fn mlp(&self, layer: &DeviceLayer, x: &Tensor) -> Result<Tensor> {
        let ffn = self.model.ffn;
        let h = rms_norm(x, &layer.mlp_norm, self.eps)?;
        let gate_up = layer.gate_up.apply(&h)?;
        let act = (silu(&gate_up.narrow(1, 0, ffn)?)? * gate_up.narrow(1, ffn, ffn)?)?;
        layer.down.apply(&act)
    }

    /// Attention of every group at one layer, rows concatenated group after group. `blocks`:
    /// the arena blocks of the computing members' keys and of every member's values.
    fn attend(
        &self,
        input: &LayerInput<'_, '_>,
        groups: &[AttentionGroup],
        group_rows: &[Tensor],
        blocks: (Option<&Tensor>, &Tensor),
        sources: &mut [Option<Source>],
    ) -> Result<Tensor> {
        let (batch, l, computing) = (input.batch, input.layer, input.computing);
        let keys = blocks.0.map(|b| self.gather(input, b)).transpose()?;
        let values = self.gather(input, blocks.1)?;
        let (mut key_at, mut value_at) = (0, 0);
        let mut outs = Vec::with_capacity(groups.len());
        for (g, rows) in groups.iter().zip(group_rows) {
            let members = g.slots.len();
            let c = g.slots.iter().take_while(|&&s| s < computing).count();
            let v = self.heads_major(
                &values.narrow(0, value_at, members * g.width)?,
                members,
                self.model.dtype,
            )?;
            value_at += members * g.width;
            let mut parts = Vec::with_capacity(2);
            if c > 0 {
                let keys = keys
                    .as_ref()
                    .ok_or_else(|| ModelError::Batch("computing rows without keys".into()))?;
                let k = self.heads_major(&keys.narrow(0, key_at, c * g.width)?, c, DType::F32)?;
                key_at += c * g.width;
                let q = self.group_queries(input, g, rows, c)?;
                let p = self.probs(&q, &k, &g.mask.narrow(0, 0, c)?)?;
                for (b, &s) in g.slots[..c].iter().enumerate() {
                    let i = batch.order[s];
                    if self.sharing && input.steps[i].cache.plan().source_layer() == Some(l) {
                        sources[i] = Some(Source {
                            q: q.narrow(0, b, 1)?,
                            probs: self.keeps(g).then(|| p.narrow(0, b, 1)).transpose()?,
                        });
                    }
                }
                parts.push(p.matmul(&v.narrow(0, 0, c)?)?);
            }
            if c < members {
                let probs = g.slots[c..]
                    .iter()
                    .enumerate()
                    .map(|(j, &s)| self.reused_probs(input, g, s, c + j, sources))
                    .collect::<Result<Vec<_>>>()?;
                let p = Tensor::cat(&probs, 0)?;
                parts.push(p.matmul(&v.narrow(0, c, members - c)?)?);
            }
            let out = Tensor::cat(&parts, 0)?;
            let (q_dim, _) = self.dims();
            outs.push(
                out.reshape((members, self.num_heads, g.t, self.head_dim))?
                    .transpose(1, 2)?
                    .reshape((members * g.t, q_dim))?,
            );
        }
        Ok(Tensor::cat(&outs, 0)?)
    }

    /// Whether a source layer keeps its probabilities for this group's members.
    fn keeps(&self, g: &AttentionGroup) -> bool {
        match self.shared {
            SharedAttention::ReuseProbabilities { max_probs_floats } => {
                self.num_heads * g.t * g.width <= max_probs_floats
            }
            SharedAttention::Recompute => false,
        }
    }

    /// Probabilities of a sharing member: its source layer's, or recomputed from the source
    /// layer's queries and keys.
    fn reused_probs(
        &self,
        input: &LayerInput<'_, '_>,
        g: &AttentionGroup,
        slot: usize,
        member: usize,
        sources: &[Option<Source>],
    ) -> Result<Tensor> {
        let i = input.batch.order[slot];
        let plan = input.steps[i].cache.plan();
        let src = sources[i].as_ref().ok_or_else(|| {
            ModelError::Batch(format!(
                "layer {} shares but its source did not run",
                input.layer
            ))
        })?;
        if let Some(p) = &src.probs {
            return Ok(p.clone());
        }
        let source_layer = plan.source_layer().unwrap_or(0);
        let mb = input.batch.members[slot];
        let held = (mb.start + mb.t).div_ceil(input.block_size);
        let mut blocks = Vec::new();
        input.batch.arenas[i].arena_blocks(source_layer, true, held, &mut blocks)?;
        blocks.resize(g.width / input.block_size, 0);
        let count = blocks.len();
        let blocks = Tensor::from_vec(blocks, count, &self.model.device)?;
        let keys = self.gather(input, &blocks)?;
        let k = self.heads_major(&keys, 1, DType::F32)?;
        self.probs(&src.q, &k, &g.mask.narrow(0, member, 1)?)
    }

    /// Arena blocks (a u32 tensor) as `(blocks * block_size, kv_dim)` rows.
    fn gather(&self, input: &LayerInput<'_, '_>, blocks: &Tensor) -> Result<Tensor> {
        let (_, kv_dim) = self.dims();
        let count = blocks.dim(0)?;
        if count * input.block_size * kv_dim > MAX_KERNEL_ELEMENTS {
            return Err(ModelError::Batch(format!(
                "one sequence's keys in a layer ({} values) exceed what one gather kernel \
                 indexes",
                count * input.block_size * kv_dim
            )));
        }
        let arena_blocks = input.arena.dim(0)? / input.block_size;
        let by_block = input
            .arena
            .reshape((arena_blocks, input.block_size * kv_dim))?;
        Ok(by_block
            .index_select(blocks, 0)?
            .reshape((count * input.block_size, kv_dim))?)
    }

    /// `(members * width, kv_dim)` rows as `(members, kv_heads, width, head_dim)` in `dtype`.
    fn heads_major(&self, rows: &Tensor, members: usize, dtype: DType) -> Result<Tensor> {
        let width = rows.dim(0)? / members;
        Ok(rows
            .reshape((members, width, self.num_kv_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?
            .to_dtype(dtype)?)
    }

    /// Scaled queries of the first `c` members, `(c, kv_heads, group * t, head_dim)`: the heads
    /// that share a K/V head are stacked along the query axis.
    fn group_queries(
        &self,
        input: &LayerInput<'_, '_>,
        g: &AttentionGroup,
        rows: &Tensor,
        c: usize,
    ) -> Result<Tensor> {
        let q = input
            .q
            .ok_or_else(|| ModelError::Batch("computing rows without queries".into()))?;
        let q = if g.t == 1 {
            q.index_select(&rows.narrow(0, 0, c)?, 0)?
        } else {
            q.narrow(0, g.rows[0] as usize, g.t)?
        };
        let per_group = self.num_heads / self.num_kv_heads;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        Ok((q
            .reshape((c, g.t, self.num_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((c, self.num_kv_heads, per_group * g.t, self.head_dim))?
            * scale)?)
    }

    /// `softmax(q k^T + mask)` in f32, returned in the compute dtype; `k` in f32.
    fn probs(&self, q: &Tensor, k: &Tensor, mask: &Tensor) -> Result<Tensor> {
        // Scores in f32 (k arrives in f32): rounded to f16/bf16 they would keep 3 digits.
        let scores = q.to_dtype(DType::F32)?.matmul(&k.t()?)?;
        if scores.elem_count() > MAX_KERNEL_ELEMENTS {
            // candle's CUDA softmax indexes rows with 32-bit ints.
            return Err(ModelError::Batch(format!(
                "attention scores of {} values exceed what one softmax kernel indexes; use \
                 smaller prefill chunks",
                scores.elem_count()
            )));
        }
        let (b, kv_heads, stacked, width) = scores.dims4()?;
        let t = mask.dim(3)?;
        let masked = scores
            .reshape((b, kv_heads, stacked / t, t, width))?
            .broadcast_add(mask)?;
        Ok(softmax_last_dim(&masked)?
            .reshape((b, kv_heads, stacked, width))?
            .to_dtype(self.model.dtype)?)
    }

    /// Final norm and LM head over the rows whose logits were asked for; host f32 tensors.
    fn logits(
        &self,
        steps: &[SequenceStep<'_>],
        batch: &Batch<'_>,
        x: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let mut slot_of = vec![0; steps.len()];
        for (slot, &i) in batch.order.iter().enumerate() {
            slot_of[i] = slot;
        }
        let mut rows: Vec<u32> = Vec::new();
        let mut ranges = vec![None; steps.len()];
        for (i, step) in steps.iter().enumerate() {
            let mb = batch.members[slot_of[i]];
            let wanted = match step.logits {
                Logits::Skip => continue,
                Logits::Last => (mb.offset + mb.t - 1)..(mb.offset + mb.t),
                Logits::All => mb.offset..(mb.offset + mb.t),
            };
            ranges[i] = Some((rows.len(), wanted.len()));
            rows.extend(wanted.map(|r| r as u32));
        }
        if rows.is_empty() {
            return Ok(vec![None; steps.len()]);
        }
        let count = rows.len();
        let m = self.model;
        let picked = x.index_select(&Tensor::from_vec(rows, count, &m.device)?, 0)?;
        let normed = rms_norm(&picked, &m.norm, self.eps)?;
        let logits = m
            .lm_head
            .apply(&normed)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?;
        split_rows(&logits, ranges)
    }
}

/// What every group's attention at one layer reads.
struct LayerInput<'a, 's> {
    steps: &'a [SequenceStep<'s>],
    batch: &'a Batch<'a>,
    layer: usize,
    computing: usize,
    q: Option<&'a Tensor>,
    arena: &'a Tensor,
    block_size: usize,
}

/// For each step row, its row in the groups' concatenated output; `None` when the same.
fn output_order(groups: &[AttentionGroup], rows: usize) -> Option<Vec<u32>> {
    let mut at = vec![0u32; rows];
    let mut k = 0u32;
    for g in groups {
        for &r in &g.rows {
            at[r as usize] = k;
            k += 1;
        }
    }
    if at.iter().enumerate().all(|(r, &k)| r as u32 == k) {
        return None;
    }
    Some(at)
}

/// A run of a step's indices.
#[derive(Debug, Clone, Copy)]
struct Section {
    start: usize,
    len: usize,
}

/// The sections of one layer.
struct LayerIndex {
    new_values: Section,
    new_keys: Section,
    key_blocks: Section,
    value_blocks: Section,
}

/// Every u32 index of a step, built on the host and copied to the device at once.
#[derive(Default)]
struct StepIndex {
    data: Vec<u32>,
}

impl StepIndex {
    fn section(&mut self, fill: impl FnOnce(&mut Vec<u32>) -> Result<()>) -> Result<Section> {
        let start = self.data.len();
        fill(&mut self.data)?;
        Ok(Section {
            start,
            len: self.data.len() - start,
        })
    }

    fn upload(self, device: &Device) -> Result<DeviceIndex> {
        let len = self.data.len();
        Ok(DeviceIndex(Tensor::from_vec(self.data, len, device)?))
    }
}

/// The step's indices on the device; sections are views of one tensor.
struct DeviceIndex(Tensor);

impl DeviceIndex {
    fn get(&self, s: Section) -> Result<Tensor> {
        Ok(self.0.narrow(0, s.start, s.len)?)
    }

    fn get_nonempty(&self, s: Section) -> Result<Option<Tensor>> {
        (s.len > 0).then(|| self.get(s)).transpose()
    }
}
