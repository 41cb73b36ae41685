//! The paged cache against the contiguous one, blocks returning to the pool, and prefix reuse.

mod common;

use common::max_abs_diff;
use epas_model::{BlockPool, PagedSequence, PrefixCache};
use epas_model::{
    EpasLlama, KvCache, KvDtype, Logits, ModelError, SequenceCache, SequenceStep, SharingPlan,
};

fn model() -> EpasLlama {
    model_of(32, 4, 2)
}

/// A random 6-layer model; head width `hidden / heads`.
fn model_of(hidden_size: usize, num_heads: usize, num_kv_heads: usize) -> EpasLlama {
    common::sharp_random_model(hidden_size, num_heads, num_kv_heads, 21)
}

fn run(m: &EpasLlama, cache: &mut dyn KvCache, chunks: &[&[u32]]) -> Vec<f32> {
    let mut out = Vec::new();
    for c in chunks {
        let mut steps = [SequenceStep {
            tokens: c,
            cache: &mut *cache,
            logits: Logits::All,
        }];
        let t = m.forward(&mut steps).unwrap().pop().unwrap().unwrap();
        out.extend(t.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    out
}

#[test]
fn paged_equals_contiguous_for_every_plan() {
    // Head width 8 takes the attention's plain loops, 64 its fixed-width ones.
    for m in [model(), model_of(128, 4, 2)] {
        paged_equals_contiguous(&m);
    }
}

fn paged_equals_contiguous(m: &EpasLlama) {
    let ids: Vec<u32> = (0..23).map(|i| (i * 7 + 3) % 61).collect();
    let chunks: [&[u32]; 4] = [&ids[..5], &ids[5..6], &ids[6..20], &ids[20..]];
    for (k, dtype) in (0..6).flat_map(|k| [(k, KvDtype::F32), (k, KvDtype::F16)]) {
        let plan = SharingPlan::with_sharing_layers(6, k).unwrap();
        let pool = BlockPool::new(200, 4, m.config().kv_dim(), dtype).unwrap();
        let mut paged = PagedSequence::new(pool.clone(), plan);
        let mut flat = SequenceCache::with_dtype(m.config(), plan, 0, dtype);
        let a = run(m, &mut paged, &chunks);
        let b = run(m, &mut flat, &chunks);
        assert_eq!(max_abs_diff(&a, &b), 0.0, "k={k} {dtype}");
        if dtype == KvDtype::F16 {
            // Rounding K/V to f16 moves logits only slightly.
            let exact = run(m, &mut SequenceCache::new(m.config(), plan), &chunks);
            let d = max_abs_diff(&a, &exact);
            assert!(d > 0.0 && d < 1e-2, "k={k}: f16 cache moved logits by {d}");
        }
        // 23 positions = 6 blocks per layer; K blocks only for compute layers.
        assert_eq!(paged.blocks_held(), 6 * (12 - k));
        assert_eq!(pool.stats().used(), 6 * (12 - k));
        drop(paged);
        assert_eq!(pool.stats().used(), 0);
    }
}

#[test]
fn a_full_pool_is_an_error_and_changes_nothing() {
    let m = model();
    let plan = SharingPlan::with_sharing_layers(6, 2).unwrap();
    let pool = BlockPool::new(10, 4, m.config().kv_dim(), KvDtype::F16).unwrap();
    let mut seq = PagedSequence::new(pool.clone(), plan);
    let ids = [1u32, 2, 3, 4, 5];
    let mut steps = [SequenceStep {
        tokens: &ids,
        cache: &mut seq,
        logits: Logits::Last,
    }];
    assert!(matches!(
        m.forward(&mut steps),
        Err(ModelError::KvCacheFull {
            needed: 20,
            free: 10
        })
    ));
    assert_eq!(seq.len(), 0);
    assert_eq!(pool.stats().used(), 0);
}

#[test]
fn prefix_hits_give_the_same_logits_as_misses() {
    let host = model();
    let on_device = host
        .clone()
        .on_device(
            &candle_core::Device::Cpu,
            candle_core::DType::F32,
            epas_model::DeviceWeights::Dense,
        )
        .unwrap();
    // The host kernels, and the tensor forward over a device pool (the GPU path).
    for m in [host, on_device] {
        let pool = m.block_pool(400, 4, KvDtype::F16).unwrap();
        prefix_hits_match_misses(&m, pool);
    }
}

fn prefix_hits_match_misses(m: &EpasLlama, pool: BlockPool) {
    let plan = SharingPlan::with_sharing_layers(6, 3).unwrap();
    let mut prefix = PrefixCache::new(4);
    let first: Vec<u32> = (0..18).map(|i| (i * 5 + 1) % 61).collect();
    let mut seq = PagedSequence::new(pool.clone(), plan);
    assert!(prefix.lookup(&plan, &first).is_empty());
    run(m, &mut seq, &[&first]);
    prefix.insert(&plan, &first, seq.full_blocks());
    drop(seq);
    // 4 full blocks stay cached; the partial fifth went back to the pool.
    assert_eq!(pool.stats().used(), 4 * (12 - 3));

    let mut second = first[..13].to_vec();
    second.extend([9, 9, 9]);
    let hit = prefix.lookup(&plan, &second);
    assert_eq!(hit.len(), 3, "blocks 0..12 match");
    let mut cached = PagedSequence::with_prefix(pool.clone(), plan, &hit);
    let tail = run(m, &mut cached, &[&second[12..]]);
    let mut fresh = PagedSequence::new(pool.clone(), plan);
    let full = run(m, &mut fresh, &[&second]);
    let v = m.config().vocab_size;
    // Dense matmuls sum in an order that depends on the row count (4 rows vs 16): ulps only.
    let diff = max_abs_diff(&tail, &full[12 * v..]);
    assert!(diff < 1e-5, "{diff}");

    // Another sharing depth never hits blocks computed under this one.
    let other = SharingPlan::with_sharing_layers(6, 1).unwrap();
    assert!(prefix.lookup(&other, &second).is_empty());

    drop((cached, fresh, hit));
    assert_eq!(prefix.evict(usize::MAX), 4 * 9);
    assert_eq!(pool.stats().used(), 0);
}

#[test]
fn truncating_forgets_rejected_positions_and_returns_their_blocks() {
    let m = model();
    let plan = SharingPlan::with_sharing_layers(6, 2).unwrap();
    let pool = BlockPool::new(400, 4, m.config().kv_dim(), KvDtype::F32).unwrap();
    let ids: Vec<u32> = (0..16).map(|i| (i * 11 + 5) % 61).collect();
    let next = [7u32, 8];
    // Drafted positions 10..16 are run, then 12..16 rejected.
    let mut speculated = PagedSequence::new(pool.clone(), plan);
    run(&m, &mut speculated, &[&ids[..10], &ids[10..]]);
    assert_eq!(speculated.blocks_held(), 4 * (12 - 2));
    speculated.truncate(12);
    assert_eq!(speculated.len(), 12);
    assert_eq!(speculated.blocks_held(), 3 * (12 - 2));
    assert_eq!(pool.stats().used(), 3 * (12 - 2));
    let after = run(&m, &mut speculated, &[&next]);
    let mut plain = PagedSequence::new(pool.clone(), plan);
    let expected = run(&m, &mut plain, &[&ids[..12], &next]);
    let v = m.config().vocab_size;
    let diff = max_abs_diff(&after, &expected[12 * v..]);
    assert!(diff < 1e-4, "{diff}");
    speculated.truncate(20);
    assert_eq!(
        speculated.len(),
        14,
        "truncating past the end changes nothing"
    );
    drop((speculated, plain));
    assert_eq!(pool.stats().used(), 0);
}
