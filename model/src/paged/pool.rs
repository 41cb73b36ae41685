//! The block pool: every block holds `block_size` rows of one layer's K or V.

use std::sync::{Arc, Mutex};

use crate::error::{ModelError, Result};
use crate::kv_cache::{KvBuffer, KvDtype, KvSlice};

struct PoolInner {
    block_size: usize,
    row_width: usize,
    dtype: KvDtype,
    total: usize,
    free: Mutex<FreeList>,
}

/// Blocks not in use: memory is allocated when a block is first taken and recycled after, so
/// start-up does not fault in the whole pool; the count is fixed from the start.
struct FreeList {
    count: usize,
    recycled: Vec<KvBuffer>,
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
        if block_size == 0 || row_width == 0 {
            return Err(ModelError::Config(
                "block size and row width must be positive".into(),
            ));
        }
        let free = FreeList {
            count: blocks,
            recycled: Vec::new(),
        };
        Ok(Self {
            inner: Arc::new(PoolInner {
                block_size,
                row_width,
                dtype,
                total: blocks,
                free: Mutex::new(free),
            }),
        })
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
        let reuse = n.min(free.recycled.len());
        let at = free.recycled.len() - reuse;
        let mut blocks = free.recycled.split_off(at);
        drop(free);
        let values = self.inner.block_size * self.inner.row_width;
        blocks.resize_with(n, || KvBuffer::zeros(self.inner.dtype, values));
        Some(
            blocks
                .into_iter()
                .map(|data| KvBlock {
                    data,
                    pool: self.inner.clone(),
                })
                .collect(),
        )
    }
}

/// One block of rows; returns to its pool when dropped.
pub struct KvBlock {
    data: KvBuffer,
    pool: Arc<PoolInner>,
}

impl KvBlock {
    pub fn data(&self) -> KvSlice<'_> {
        self.data.view()
    }

    pub fn data_mut(&mut self) -> &mut KvBuffer {
        &mut self.data
    }
}

impl Drop for KvBlock {
    fn drop(&mut self) {
        let data = std::mem::replace(&mut self.data, KvBuffer::F32(Vec::new()));
        if let Ok(mut free) = self.pool.free.lock() {
            free.count += 1;
            free.recycled.push(data);
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
}
