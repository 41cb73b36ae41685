//! The device forward (how the model runs on CUDA) against the host kernels, on the CPU: mixed
//! batches of prefill chunks and decodes at different sharing ratios, over a device block pool.

mod common;

use candle_core::{DType, Device};
use common::max_abs_diff;
use epas_model::PagedSequence;
use epas_model::{
    Backend, DeviceWeights, EpasLlama, KvCache, KvDtype, Logits, ModelError, SequenceCache,
    SequenceStep, SharedAttention, SharingPlan,
};

/// A random 6-layer model with `heads / kv_heads` query heads per K/V head.
fn model(hidden_size: usize, num_heads: usize, num_kv_heads: usize) -> EpasLlama {
    common::sharp_random_model(hidden_size, num_heads, num_kv_heads, 5)
}

fn plans(m: &EpasLlama) -> Vec<SharingPlan> {
    let layers = m.config().num_layers;
    [0, 2, 3, 5]
        .into_iter()
        .map(|k| SharingPlan::with_sharing_layers(layers, k).unwrap())
        .collect()
}

/// Steps of a serving batch: uneven prefill chunks (one of a single token), then decodes mixed
/// with a second prefill chunk, then pure decodes.
fn schedule() -> Vec<Vec<Vec<u32>>> {
    let tokens = |seed: u32, n: usize| (0..n as u32).map(|i| (seed * 7 + i * 13) % 61).collect();
    vec![
        vec![tokens(1, 5), tokens(2, 17), tokens(3, 1), tokens(4, 9)],
        vec![tokens(5, 1), tokens(6, 1), tokens(7, 6), tokens(8, 1)],
        vec![tokens(9, 1), tokens(10, 1), tokens(11, 1), tokens(12, 1)],
        vec![tokens(13, 1), tokens(14, 3), tokens(15, 1), tokens(16, 1)],
    ]
}

/// Every step's logits (all positions) of every sequence, in step order.
fn run(m: &EpasLlama, caches: &mut [Box<dyn KvCache>]) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for step in schedule() {
        let mut steps: Vec<SequenceStep<'_>> = caches
            .iter_mut()
            .zip(&step)
            .map(|(c, t)| SequenceStep {
                tokens: t,
                cache: c.as_mut(),
                logits: Logits::All,
            })
            .collect();
        for l in m.forward(&mut steps).unwrap() {
            out.push(l.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
    }
    out
}

fn host_caches(m: &EpasLlama) -> Vec<Box<dyn KvCache>> {
    plans(m)
        .into_iter()
        .map(|p| {
            Box::new(SequenceCache::with_dtype(m.config(), p, 0, m.kv_dtype())) as Box<dyn KvCache>
        })
        .collect()
}

fn device_caches(m: &EpasLlama, block_size: usize) -> Vec<Box<dyn KvCache>> {
    let pool = m.block_pool(400, block_size, m.kv_dtype()).unwrap();
    plans(m)
        .into_iter()
        .map(|p| Box::new(PagedSequence::new(pool.clone(), p)) as Box<dyn KvCache>)
        .collect()
}

fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>], tolerance: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let diff = max_abs_diff(x, y);
        assert!(diff < tolerance, "{what}: output {i} differs by {diff}");
    }
}

#[test]
fn device_forward_matches_the_host_kernels_on_mixed_batches() {
    // 2 and 3 query heads per K/V head; block sizes that do and do not divide the lengths.
    for (hidden, heads, kv_heads, block_size) in [(64, 4, 2, 4), (96, 6, 2, 16), (48, 3, 3, 5)] {
        for kv in [KvDtype::F32, KvDtype::F16] {
            let mut host = model(hidden, heads, kv_heads);
            host.set_kv_dtype(kv);
            let device = host
                .clone()
                .on_device(&Device::Cpu, DType::F32, DeviceWeights::Dense)
                .unwrap();
            let expected = run(&host, &mut host_caches(&host));
            let got = run(&device, &mut device_caches(&device, block_size));
            let what = format!("{hidden}/{heads}/{kv_heads} bs {block_size} kv {kv}");
            assert_close(&got, &expected, 1e-4, &what);
        }
    }
}

#[test]
fn decodes_split_into_several_attention_groups_give_the_same_logits() {
    let host = model(64, 4, 2);
    let expected = run(&host, &mut host_caches(&host));
    // 1: every decode attends alone; 2500: groups of one to three (32 values per key, up to
    // 28 keys each).
    for limit in [1, 2500] {
        let mut device = host
            .clone()
            .on_device(&Device::Cpu, DType::F32, DeviceWeights::Dense)
            .unwrap();
        device.set_max_group_values(limit);
        let got = run(&device, &mut device_caches(&device, 4));
        assert_close(&got, &expected, 1e-4, &format!("group limit {limit}"));
    }
}

#[test]
fn reused_probabilities_equal_recomputed_ones() {
    let mut m = model(64, 4, 2)
        .on_device(&Device::Cpu, DType::F32, DeviceWeights::Dense)
        .unwrap();
    let reused = run(&m, &mut device_caches(&m, 4));
    m.set_shared_attention(SharedAttention::Recompute);
    let recomputed = run(&m, &mut device_caches(&m, 4));
    assert_close(&reused, &recomputed, 1e-5, "reuse vs recompute");
    // Too large to keep: the limit falls back to recomputing.
    m.set_shared_attention(SharedAttention::ReuseProbabilities {
        max_probs_floats: 100,
    });
    let limited = run(&m, &mut device_caches(&m, 4));
    assert_close(&limited, &recomputed, 1e-5, "limit vs recompute");
}

#[test]
fn sharing_changes_the_output_and_ratio_zero_does_not_share() {
    let m = model(64, 4, 2)
        .on_device(&Device::Cpu, DType::F32, DeviceWeights::Dense)
        .unwrap();
    let out = run(&m, &mut device_caches(&m, 4));
    // The same first chunk under ratio 0 alone equals its place in the mixed batch; under the
    // deepest plan it differs.
    let layers = m.config().num_layers;
    let first = &schedule()[0][0];
    let alone = |k: usize| {
        m.forward_sequence(first, SharingPlan::with_sharing_layers(layers, k).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert!(max_abs_diff(&alone(0), &out[0]) < 1e-5);
    assert!(max_abs_diff(&alone(5), &out[0]) > 1e-3);
}

#[test]
fn half_precision_stays_near_f32() {
    let host = model(64, 4, 2);
    let expected = run(&host, &mut host_caches(&host));
    for dtype in [DType::F16, DType::BF16] {
        let m = host
            .clone()
            .on_device(&Device::Cpu, dtype, DeviceWeights::Dense)
            .unwrap();
        let got = run(&m, &mut device_caches(&m, 8));
        let tolerance = if dtype == DType::F16 { 0.005 } else { 0.05 };
        assert_close(&got, &expected, tolerance, &format!("{dtype:?}"));
    }
}

#[test]
fn caches_of_the_wrong_kind_are_refused() {
    let host = model(64, 4, 2);
    let device = host
        .clone()
        .on_device(&Device::Cpu, DType::F32, DeviceWeights::Dense)
        .unwrap();
    let plan = plans(&host)[0];
    let tokens = [1u32, 2, 3];
    let mut host_cache = SequenceCache::new(host.config(), plan);
    let mut steps = [SequenceStep {
        tokens: &tokens,
        cache: &mut host_cache,
        logits: Logits::Last,
    }];
    let err = device.forward(&mut steps).unwrap_err().to_string();
    assert!(err.contains("device-pool"), "{err}");
    assert_eq!(host_cache.len(), 0, "a refused step leaves the cache alone");

    let mut device_cache = device.new_cache(plan, 8).unwrap();
    let mut steps = [SequenceStep {
        tokens: &tokens,
        cache: device_cache.as_mut(),
        logits: Logits::Last,
    }];
    assert!(host.forward(&mut steps).is_err());

    // Sequences from two different device pools cannot share a forward.
    let mut a = device.new_cache(plan, 8).unwrap();
    let mut b = device.new_cache(plan, 8).unwrap();
    let mut steps = [
        SequenceStep {
            tokens: &tokens,
            cache: a.as_mut(),
            logits: Logits::Last,
        },
        SequenceStep {
            tokens: &tokens,
            cache: b.as_mut(),
            logits: Logits::Last,
        },
    ];
    let err = device.forward(&mut steps).unwrap_err().to_string();
    assert!(err.contains("share a block pool"), "{err}");
}

/// The device model is made from the host weights and does not keep them: what needs them
/// (export, quantizing, placing again) is refused with a clear error, while the host model
/// it came from (a copy here) still has them and runs.
#[test]
fn a_device_model_keeps_no_host_weights() {
    let host = model(64, 4, 2);
    let mut device = host
        .clone()
        .on_device(&Device::Cpu, DType::F32, DeviceWeights::Dense)
        .unwrap();
    assert!(matches!(host.backend(), Backend::Host(_)));
    assert!(matches!(device.backend(), Backend::Device(_)));
    assert!(matches!(
        device.host_weights(),
        Err(ModelError::WeightsOnDevice)
    ));
    let err = device
        .quantize_weights(epas_model::GgufQuant::Q8_0, false)
        .unwrap_err();
    assert!(matches!(err, ModelError::WeightsOnDevice), "{err}");
    assert!(err.to_string().contains("host memory"), "{err}");
    assert!(matches!(
        device.dequantize_weights(),
        Err(ModelError::WeightsOnDevice)
    ));
    let again = device
        .clone()
        .on_device(&Device::Cpu, DType::F32, DeviceWeights::Dense);
    assert!(matches!(again, Err(ModelError::WeightsOnDevice)));
    assert_eq!(host.host_weights().unwrap().layers.len(), 6);
    let plan = plans(&host)[1];
    let tokens = [3u32, 1, 4, 1, 5];
    let want = host.forward_sequence(&tokens, plan).unwrap();
    let got = device.forward_sequence(&tokens, plan).unwrap();
    let flat = |t: candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(max_abs_diff(&flat(want), &flat(got)) < 1e-4);
}

#[test]
fn quantized_device_weights_match_the_host_kernels_on_the_same_blocks() {
    use candle_core::quantized::{GgmlDType, QTensor};
    use epas_model::Linear;
    for format in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
        let mut host = model(64, 4, 2);
        let quantize = |l: &Linear| {
            let w = l.dequantized().unwrap();
            Linear::quantized(QTensor::quantize(&w, format).unwrap()).unwrap()
        };
        // `down` (ffn 40 wide) stays dense: blocks are 32 values; a model may mix both.
        for l in &mut host.host_weights_mut().unwrap().layers {
            for w in [
                &mut l.wq,
                &mut l.wk,
                &mut l.wv,
                &mut l.wo,
                &mut l.gate,
                &mut l.up,
            ] {
                *w = quantize(w);
            }
        }
        assert!(host.host_weights().unwrap().layers[0]
            .wq
            .format()
            .starts_with("q"));
        let expected = run(&host, &mut host_caches(&host));
        let dense = host
            .clone()
            .on_device(&Device::Cpu, DType::F32, DeviceWeights::Dense)
            .unwrap();
        let quantized = host
            .clone()
            .on_device(&Device::Cpu, DType::F32, DeviceWeights::Quantized)
            .unwrap();
        let from_dense = run(&dense, &mut device_caches(&dense, 4));
        let from_blocks = run(&quantized, &mut device_caches(&quantized, 4));
        // Both quantized paths round activations to 8 bits per block (in different places);
        // the dense path does not.
        assert_close(
            &from_blocks,
            &expected,
            0.02,
            &format!("{format:?} blocks vs host"),
        );
        assert_close(
            &from_dense,
            &expected,
            0.02,
            &format!("{format:?} dense vs host"),
        );
        let differs = from_blocks
            .iter()
            .zip(&from_dense)
            .any(|(a, b)| max_abs_diff(a, b) > 0.0);
        assert!(differs, "the blocks path really runs quantized matmuls");
    }
}

#[test]
fn warm_up_runs_on_the_host_kernels_and_the_device_forward() {
    for m in [
        model(64, 4, 2),
        model(64, 4, 2)
            .on_device(&Device::Cpu, DType::F16, DeviceWeights::Dense)
            .unwrap(),
    ] {
        m.warm_up().unwrap();
    }
}
