//! Paged KV cache: fixed-size blocks from one preallocated pool. A sequence takes K blocks only
//! for its compute layers and V blocks for every layer; blocks go back to the pool when the last
//! holder drops them (RAII), and full blocks can be shared through the prefix cache.

pub(crate) mod arena;
mod pool;
mod prefix;
mod sequence;

pub use pool::{BlockPool, PoolStats};
pub use prefix::{PrefixCache, PrefixStats};
pub use sequence::{BlockSet, PagedSequence};
