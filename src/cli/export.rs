//! `epas export`: a checkpoint as a (quantized) GGUF file with `epas.*` metadata.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use epas_model::load::{export_gguf, GgufQuant};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// HF folder (e.g. the --out of `epas train`) or GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    /// GGUF file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Write GGUF (the only format; the flag keeps the command explicit).
    #[arg(long, default_value_t = true)]
    pub gguf: bool,
    /// Storage of the matrices: q8_0, q5_0, q4_1, q4_0, q4_k (Q5_0 where rows are not whole
    /// 256-value super-blocks, as llama.cpp), f16 or f32. The 4- and 5-bit formats and q8_0 run
    /// on the SIMD kernels.
    #[arg(long, default_value = "q8_0")]
    pub quant: GgufQuant,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let (model, tokenizer) = epas_model::load_model(&args.model, &candle_core::Device::Cpu)
        .with_context(|| format!("loading {}", args.model.display()))?;
    export_gguf(&model, &tokenizer, args.quant, &args.out)
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
