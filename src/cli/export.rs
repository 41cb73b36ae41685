//! `epas export`: a checkpoint as a (quantized) GGUF file with `epas.*` metadata.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use epas_builtin::BUILTIN_NAME;
use epas_model::export_gguf;
use epas_model::{GgufQuant, QuantScheme};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// HF folder (e.g. the --out of `epas train`), GGUF file, or `builtin` (the model compiled
    /// into the binary).
    #[arg(long)]
    pub model: PathBuf,
    /// GGUF file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Write GGUF (the only format; the flag keeps the command explicit).
    #[arg(long, default_value_t = true)]
    pub gguf: bool,
    /// Storage of the matrices: q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0, f16 or f32.
    /// q6_k / q5_k / q4_k fall back to q8_0 / q5_1 / q5_0 for rows that are not whole 256-value
    /// super-blocks, as llama.cpp's quantizer does. Every quantized choice runs on the SIMD
    /// kernels.
    #[arg(long, default_value = "q8_0")]
    pub quant: GgufQuant,
    /// Store the LM head (and a tied embedding table) in --quant too. By default, under 6-bit
    /// formats it is kept at q6_k (q8_0 where rows are not whole super-blocks), as llama.cpp's
    /// quantizer does.
    #[arg(long)]
    pub pure: bool,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let device = candle_core::Device::Cpu;
    let (model, tokenizer) = if args.model.as_path() == std::path::Path::new(BUILTIN_NAME) {
        epas_builtin::load_builtin(&device).context("loading the built-in model")?
    } else {
        epas_model::load_model(&args.model, &device)
            .with_context(|| format!("loading {}", args.model.display()))?
    };
    let scheme = QuantScheme {
        quant: args.quant,
        pure: args.pure,
    };
    export_gguf(&model, &tokenizer, scheme, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "wrote {} ({:.1} MB, {:?})",
        args.out.display(),
        bytes as f64 / 1e6,
        args.quant
    );
    Ok(())
}
