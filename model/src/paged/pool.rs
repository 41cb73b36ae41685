//! The block pool: every block holds `block_size` rows of one layer's K or V.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};
use crate::kv_cache::{KvBuffer, KvDtype, KvSlice};

struct PoolInner {
    block_size: usize,
    row_width: usize,
    dtype: KvDtype,
    total: usize,
    /// Device pools: every block's rows live in this one `(blocks * block_size, row_width)`
    /// tensor, block `i` at rows `i * block_size..`, so a forward gathers and scatters the rows of
    /// a whole batch with one kernel each.
    arena: Option<Tensor>,
    free: Mutex<FreeList>,
}

/// Blocks not in use. Host pools allocate a block's memory when it is first taken and recycle it
/// after, so start-up does not fault in the whole pool; device pools hand out arena slots. The
/// count is fixed from the start.
struct FreeList {
    count: usize,
    recycled: Vec<KvBuffer>,
    arena_slots: Vec<usize>,
}

/// A fixed number of preallocated blocks, shared by all sequences of an engine.
#[derive(Clone)]
pub struct BlockPool {
    inner: Arc<PoolInner>,
}

/// Block counts for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub total: usize,
    pub free: usize,
}

impl PoolStats {
    pub fn used(&self) -> usize {
        self.total - self.free
    }
}

impl std::fmt::Debug for BlockPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockPool")
            .field("block_size", &self.inner.block_size)
            .field("stats", &self.stats())
            .finish()
    }
}

impl BlockPool {
    /// `blocks` blocks of `block_size` rows of `row_width` values stored as `dtype`.
    pub fn new(blocks: usize, block_size: usize, row_width: usize, dtype: KvDtype) -> Result<Self> {
        Self::build(blocks, block_size, row_width, dtype, None)
    }

    /// A pool whose blocks live in one tensor on `device` (allocated now, zeroed), for the tensor
    /// forward ([`crate::EpasLlama::on_device`]).
    pub fn on_device(
        blocks: usize,
        block_size: usize,
        row_width: usize,
        dtype: KvDtype,
        device: &Device,
    ) -> Result<Self> {
        let elem = match dtype {
            KvDtype::F32 => DType::F32,
            KvDtype::F16 => DType::F16,
        };
        let values = blocks.max(1) * block_size * row_width;
        if values > u32::MAX as usize {
            // Arena rows are u32 indices, and candle's CUDA gather kernel offsets in 32 bits.
            return Err(ModelError::Config(format!(
                "a device KV pool holds at most 2^32 values; {blocks} blocks of {block_size} \
                 rows of {row_width} are {values}: lower --kv-cache-tokens or --kv-cache-bytes"
            )));
        }
        let arena = Tensor::zeros((blocks.max(1) * block_size, row_width), elem, device)?;
        Self::build(blocks, block_size, row_width, dtype, Some(arena))
    }

    fn build(
        blocks: usize,
        block_size: usize,
        row_width: usize,
        dtype: KvDtype,
        arena: Option<Tensor>,
    ) -> Result<Self> {
        if block_size == 0 || row_width == 0 {
            return Err(ModelError::Config(
                "block size and row width must be positive".into(),
            ));
        }
        let arena_slots = match arena {
            Some(_) => (0..blocks).rev().collect(),
            None => Vec::new(),
        };
        let free = FreeList {
            count: blocks,
            recycled: Vec::new(),
            arena_slots,
        };
        Ok(Self {
            inner: Arc::new(PoolInner {
                block_size,
                row_width,
                dtype,
                total: blocks,
                arena,
                free: Mutex::new(free),
            }),
        })
    }

    /// Identifies the pool: clones share it.
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// The tensor holding every block of a device pool; `None` for host pools.
    pub fn arena(&self) -> Option<&Tensor> {
        self.inner.arena.as_ref()
    }

    pub fn block_size(&self) -> usize {
        self.inner.block_size
    }

    pub fn row_width(&self) -> usize {
        self.inner.row_width
    }

    pub fn dtype(&self) -> KvDtype {
        self.inner.dtype
    }

    /// Bytes of one block.
    pub fn block_bytes(&self) -> usize {
        self.inner.block_size * self.inner.row_width * self.inner.dtype.size()
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            total: self.inner.total,
            free: self.free_blocks(),
        }
    }

    pub fn free_blocks(&self) -> usize {
        self.inner.free.lock().map(|f| f.count).unwrap_or(0)
    }

    /// Takes `n` blocks, or none at all when fewer are free.
    pub fn take(&self, n: usize) -> Option<Vec<KvBlock>> {
        let mut free = self.inner.free.lock().ok()?;
        if free.count < n {
            return None;
        }
        free.count -= n;
        if self.inner.arena.is_some() {
            let at = free.arena_slots.len() - n;
            let slots = free.arena_slots.split_off(at);
            drop(free);
            return Some(
                slots
                    .into_iter()
                    .map(|slot| self.block(BlockData::Arena(slot)))
                    .collect(),
            );
        }
        let reuse = n.min(free.recycled.len());
        let at = free.recycled.len() - reuse;
        let mut buffers = free.recycled.split_off(at);
        drop(free);
        let values = self.inner.block_size * self.inner.row_width;
        buffers.resize_with(n, || KvBuffer::zeros(self.inner.dtype, values));
        Some(
            buffers
                .into_iter()
                .map(|data| self.block(BlockData::Host(data)))
                .collect(),
        )
    }

    fn block(&self, data: BlockData) -> KvBlock {
        KvBlock {
            data,
            pool: self.inner.clone(),
        }
    }
}

enum BlockData {
    Host(KvBuffer),
    /// Index of the block in its pool's arena tensor.
    Arena(usize),
}

/// One block of rows; returns to its pool when dropped.
pub struct KvBlock {
    data: BlockData,
    pool: Arc<PoolInner>,
}

impl KvBlock {
    /// The rows of a host block; empty for a device block (its rows are in the arena).
    pub fn data(&self) -> KvSlice<'_> {
        match &self.data {
            BlockData::Host(b) => b.view(),
            BlockData::Arena(_) => KvSlice::F32(&[]),
        }
    }

    /// The rows of a host block; `None` for a device block.
    pub fn data_mut(&mut self) -> Option<&mut KvBuffer> {
        match &mut self.data {
            BlockData::Host(b) => Some(b),
            BlockData::Arena(_) => None,
        }
    }

    /// Index of a device block in its pool's arena.
    pub fn arena_slot(&self) -> Option<usize> {
        match self.data {
            BlockData::Arena(slot) => Some(slot),
            BlockData::Host(_) => None,
        }
    }
}

impl Drop for KvBlock {
    fn drop(&mut self) {
        let data = std::mem::replace(&mut self.data, BlockData::Arena(usize::MAX));
        if let Ok(mut free) = self.pool.free.lock() {
            free.count += 1;
            match data {
                BlockData::Host(buffer) => free.recycled.push(buffer),
                BlockData::Arena(slot) => free.arena_slots.push(slot),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_return_to_the_pool_when_dropped() {
        let pool = BlockPool::new(5, 4, 3, KvDtype::F16).unwrap();
        let a = pool.take(3).unwrap();
        assert_eq!(pool.stats().used(), 3);
        assert!(pool.take(3).is_none(), "all or nothing");
        assert_eq!(pool.free_blocks(), 2);
        let shared = std::sync::Arc::new(pool.take(1).unwrap().pop().unwrap());
        let again = shared.clone();
        drop(a);
        drop(shared);
        assert_eq!(pool.free_blocks(), 4);
        drop(again);
        assert_eq!(pool.free_blocks(), 5);
    }

    #[test]
    fn device_blocks_are_distinct_arena_slots_and_come_back() {
        let pool = BlockPool::on_device(4, 2, 3, KvDtype::F32, &Device::Cpu).unwrap();
        assert_eq!(pool.arena().unwrap().dims(), &[8, 3]);
        let a = pool.take(3).unwrap();
        let mut slots: Vec<usize> = a.iter().map(|b| b.arena_slot().unwrap()).collect();
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), 3);
        assert!(slots.iter().all(|&s| s < 4));
        drop(a);
        let all = pool.take(4).unwrap();
        let mut slots: Vec<usize> = all.iter().map(|b| b.arena_slot().unwrap()).collect();
        slots.sort();
        assert_eq!(slots, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_device_pool_past_32_bit_indexing_is_refused() {
        let err = BlockPool::on_device(1 << 20, 16, 512, KvDtype::F16, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("at most 2^32 values"), "{err}");
    }
}
