//! The trainer and RoPE scaling: its forward rotates with a checkpoint's scaled frequencies, and
//! a scaling the HF writer cannot describe is refused before training starts.

#[path = "../../model/tests/common/mod.rs"]
mod common;

use candle_core::{Device, Tensor};
use common::scaled::{llama3, logits, odd_table, sharp_model};
use common::{max_abs_diff, smollm2};
use epas_model::export_gguf;
use epas_model::GgufQuant;
use epas_model::RopeScaling;
use epas_train::forward::{forward, ForwardContext};
use epas_train::{train, TrainDevice, TrainOptions, TrainParams};

/// The trainer's forward rotates with the scaled table too: it equals the serving forward of a
/// scaled model.
#[test]
fn the_training_forward_uses_the_scaled_frequencies() {
    let model = sharp_model(40, llama3());
    let params = TrainParams::from_model(&model).unwrap();
    let ids: Vec<u32> = (0..200u32).map(|i| (i * 7919) % 49152).collect();
    let ctx = ForwardContext::new(&params, ids.len(), &TrainDevice::host()).unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let sources: Vec<usize> = (0..model.config().num_layers).collect();
    let trained = forward(&params, &ctx, &input, &sources).unwrap();
    let trained: Vec<f32> = trained.flatten_all().unwrap().to_vec1().unwrap();
    let d = max_abs_diff(&trained, &logits(&model));
    assert!(d < 1e-3, "training and serving forwards differ by {d}");
    let unscaled = logits(&sharp_model(40, RopeScaling::None));
    assert!(max_abs_diff(&trained, &unscaled) > 1e-2);
}

/// `epas train --init` saves HF folders: a scaling they cannot describe is refused before any
/// step runs.
#[test]
fn training_from_a_table_the_hf_writer_cannot_describe_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let (_, tok) = smollm2();
    let init = dir.path().join("init.gguf");
    export_gguf(&sharp_model(70, odd_table()), tok, GgufQuant::F32, &init).unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, "The state of our union is strong. ".repeat(200)).unwrap();
    let mut o = TrainOptions::new(vec![corpus], dir.path().join("out"), 2);
    o.init = Some(init);
    let mut steps = 0;
    let err = train(o, false, false, &mut |_| steps += 1)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("cannot be written to an HF config.json"),
        "{err}"
    );
    assert_eq!(steps, 0);
}
