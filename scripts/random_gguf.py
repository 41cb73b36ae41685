"""Writes a LLaMA GGUF of random f16 weights with SmolLM2's tokenizer, for speed measurements of
models larger than the caches (decode bound by memory bandwidth), which cannot be downloaded
here. The text it generates is noise; only its speed means anything.

    python3 scripts/random_gguf.py OUT.gguf [--layers 8] [--hidden 2048] [--ffn 5632]
        [--heads 32] [--kv-heads 8] [--tokenizer-from models/SmolLM2-135M-Instruct.Q4_1.gguf]
"""

import argparse
import os

import gguf
import numpy as np


def string_array(reader, key):
    field = reader.fields[key]
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def scalar(reader, key):
    field = reader.fields[key]
    return field.parts[field.data[0]][0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--ffn", type=int, default=5632)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--tokenizer-from", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    src = gguf.GGUFReader(a.tokenizer_from)
    tokens = string_array(src, "tokenizer.ggml.tokens")
    merges = string_array(src, "tokenizer.ggml.merges")
    types = [int(src.fields["tokenizer.ggml.token_type"].parts[i][0])
             for i in src.fields["tokenizer.ggml.token_type"].data]
    vocab, d, f = len(tokens), a.hidden, a.ffn
    head_dim = d // a.heads
    kv = a.kv_heads * head_dim

    tmp = a.out + ".tmp"
    w = gguf.GGUFWriter(tmp, "llama")
    w.add_name(f"random-{a.layers}x{d}")
    w.add_context_length(2048)
    w.add_embedding_length(d)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(f)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(vocab)
    w.add_file_type(1)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(int(scalar(src, "tokenizer.ggml.bos_token_id")))
    w.add_eos_token_id(int(scalar(src, "tokenizer.ggml.eos_token_id")))

    rng = np.random.default_rng(a.seed)

    def matrix(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    w.add_tensor("token_embd.weight", matrix(vocab, d))
    for i in range(a.layers):
        b = f"blk.{i}"
        w.add_tensor(f"{b}.attn_norm.weight", np.ones(d, dtype=np.float32))
        w.add_tensor(f"{b}.attn_q.weight", matrix(d, d))
        w.add_tensor(f"{b}.attn_k.weight", matrix(kv, d))
        w.add_tensor(f"{b}.attn_v.weight", matrix(kv, d))
        w.add_tensor(f"{b}.attn_output.weight", matrix(d, d))
        w.add_tensor(f"{b}.ffn_norm.weight", np.ones(d, dtype=np.float32))
        w.add_tensor(f"{b}.ffn_gate.weight", matrix(f, d))
        w.add_tensor(f"{b}.ffn_up.weight", matrix(f, d))
        w.add_tensor(f"{b}.ffn_down.weight", matrix(d, f))
    w.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
