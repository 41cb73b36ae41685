//! One sequence's block tables over the shared pool.

use std::sync::Arc;

use candle_core::Tensor;

use crate::error::{ModelError, Result};
use crate::kv_cache::{ArenaKv, KvCache, Rows};
use crate::sharing::SharingPlan;

use super::pool::{BlockPool, KvBlock};

/// The K and V blocks of every layer for one block index of a sequence (`keys` is `None` for
/// sharing layers).
#[derive(Clone)]
pub struct BlockSet {
    pub keys: Vec<Option<Arc<KvBlock>>>,
    pub values: Vec<Arc<KvBlock>>,
}

/// A sequence's KV cache in pool blocks.
pub struct PagedSequence {
    plan: SharingPlan,
    pool: BlockPool,
    len: usize,
    keys: Vec<Option<Vec<Arc<KvBlock>>>>,
    values: Vec<Vec<Arc<KvBlock>>>,
}

impl PagedSequence {
    pub fn new(pool: BlockPool, plan: SharingPlan) -> Self {
        let layers = plan.num_layers();
        Self {
            keys: (0..layers)
                .map(|l| plan.computes(l).then(Vec::new))
                .collect(),
            values: (0..layers).map(|_| Vec::new()).collect(),
            plan,
            pool,
            len: 0,
        }
    }

    /// A sequence whose first `prefix.len() * block_size` positions are already cached in
    /// shared, full blocks.
    pub fn with_prefix(pool: BlockPool, plan: SharingPlan, prefix: &[BlockSet]) -> Self {
        let mut seq = Self::new(pool, plan);
        for set in prefix {
            for (l, k) in set.keys.iter().enumerate() {
                if let (Some(dst), Some(k)) = (seq.keys[l].as_mut(), k) {
                    dst.push(k.clone());
                }
            }
            for (l, v) in set.values.iter().enumerate() {
                seq.values[l].push(v.clone());
            }
        }
        seq.len = prefix.len() * seq.pool.block_size();
        seq
    }

    /// Blocks a sequence under `plan` needs for `tokens` positions.
    pub fn blocks_for(plan: &SharingPlan, tokens: usize, block_size: usize) -> usize {
        let per_layer = tokens.div_ceil(block_size);
        per_layer * (2 * plan.num_layers() - plan.sharing_layers())
    }

    /// Blocks still to take from the pool to hold `tokens` more positions.
    pub fn blocks_needed(&self, tokens: usize) -> usize {
        let have = self.values.first().map_or(0, Vec::len);
        let want = (self.len + tokens).div_ceil(self.pool.block_size());
        want.saturating_sub(have) * (2 * self.plan.num_layers() - self.plan.sharing_layers())
    }

    /// Blocks this sequence holds (shared ones included).
    pub fn blocks_held(&self) -> usize {
        self.keys.iter().flatten().map(Vec::len).sum::<usize>()
            + self.values.iter().map(Vec::len).sum::<usize>()
    }

    /// Forgets every position from `len` on (rejected speculative tokens): blocks past the
    /// last one still used go back to the pool, reserved room included.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        self.len = len;
        let keep = len.div_ceil(self.pool.block_size());
        for list in self.keys.iter_mut().flatten() {
            list.truncate(keep);
        }
        for list in &mut self.values {
            list.truncate(keep);
        }
    }

    /// The full blocks (all `block_size` positions cached), for the prefix cache.
    pub fn full_blocks(&self) -> Vec<BlockSet> {
        let full = self.len / self.pool.block_size();
        (0..full)
            .map(|b| BlockSet {
                keys: self
                    .keys
                    .iter()
                    .map(|k| k.as_ref().map(|k| k[b].clone()))
                    .collect(),
                values: self.values.iter().map(|v| v[b].clone()).collect(),
            })
            .collect()
    }

    fn write(blocks: &mut [Arc<KvBlock>], start: usize, rows: &[f32], bs: usize, width: usize) {
        for (r, row) in rows.chunks_exact(width).enumerate() {
            let pos = start + r;
            // Shared blocks are full and lie before `len`: new rows always land in owned blocks.
            let block = Arc::get_mut(&mut blocks[pos / bs])
                .expect("rows are only written into blocks this sequence owns alone");
            block
                .data_mut()
                .expect("host pool")
                .write((pos % bs) * width, row);
        }
    }

    /// `rows` (whole rows) into a device pool's arena at positions from `len`.
    fn write_arena(&self, arena: &Tensor, layer: usize, keys: bool, rows: &[f32]) -> Result<()> {
        let width = self.pool.row_width();
        let t = rows.len() / width;
        let mut slots = Vec::with_capacity(t);
        self.arena_rows(layer, keys, self.len..self.len + t, &mut slots)?;
        let device = arena.device();
        let src = Tensor::from_slice(rows, (t, width), device)?;
        let index = Tensor::from_vec(slots, t, device)?;
        crate::paged::arena::scatter_rows(arena, &index, &src)
    }

    fn rows<'a>(&self, blocks: &'a [Arc<KvBlock>]) -> Rows<'a> {
        Rows {
            chunks: blocks.iter().map(|b| b.data()).collect(),
            rows_per_chunk: self.pool.block_size(),
            width: self.pool.row_width(),
        }
    }
}

impl KvCache for PagedSequence {
    fn plan(&self) -> &SharingPlan {
        &self.plan
    }

    fn len(&self) -> usize {
        self.len
    }

    fn reserve(&mut self, tokens: usize) -> Result<()> {
        let needed = self.blocks_needed(tokens);
        if needed == 0 {
            return Ok(());
        }
        let mut blocks = self.pool.take(needed).ok_or(ModelError::KvCacheFull {
            needed,
            free: self.pool.free_blocks(),
        })?;
        let want = (self.len + tokens).div_ceil(self.pool.block_size());
        for l in 0..self.values.len() {
            let lists = [self.keys[l].as_mut(), Some(&mut self.values[l])];
            for list in lists.into_iter().flatten() {
                while list.len() < want {
                    let block = blocks.pop().expect("taken exactly the blocks needed");
                    list.push(Arc::new(block));
                }
            }
        }
        Ok(())
    }

    fn append(&mut self, layer: usize, keys: Option<&[f32]>, values: &[f32]) {
        if let Some(arena) = self.pool.arena() {
            // The tensor forward writes device rows itself; this path serves host callers.
            let write = |k: bool, rows: &[f32]| {
                self.write_arena(arena, layer, k, rows)
                    .expect("arena rows lie in reserved room")
            };
            if let (true, Some(src)) = (self.plan.computes(layer), keys) {
                write(true, src);
            }
            write(false, values);
            return;
        }
        let (bs, width, start) = (self.pool.block_size(), self.pool.row_width(), self.len);
        if let (Some(dst), Some(src)) = (self.keys[layer].as_mut(), keys) {
            Self::write(dst, start, src, bs, width);
        }
        Self::write(&mut self.values[layer], start, values, bs, width);
    }

    fn keys(&self, layer: usize) -> Option<Rows<'_>> {
        self.keys[layer].as_deref().map(|k| self.rows(k))
    }

    fn values(&self, layer: usize) -> Rows<'_> {
        self.rows(&self.values[layer])
    }

    fn commit(&mut self, tokens: usize) {
        self.len += tokens;
    }

    fn rollback(&mut self) {}

    fn arena(&self) -> Option<&dyn ArenaKv> {
        self.pool.arena().map(|_| self as &dyn ArenaKv)
    }
}

impl ArenaKv for PagedSequence {
    fn arena(&self) -> &Tensor {
        self.pool
            .arena()
            .expect("only device-pool sequences expose an arena")
    }

    fn pool_id(&self) -> usize {
        self.pool.id()
    }

    fn block_size(&self) -> usize {
        self.pool.block_size()
    }

    fn arena_rows(
        &self,
        layer: usize,
        keys: bool,
        positions: std::ops::Range<usize>,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let blocks = self.layer_blocks(layer, keys)?;
        let bs = self.pool.block_size();
        for pos in positions {
            let slot = arena_slot(blocks, pos / bs)?;
            out.push((slot * bs + pos % bs) as u32);
        }
        Ok(())
    }

    fn arena_blocks(
        &self,
        layer: usize,
        keys: bool,
        blocks: usize,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let held = self.layer_blocks(layer, keys)?;
        for b in 0..blocks {
            out.push(arena_slot(held, b)? as u32);
        }
        Ok(())
    }
}

impl PagedSequence {
    fn layer_blocks(&self, layer: usize, keys: bool) -> Result<&[Arc<KvBlock>]> {
        if keys {
            self.keys[layer].as_deref().ok_or_else(|| {
                ModelError::Batch(format!("layer {layer} shares attention and holds no keys"))
            })
        } else {
            Ok(&self.values[layer])
        }
    }
}

fn arena_slot(blocks: &[Arc<KvBlock>], block: usize) -> Result<usize> {
    blocks
        .get(block)
        .and_then(|b| b.arena_slot())
        .ok_or_else(|| ModelError::Batch(format!("block {block} is not a reserved device block")))
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::kv_cache::KvDtype;
    use crate::paged::arena::gather_rows;

    #[test]
    fn rows_appended_to_a_device_pool_sequence_land_in_its_arena_blocks() {
        let width = 3;
        let pool = BlockPool::on_device(10, 2, width, KvDtype::F32, &Device::Cpu).unwrap();
        let plan = SharingPlan::with_sharing_layers(2, 1).unwrap();
        let mut seq = PagedSequence::new(pool.clone(), plan);
        let rows =
            |base: f32, n: usize| -> Vec<f32> { (0..n * width).map(|i| base + i as f32).collect() };
        for (t, base) in [(3, 0.0), (2, 100.0)] {
            seq.reserve(t).unwrap();
            seq.append(0, Some(&rows(base, t)), &rows(base + 1000.0, t));
            seq.append(1, Some(&rows(-1.0, t)), &rows(base + 2000.0, t));
            seq.commit(t);
        }
        let arena = KvCache::arena(&seq).expect("device pool");
        let read = |layer: usize, keys: bool| -> Vec<f32> {
            let mut slots = Vec::new();
            arena.arena_rows(layer, keys, 0..5, &mut slots).unwrap();
            let index = Tensor::from_vec(slots, 5, &Device::Cpu).unwrap();
            let got = gather_rows(arena.arena(), &index).unwrap();
            got.to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let expect = |a: f32, b: f32| [rows(a, 3), rows(b, 2)].concat();
        assert_eq!(read(0, true), expect(0.0, 100.0));
        assert_eq!(read(0, false), expect(1000.0, 1100.0));
        assert_eq!(read(1, false), expect(2000.0, 2100.0));
        assert!(
            arena.arena_rows(1, true, 0..1, &mut Vec::new()).is_err(),
            "sharing layer: no K"
        );
        assert_eq!(
            pool.stats().used(),
            3 * 3,
            "3 blocks of 2 rows for K0, V0, V1"
        );
        drop(seq);
        assert_eq!(pool.stats().used(), 0);
    }
}
