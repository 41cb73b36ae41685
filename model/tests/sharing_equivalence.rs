//! The EPAS forward against a naive reference, and its fast paths against each other: P reuse vs
//! recompute, cached decode vs full sequence, mixed-ratio batches vs single rows.

mod common;

use candle_core::{Device, Tensor, D};
use common::max_abs_diff;
use epas_model::random_model;
use epas_model::{
    EpasLlama, KvCache, LlamaConfig, Logits, SequenceCache, SequenceStep, SharedAttention,
    SharingPlan,
};

fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 97,
        hidden_size: 48,
        intermediate_size: 80,
        num_layers: 8,
        num_heads: 6,
        num_kv_heads: 2,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 256,
        tie_word_embeddings: false,
        rope_scaling: Default::default(),
    }
}

/// Weights large enough that attention is far from uniform, so sharing changes the output.
fn tiny_model() -> EpasLlama {
    let mut m = random_model(tiny_config(), None, 11).unwrap();
    for l in &mut m.host_weights_mut().unwrap().layers {
        for w in [&mut l.wq, &mut l.wk] {
            *w = epas_model::Linear::dense((w.dequantized().unwrap() * 25.0).unwrap()).unwrap();
        }
    }
    m
}

fn tokens(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 31 + seed * 17 + 5) % 97)
        .collect()
}

/// Textbook LLaMA with EPAS sharing, written with plain candle ops: full sequence, causal mask,
/// no cache; sharing layers recompute attention from the source layer's (post-RoPE) Q and K.
fn naive_reference(m: &EpasLlama, ids: &[u32], plan: SharingPlan) -> Tensor {
    let c = m.config();
    let dev = Device::Cpu;
    let t = ids.len();
    let (h, kvh, hd) = (c.num_heads, c.num_kv_heads, c.head_dim());
    let rms = |x: &Tensor, w: &Tensor| -> Tensor {
        let var = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let x = x
            .broadcast_div(&(var + c.rms_norm_eps).unwrap().sqrt().unwrap())
            .unwrap();
        x.broadcast_mul(w).unwrap()
    };
    // RoPE in the HF layout: rotate_half.
    let half = hd / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / c.rope_theta.powf(2.0 * i as f32 / hd as f32))
        .collect();
    let mut cos = vec![0f32; t * hd];
    let mut sin = vec![0f32; t * hd];
    for p in 0..t {
        for i in 0..hd {
            let a = p as f32 * inv[i % half];
            cos[p * hd + i] = a.cos();
            sin[p * hd + i] = a.sin();
        }
    }
    let cos = Tensor::from_vec(cos, (1, t, hd), &dev).unwrap();
    let sin = Tensor::from_vec(sin, (1, t, hd), &dev).unwrap();
    let rope = |x: &Tensor| -> Tensor {
        // x: (heads, t, hd)
        let x1 = x.narrow(D::Minus1, 0, half).unwrap();
        let x2 = x.narrow(D::Minus1, half, half).unwrap();
        let rot = Tensor::cat(&[&x2.neg().unwrap(), &x1], D::Minus1).unwrap();
        (x.broadcast_mul(&cos).unwrap() + rot.broadcast_mul(&sin).unwrap()).unwrap()
    };
    let heads = |x: Tensor, n: usize| x.reshape((t, n, hd)).unwrap().transpose(0, 1).unwrap();
    let repeat_kv = |x: Tensor| {
        let g = h / kvh;
        Tensor::cat(
            &(0..kvh)
                .flat_map(|k| vec![x.narrow(0, k, 1).unwrap(); g])
                .collect::<Vec<_>>(),
            0,
        )
        .unwrap()
    };
    let mut mask = vec![0f32; t * t];
    for i in 0..t {
        for j in i + 1..t {
            mask[i * t + j] = f32::NEG_INFINITY;
        }
    }
    let mask = Tensor::from_vec(mask, (1, t, t), &dev).unwrap();
    let ids_t = Tensor::new(ids, &dev).unwrap();
    let w = m.host_weights().unwrap();
    let mut x = w.embed.lookup(&ids_t).unwrap();
    let mut shared: Option<(Tensor, Tensor)> = None;
    for (l, layer) in w.layers.iter().enumerate() {
        let hn = rms(&x, &layer.attn_norm);
        let (q, k) = if plan.computes(l) {
            let q = rope(&heads(layer.wq.forward(&hn).unwrap(), h));
            let k = repeat_kv(rope(&heads(layer.wk.forward(&hn).unwrap(), kvh)));
            if plan.source_layer() == Some(l) {
                shared = Some((q.clone(), k.clone()));
            }
            (q, k)
        } else {
            shared
                .clone()
                .expect("source layer runs before sharing layers")
        };
        let v = repeat_kv(heads(layer.wv.forward(&hn).unwrap(), kvh));
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (hd as f64).sqrt()).unwrap();
        let p = candle_nn::ops::softmax(&scores.broadcast_add(&mask).unwrap(), D::Minus1).unwrap();
        let o = p
            .matmul(&v)
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .reshape((t, h * hd))
            .unwrap();
        x = (x + layer.wo.forward(&o).unwrap()).unwrap();
        let hn = rms(&x, &layer.mlp_norm);
        let g = candle_nn::ops::silu(&layer.gate.forward(&hn).unwrap()).unwrap();
        let u = layer.up.forward(&hn).unwrap();
        x = (x + layer.down.forward(&(g * u).unwrap()).unwrap()).unwrap();
    }
    w.lm_head.forward(&rms(&x, &w.norm)).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn every_ratio_equals_the_naive_reference() {
    let m = tiny_model();
    let ids = tokens(37, 1);
    let base = flat(&m.forward_sequence(&ids, SharingPlan::none(8)).unwrap());
    for k in 0..8 {
        let plan = SharingPlan::with_sharing_layers(8, k).unwrap();
        let ours = flat(&m.forward_sequence(&ids, plan).unwrap());
        let reference = flat(&naive_reference(&m, &ids, plan));
        let diff = max_abs_diff(&ours, &reference);
        assert!(diff < 1e-4, "k={k}: max |diff| {diff}");
        if k > 0 {
            // Sharing really changes the computation on this model.
            assert!(max_abs_diff(&ours, &base) > 1e-3, "k={k} equals k=0");
        }
    }
}

#[test]
fn probability_reuse_equals_recompute_exactly() {
    let mut m = tiny_model();
    let ids = tokens(41, 2);
    for k in [1, 3, 7] {
        let plan = SharingPlan::with_sharing_layers(8, k).unwrap();
        m.set_shared_attention(SharedAttention::default());
        let reuse = flat(&m.forward_sequence(&ids, plan).unwrap());
        m.set_shared_attention(SharedAttention::Recompute);
        let recompute = flat(&m.forward_sequence(&ids, plan).unwrap());
        assert_eq!(max_abs_diff(&reuse, &recompute), 0.0, "k={k}");
        // A P too large to keep falls back to recomputing, with the same result.
        m.set_shared_attention(SharedAttention::ReuseProbabilities {
            max_probs_floats: 1,
        });
        let fallback = flat(&m.forward_sequence(&ids, plan).unwrap());
        assert_eq!(max_abs_diff(&reuse, &fallback), 0.0, "k={k}");
    }
}

/// Prefill in uneven chunks, then token-by-token decode, against one full-sequence forward.
#[test]
fn cached_decode_equals_full_sequence() {
    let m = tiny_model();
    let ids = tokens(30, 3);
    for k in [0, 2, 5, 7] {
        let plan = SharingPlan::with_sharing_layers(8, k).unwrap();
        let full = m.forward_sequence(&ids, plan).unwrap();
        let mut cache = SequenceCache::new(m.config(), plan);
        let mut rows = Vec::new();
        let mut pos = 0;
        for chunk in [7usize, 1, 9, 1, 1, 1, 10] {
            let mut steps = [SequenceStep {
                tokens: &ids[pos..pos + chunk],
                cache: &mut cache,
                logits: Logits::All,
            }];
            rows.push(m.forward(&mut steps).unwrap().pop().unwrap().unwrap());
            pos += chunk;
        }
        assert_eq!(cache.len(), 30);
        let incremental = Tensor::cat(&rows, 0).unwrap();
        let diff = max_abs_diff(&flat(&full), &flat(&incremental));
        assert!(diff < 1e-4, "k={k}: max |diff| {diff}");
    }
}

/// Rows of different ratios and lengths in one forward (in shuffled order) equal each row alone.
#[test]
fn mixed_ratio_batch_equals_rows_alone() {
    let m = tiny_model();
    let ks = [5usize, 0, 7, 2, 0, 3];
    let prompts: Vec<Vec<u32>> = (0..ks.len()).map(|i| tokens(5 + 4 * i, i as u32)).collect();
    let plans: Vec<SharingPlan> = ks
        .iter()
        .map(|&k| SharingPlan::with_sharing_layers(8, k).unwrap())
        .collect();
    let mut caches: Vec<SequenceCache> = plans
        .iter()
        .map(|p| SequenceCache::new(m.config(), *p))
        .collect();
    // Prefill all rows in one batch, then three decode steps in one batch each.
    let mut batch_logits: Vec<Vec<Vec<f32>>> = vec![Vec::new(); ks.len()];
    let mut inputs: Vec<Vec<u32>> = prompts.clone();
    for _ in 0..4 {
        let mut steps: Vec<SequenceStep> = caches
            .iter_mut()
            .zip(&inputs)
            .map(|(cache, toks)| SequenceStep {
                tokens: toks,
                cache,
                logits: Logits::Last,
            })
            .collect();
        let out = m.forward(&mut steps).unwrap();
        for (i, o) in out.into_iter().enumerate() {
            let row = flat(&o.unwrap());
            inputs[i] = vec![epas_model::argmax(&row)];
            batch_logits[i].push(row);
        }
    }
    for (i, plan) in plans.iter().enumerate() {
        let mut cache = SequenceCache::new(m.config(), *plan);
        let mut input = prompts[i].clone();
        for (s, expected) in batch_logits[i].iter().enumerate() {
            let mut steps = [SequenceStep {
                tokens: &input,
                cache: &mut cache,
                logits: Logits::Last,
            }];
            let row = flat(&m.forward(&mut steps).unwrap().pop().unwrap().unwrap());
            let diff = max_abs_diff(&row, expected);
            assert!(diff < 1e-4, "row {i} (k={}) step {s}: {diff}", ks[i]);
            input = vec![epas_model::argmax(&row)];
        }
    }
}

#[test]
fn sharing_layers_keep_no_keys_in_the_cache() {
    let m = tiny_model();
    let ids = tokens(12, 4);
    let full = SharingPlan::none(8);
    let half = SharingPlan::new(8, 0.5).unwrap();
    let mut a = SequenceCache::new(m.config(), full);
    let mut b = SequenceCache::new(m.config(), half);
    for cache in [&mut a, &mut b] {
        let mut steps = [SequenceStep {
            tokens: &ids,
            cache,
            logits: Logits::Skip,
        }];
        m.forward(&mut steps).unwrap();
    }
    assert_eq!(
        a.bytes(),
        12 * epas_model::kv_bytes_per_token(m.config(), &full, epas_model::KvDtype::F32)
    );
    assert_eq!(
        b.bytes(),
        12 * epas_model::kv_bytes_per_token(m.config(), &half, epas_model::KvDtype::F32)
    );
    assert_eq!(b.bytes() * 4, a.bytes() * 3);
    assert!(b.keys(4).is_none() && b.keys(3).is_some());
}
