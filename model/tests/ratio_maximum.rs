//! One maximum per model: every ratio refusal names the same maximum as
//! `ModelInfo::max_sharing_ratio` (what `/v1/models` reports), and that maximum applies to the
//! ratio as the caller states it, not to the layer count it rounds to.

use epas_model::{EpasMeta, LlamaConfig, ModelError, ModelInfo, RopeScaling};

/// Eight layers, trained to share at ratio 0.5 (four layers), like the built-in model.
fn trained_half() -> ModelInfo {
    ModelInfo {
        name: "eight-layers".into(),
        config: LlamaConfig {
            vocab_size: 16,
            hidden_size: 8,
            intermediate_size: 16,
            num_layers: 8,
            num_heads: 2,
            num_kv_heads: 2,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 64,
            tie_word_embeddings: true,
            rope_scaling: RopeScaling::default(),
        },
        epas: Some(EpasMeta {
            sharing_ratio: 0.5,
            sharing_layers: 4,
            schedule: None,
        }),
        weight_format: "f32".into(),
    }
}

fn refused_max(info: &ModelInfo, ratio: f64, allow: bool) -> f64 {
    match info.plan(ratio, allow) {
        Err(ModelError::RatioAboveMax { max, .. }) => max,
        other => panic!("ratio {ratio} (allow {allow}): expected RatioAboveMax, got {other:?}"),
    }
}

#[test]
fn every_refusal_names_the_maximum_the_model_reports() {
    let info = trained_half();
    assert_eq!(info.max_sharing_ratio(false), 0.5);
    for ratio in [0.9, 0.875, 0.6, 0.51] {
        assert_eq!(refused_max(&info, ratio, false), 0.5, "ratio {ratio}");
    }
    assert_eq!(info.max_sharing_ratio(true), 0.875);
    assert_eq!(refused_max(&info, 0.9, true), 0.875);
    assert_eq!(refused_max(&info, 1.0, true), 0.875);
    assert!(matches!(
        info.plan(f64::INFINITY, false),
        Err(ModelError::RatioNotFinite(_))
    ));
}

#[test]
fn ratios_up_to_the_maximum_are_served_with_their_effective_layers() {
    let info = trained_half();
    assert_eq!(info.plan(0.5, false).unwrap().sharing_layers(), 4);
    assert_eq!(info.plan(0.3, false).unwrap().sharing_layers(), 2);
    assert_eq!(info.plan(0.6, true).unwrap().sharing_layers(), 4);
    assert_eq!(info.plan(0.875, true).unwrap().sharing_layers(), 7);
}
