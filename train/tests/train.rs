//! The trainer on a tiny model: the training forward equals the serving forward, gradients skip
//! the Wq/Wk of sharing layers, loss goes down, checkpoints resume exactly, saved and exported
//! models give the trained logits, and bad inputs fail cleanly.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use epas_model::{LlamaConfig, SharingPlan};
use epas_train::forward::{forward, loss, ForwardContext};
use epas_train::{train, Architecture, TrainDevice, TrainOptions, TrainParams};

fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 97,
        hidden_size: 32,
        intermediate_size: 64,
        num_layers: 4,
        num_heads: 4,
        num_kv_heads: 2,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 64,
        tie_word_embeddings: true,
        rope_scaling: Default::default(),
    }
}

fn corpus(dir: &Path) -> PathBuf {
    let text = "Mr. Speaker, the state of our union is strong. We have built roads, schools \
                and 1234 bridges; the people of this nation work hard. "
        .repeat(60);
    let path = dir.join("corpus.txt");
    std::fs::write(&path, text).unwrap();
    path
}

fn tiny_options(dir: &Path, out: &str, steps: usize) -> TrainOptions {
    let mut o = TrainOptions::new(vec![corpus(dir)], dir.join(out), steps);
    o.vocab_size = 300;
    o.arch = Architecture {
        layers: 4,
        hidden: 32,
        heads: 4,
        kv_heads: 2,
        ffn: 64,
        rope_theta: 10000.0,
        context: 0,
    };
    o.seq_len = 16;
    o.batch_size = 4;
    o.lr = 3e-3;
    o.sharing_ratio = 0.5;
    o.interval = 2;
    o.eval_batches = 2;
    o
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn sources_for(layers: usize, k: usize) -> Vec<usize> {
    let src = layers - k - 1;
    (0..layers).map(|l| if l > src { src } else { l }).collect()
}

#[test]
fn training_forward_equals_the_serving_forward_at_every_ratio() {
    let model = epas_model::random_model(tiny_config(), None, 5).unwrap();
    let params = TrainParams::from_model(&model).unwrap();
    let ctx = ForwardContext::new(&params, 20, &TrainDevice::host()).unwrap();
    let tokens: Vec<u32> = (0..20).map(|i| (i * 37 + 11) % 97).collect();
    let ids = Tensor::new(tokens.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    for k in 0..4 {
        let train_logits = forward(&params, &ctx, &ids, &sources_for(4, k)).unwrap();
        let plan = SharingPlan::with_sharing_layers(4, k).unwrap();
        let serve_logits = model.forward_sequence(&tokens, plan).unwrap();
        let d = max_diff(&train_logits, &serve_logits);
        assert!(d < 1e-4, "k={k}: logits differ by {d}");
    }
}

#[test]
fn sharing_layers_wq_wk_get_no_gradient_and_the_source_gets_theirs() {
    let model = epas_model::random_model(tiny_config(), None, 6).unwrap();
    let params = TrainParams::from_model(&model).unwrap();
    let ctx = ForwardContext::new(&params, 12, &TrainDevice::host()).unwrap();
    let windows: Vec<u32> = (0..26).map(|i| (i * 13 + 3) % 97).collect();
    let windows = Tensor::from_vec(windows, (2, 13), &Device::Cpu).unwrap();
    let grads = loss(&params, &ctx, &windows, &sources_for(4, 2))
        .unwrap()
        .backward()
        .unwrap();
    for (l, layer) in params.layers.iter().enumerate() {
        let shares = l >= 2;
        assert_eq!(grads.get(&layer.wq).is_none(), shares, "layer {l} wq");
        assert_eq!(grads.get(&layer.wk).is_none(), shares, "layer {l} wk");
        for w in [&layer.wv, &layer.wo, &layer.gate, &layer.up, &layer.down] {
            let g = grads.get(w).expect("every layer trains V, O and the MLP");
            assert!(
                g.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 0.0
            );
        }
    }
    // The source layer's Q/K serve three layers: their gradient differs from a run without
    // sharing, where only their own layer uses them.
    let plain = loss(&params, &ctx, &windows, &sources_for(4, 0))
        .unwrap()
        .backward()
        .unwrap();
    let d = max_diff(
        grads.get(&params.layers[1].wq).unwrap(),
        plain.get(&params.layers[1].wq).unwrap(),
    );
    assert!(d > 0.0);
}

fn run_collecting(opts: TrainOptions, resume: bool) -> Vec<f32> {
    let mut losses = Vec::new();
    train(opts, true, resume, &mut |p| losses.push(p.record.loss)).unwrap();
    losses
}

#[test]
fn a_short_run_lowers_the_loss_and_grows_the_sharing_set() {
    let dir = tempfile::tempdir().unwrap();
    let opts = tiny_options(dir.path(), "run", 12);
    let mut sharing = Vec::new();
    let mut losses = Vec::new();
    let summary = train(opts, true, false, &mut |p| {
        losses.push(p.record.loss);
        sharing.push(p.record.sharing_layers);
    })
    .unwrap();
    assert!(summary.finished);
    let first: f32 = losses[..3].iter().sum::<f32>() / 3.0;
    let last: f32 = losses[losses.len() - 3..].iter().sum::<f32>() / 3.0;
    assert!(last < first - 0.3, "loss {first} -> {last}");
    assert_eq!(sharing, vec![0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]);
    let out = dir.path().join("run");
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "train_log.csv",
        "loss.png",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(out.join("train_log.csv")).unwrap();
    assert_eq!(csv.lines().count(), 13);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["epas"]["sharing_layers"], 2);
    assert_eq!(config["epas"]["sharing_ratio"], 0.5);
    // The served model accepts the trained ratio and refuses more.
    let (model, _) = epas_model::load_model(&out, &Device::Cpu).unwrap();
    assert!(model.info.plan(0.5, false).is_ok());
    // The maximum applies to the ratio as requested (one maximum per server): 0.6 is refused
    // although it would select the same 2 layers.
    assert!(model.info.plan(0.6, false).is_err());
    assert!(model.info.plan(0.75, false).is_err());
}

#[test]
fn resume_reproduces_the_uninterrupted_losses() {
    let dir = tempfile::tempdir().unwrap();
    let whole = run_collecting(tiny_options(dir.path(), "whole", 8), false);
    let mut first = tiny_options(dir.path(), "split", 8);
    first.stop_after = Some(3);
    let mut losses = run_collecting(first, false);
    assert_eq!(losses.len(), 3);
    let again = tiny_options(dir.path(), "split", 8);
    losses.extend(run_collecting(again, true));
    assert_eq!(losses, whole);
    let a = std::fs::read(dir.path().join("whole/model.safetensors")).unwrap();
    let b = std::fs::read(dir.path().join("split/model.safetensors")).unwrap();
    assert!(
        a == b,
        "resumed weights differ from the uninterrupted run's"
    );
}

/// The ops a GPU run uses (candle's generic differentiable ones), run on the CPU.
fn generic_ops(mut opts: TrainOptions) -> TrainOptions {
    opts.device = TrainDevice::generic(Device::Cpu);
    opts
}

#[test]
fn the_gpu_code_path_trains_like_the_fused_cpu_ops() {
    let dir = tempfile::tempdir().unwrap();
    let fused = run_collecting(tiny_options(dir.path(), "fused", 8), false);
    let generic = run_collecting(generic_ops(tiny_options(dir.path(), "generic", 8)), false);
    // The same step losses up to float summation order, while the loss falls.
    assert!(fused[0] - fused[5] > 0.3, "{fused:?}");
    for (step, (a, b)) in fused.iter().zip(&generic).enumerate() {
        assert!((a - b).abs() < 1e-3, "step {step}: fused {a}, generic {b}");
    }
    let weights = |run: &str| {
        let path = dir.path().join(run).join("model.safetensors");
        candle_core::safetensors::load(path, &Device::Cpu).unwrap()
    };
    let (a, b) = (weights("fused"), weights("generic"));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        let d = max_diff(t, &b[name]);
        assert!(d < 1e-3, "{name} differs by {d}");
    }
}

#[test]
fn a_run_on_the_gpu_code_path_resumes_exactly_and_on_another_device() {
    let dir = tempfile::tempdir().unwrap();
    let whole = run_collecting(generic_ops(tiny_options(dir.path(), "whole", 6)), false);
    let mut first = generic_ops(tiny_options(dir.path(), "split", 6));
    first.stop_after = Some(3);
    let mut losses = run_collecting(first, false);
    losses.extend(run_collecting(
        generic_ops(tiny_options(dir.path(), "split", 6)),
        true,
    ));
    assert_eq!(losses, whole);
    // Checkpoints hold host tensors: a run started on one device resumes on another.
    let mut first = generic_ops(tiny_options(dir.path(), "moved", 6));
    first.stop_after = Some(3);
    run_collecting(first, false);
    let rest = run_collecting(tiny_options(dir.path(), "moved", 6), true);
    assert_eq!(rest.len(), 3);
    for (a, b) in rest.iter().zip(&whole[3..]) {
        assert!((a - b).abs() < 1e-3, "{rest:?} vs {whole:?}");
    }
}

#[test]
fn saved_and_exported_models_give_the_trained_logits() {
    let dir = tempfile::tempdir().unwrap();
    let opts = tiny_options(dir.path(), "m", 4);
    train(opts, true, false, &mut |_| {}).unwrap();
    let out = dir.path().join("m");
    let (saved, tok) = epas_model::load_model(&out, &Device::Cpu).unwrap();
    let ckpt = epas_train::checkpoint::load(&out).unwrap();
    let params = TrainParams::from_model(&saved).unwrap();
    params.load_from(&ckpt.weights).unwrap();
    let tokens = tok.encode("the state of our union").unwrap();
    let plan = SharingPlan::with_sharing_layers(4, 2).unwrap();
    let trained = params
        .to_model(saved.info.clone())
        .unwrap()
        .forward_sequence(&tokens, plan)
        .unwrap();
    let reloaded = saved.forward_sequence(&tokens, plan).unwrap();
    assert_eq!(max_diff(&trained, &reloaded), 0.0);

    // GGUF f32 export: same logits (Q/K rows permuted to llama.cpp's layout and back).
    let gguf = dir.path().join("m.gguf");
    epas_model::export_gguf(&saved, &tok, epas_model::GgufQuant::F32, &gguf).unwrap();
    let (exported, etok) = epas_model::load_model(&gguf, &Device::Cpu).unwrap();
    assert_eq!(etok.encode("the state of our union").unwrap(), tokens);
    assert_eq!(exported.info.epas, saved.info.epas);
    let d = max_diff(
        &exported.forward_sequence(&tokens, plan).unwrap(),
        &reloaded,
    );
    assert!(d < 1e-4, "f32 GGUF logits differ by {d}");
    // A quantized export needs rows that are whole blocks.
    let q = epas_model::export_gguf(
        &saved,
        &tok,
        epas_model::GgufQuant::Q8_0,
        &dir.path().join("q.gguf"),
    );
    assert!(q.is_ok(), "{q:?}");
}

fn expect_error(opts: TrainOptions, arch_given: bool, needle: &str) {
    let out = opts.out.clone();
    let err = train(opts, arch_given, false, &mut |_| {})
        .err()
        .unwrap_or_else(|| panic!("expected an error containing {needle:?}"))
        .to_string();
    assert!(err.contains(needle), "{err:?} does not mention {needle:?}");
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "left behind in {}: {leftovers:?}",
        out.display()
    );
}

#[test]
fn bad_inputs_fail_with_clear_errors_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let empty = d.join("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    let mut o = tiny_options(d, "o1", 2);
    o.data = vec![empty];
    expect_error(o, true, "no text");

    let binary = d.join("bin.txt");
    std::fs::write(&binary, [0x66, 0x6f, 0xff, 0xfe, 0x00]).unwrap();
    let mut o = tiny_options(d, "o2", 2);
    o.data = vec![binary];
    expect_error(o, true, "not UTF-8");

    let short = d.join("short.txt");
    std::fs::write(&short, "a few words").unwrap();
    let mut o = tiny_options(d, "o3", 2);
    o.data = vec![short];
    o.tokenizer = None;
    o.vocab_size = 270;
    expect_error(o, true, "fewer than one sequence");

    let mut o = tiny_options(d, "o4", 2);
    o.sharing_ratio = 0.1; // floor(0.1 * 4) = 0 layers
    expect_error(o, true, "empty");

    let mut o = tiny_options(d, "o5", 2);
    o.sharing_ratio = 0.75;
    o.block = 2; // 3 layers, not a multiple of 2
    expect_error(o, true, "multiple");

    let file = d.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let mut o = tiny_options(d, "unused", 2);
    o.out = file.join("out");
    let err = train(o, true, false, &mut |_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("a-file"), "{err}");

    // An init checkpoint of another shape than the flags ask for.
    train(tiny_options(d, "base", 2), true, false, &mut |_| {}).unwrap();
    let mut o = tiny_options(d, "o6", 2);
    o.init = Some(d.join("base"));
    o.arch.layers = 6;
    expect_error(o, true, "layers");

    let mut o = tiny_options(d, "o7", 2);
    o.sharing_ratio = 0.75;
    o.multi_block = true; // 3 groups of 1 and 3 sources need 6 layers
    expect_error(o, true, "needs 6 layers");

    let mut o = tiny_options(d, "o8", 2);
    o.no_epas = true;
    o.flexible = true;
    expect_error(o, true, "--flexible");

    // Resuming where no run was started.
    let o = tiny_options(d, "never", 2);
    let err = train(o, true, true, &mut |_| {}).err().unwrap().to_string();
    assert!(err.contains("no checkpoint"), "{err}");
}

#[test]
fn continual_pretraining_starts_from_the_init_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train(tiny_options(d, "base", 12), true, false, &mut |_| {}).unwrap();
    let mut o = tiny_options(d, "cont", 2);
    o.init = Some(d.join("base"));
    o.lr = 1e-12;
    o.no_epas = true;
    let mut first = None;
    train(o, false, false, &mut |p| {
        first.get_or_insert(p.record.loss);
    })
    .unwrap();
    let base_log = std::fs::read_to_string(d.join("base/train_log.csv")).unwrap();
    let loss_at = |line: &str| -> f32 { line.split(',').nth(2).unwrap().parse().unwrap() };
    let lines: Vec<&str> = base_log.lines().skip(1).collect();
    let (base_first, base_last) = (loss_at(lines[0]), loss_at(lines[lines.len() - 1]));
    let first = first.unwrap();
    // Starting from trained weights, the first loss is where the base run ended, not where a
    // fresh model starts.
    assert!(
        (first - base_last).abs() < 0.5 && first < base_first - 0.3,
        "first {first}, base {base_first} -> {base_last}"
    );
}

#[test]
fn multi_block_groups_share_from_their_own_computing_sources_and_are_not_served() {
    let model = epas_model::random_model(tiny_config(), None, 7).unwrap();
    let params = TrainParams::from_model(&model).unwrap();
    let ctx = ForwardContext::new(&params, 12, &TrainDevice::host()).unwrap();
    let schedule = epas_train::ProgressiveSchedule::new(4, 2, 1, 1)
        .unwrap()
        .into_multi_block()
        .unwrap();
    let multi = schedule.sources_at(10);
    assert_eq!(multi, vec![0, 0, 2, 2]);
    let windows: Vec<u32> = (0..26).map(|i| (i * 13 + 3) % 97).collect();
    let windows = Tensor::from_vec(windows, (2, 13), &Device::Cpu).unwrap();
    let grads = loss(&params, &ctx, &windows, &multi)
        .unwrap()
        .backward()
        .unwrap();
    for (l, layer) in params.layers.iter().enumerate() {
        let computes = multi[l] == l;
        assert_eq!(grads.get(&layer.wq).is_some(), computes, "layer {l} wq");
    }
    let ids = windows.narrow(1, 0, 12).unwrap();
    let single = forward(&params, &ctx, &ids, &sources_for(4, 2)).unwrap();
    let grouped = forward(&params, &ctx, &ids, &multi).unwrap();
    assert!(
        max_diff(&single, &grouped) > 1e-3,
        "multi-block trains the single-block model"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut opts = tiny_options(dir.path(), "multi", 4);
    opts.multi_block = true;
    train(opts, true, false, &mut |_| {}).unwrap();
    let out = dir.path().join("multi");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["epas"]["schedule"]["method"], "epas-multi-block");
    let err = match epas_model::load_model(&out, &Device::Cpu) {
        Ok(_) => panic!("a multi-block checkpoint is refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("multi-block"), "{err}");
}

#[test]
fn flexible_runs_validate_every_depth_resume_exactly_and_train_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let flexible = |out: &str| {
        let mut o = tiny_options(dir.path(), out, 8);
        o.flexible = true;
        o.grad_accum = 2;
        o.eval_every = 4;
        o
    };
    let whole = run_collecting(flexible("whole"), false);
    let mut first = flexible("split");
    first.stop_after = Some(3);
    let mut losses = run_collecting(first, false);
    losses.extend(run_collecting(flexible("split"), true));
    assert_eq!(
        losses, whole,
        "a resumed flexible run draws the same depths"
    );
    let mut plain = tiny_options(dir.path(), "plain", 8);
    plain.grad_accum = 2;
    assert_ne!(run_collecting(plain, false), whole);

    let out = dir.path().join("whole");
    let csv = std::fs::read_to_string(out.join("train_log.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(
        header.ends_with(",val_ppl_k0,val_ppl_k1,val_ppl_k2"),
        "{header}"
    );
    let last = csv.lines().last().unwrap();
    let ppl: Vec<f64> = last
        .split(',')
        .rev()
        .take(3)
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(ppl.iter().all(|p| p.is_finite() && *p > 1.0), "{last}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train_summary.json")).unwrap())
            .unwrap();
    let by_depth = &summary["final_val_perplexity_by_sharing_layers"];
    assert_eq!(by_depth.as_object().unwrap().len(), 3, "{summary}");
    assert_eq!(summary["schedule"]["flexible"], true);
    // The depth the schedule reached is the run's validation loss.
    let val_loss = summary["final_val_loss"].as_f64().unwrap();
    assert!((by_depth["2"].as_f64().unwrap() - val_loss.exp()).abs() < 1e-3 * val_loss.exp());
}
