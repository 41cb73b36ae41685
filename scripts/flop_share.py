"""The FLOP share that sharing ratio 0.5 saves on SmolLM2-135M, from the model shape alone: the
sharing layers skip Wq/Wk, RoPE, Q K^T and the softmax (they reuse the source layer's attention
probabilities). Prefill of `ctx` tokens computes logits for the last token only; a decode step
of `epas bench --decode-context ctx --gen-tokens 64` attends to ctx .. ctx + 63 positions.
Run alone it prints the shares at 512 and 2048; scripts/bench-cpu.sh imports `flop_share`."""

# SmolLM2-135M shape (the GGUF's llama.* keys).
D, KV, FFN, VOCAB, LAYERS, HEADS = 576, 192, 1536, 49152, 30, 9
SHARING = int(0.5 * LAYERS)
DECODE_STEPS = 64


def layer_flops(ctx, sharing):
    """FLOPs of one token through every layer, attending to `ctx` positions, with `sharing`
    layers sharing (no LM head)."""
    dense = 2 * D * (D + 2 * KV) + 2 * D * D + 6 * D * FFN
    attn_scores = 2 * ctx * D + 5 * ctx * HEADS + 6 * (D + KV)  # Q K^T, softmax, RoPE
    attn_apply = 2 * ctx * D
    skipped = 2 * D * (D + KV) + attn_scores
    return LAYERS * (dense + attn_scores + attn_apply) - sharing * skipped


def step_flops(ctx, prefill, sharing):
    head = 2 * D * VOCAB
    if prefill:
        # Token i attends to i positions (mean (ctx + 1) / 2); one row of logits.
        return ctx * layer_flops((ctx + 1) / 2, sharing) + head
    # The mean decode step of DECODE_STEPS after a context of ctx.
    return layer_flops(ctx + (DECODE_STEPS - 1) / 2, sharing) + head


def flop_share(ctx, prefill):
    """The share of the FLOPs of ratio 0 that ratio 0.5 does not do."""
    return 1 - step_flops(ctx, prefill, SHARING) / step_flops(ctx, prefill, 0)


if __name__ == "__main__":
    print("| phase | context | FLOP share saved by ratio 0.5 |")
    print("|---|---|---|")
    for ctx in (512, 2048):
        for phase, prefill in (("prefill", True), ("decode", False)):
            print(f"| {phase} | {ctx} | {flop_share(ctx, prefill):.1%} |")
