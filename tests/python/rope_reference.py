"""Reference RoPE frequencies in float64 numpy, computed as Hugging Face transformers defines
them (`rope_type` `default`, `linear` and `llama3` in `modeling_rope_utils.py`), and the
`rope_freqs` table llama.cpp's converter writes for `llama3`. model/src/rope/reference_tests.rs runs
it and compares the Rust tables with it; it is not a pytest module.

    python3 tests/python/rope_reference.py '{"head_dim": 64, "theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "positions": [0, 1, 8191]}'

prints {"inv_freq": [...], "rope_freqs": [...] (llama3 only), "angle", "cos", "sin": one row
of head_dim / 2 values per position}. Exits with status 77 when numpy is missing.
"""

import json
import math
import sys

try:
    import numpy as np
except ImportError:
    print("numpy is not installed (python3 -m pip install numpy)", file=sys.stderr)
    sys.exit(77)


def default_inv_freq(head_dim, theta):
    """theta^(-2i/head_dim) for each rotated pair i."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
    return 1.0 / np.power(theta, exponents)


def llama3_inv_freq(inv_freq, p):
    """transformers' llama3 rule: keep wavelengths below original/high, divide those above
    original/low by the factor, blend linearly in original/wavelength between."""
    factor = p["factor"]
    low, high = p["low_freq_factor"], p["high_freq_factor"]
    original = p["original_max_position_embeddings"]
    wavelen = 2.0 * math.pi / inv_freq
    blend = (original / wavelen - low) / (high - low)
    blended = (1.0 - blend) * inv_freq / factor + blend * inv_freq
    out = np.where(wavelen > original / low, inv_freq / factor, inv_freq)
    in_band = (wavelen >= original / high) & (wavelen <= original / low)
    return np.where(in_band, blended, out)


def llamacpp_rope_freqs(inv_freq, p):
    """The per-frequency divisors llama.cpp's converter stores as `rope_freqs.weight`."""
    factor = p["factor"]
    low, high = p["low_freq_factor"], p["high_freq_factor"]
    original = p["original_max_position_embeddings"]
    divisors = []
    for w in inv_freq:
        wavelen = 2.0 * math.pi / w
        if wavelen < original / high:
            divisors.append(1.0)
        elif wavelen > original / low:
            divisors.append(factor)
        else:
            blend = (original / wavelen - low) / (high - low)
            divisors.append(1.0 / ((1.0 - blend) / factor + blend))
    return np.array(divisors)


def main():
    request = json.loads(sys.argv[1])
    base = default_inv_freq(request["head_dim"], request["theta"])
    scaling = request.get("rope_scaling") or {"rope_type": "default"}
    kind = scaling["rope_type"]
    answer = {}
    if kind == "default":
        inv_freq = base
    elif kind == "linear":
        inv_freq = base / scaling["factor"]
    elif kind == "llama3":
        inv_freq = llama3_inv_freq(base, scaling)
        answer["rope_freqs"] = llamacpp_rope_freqs(base, scaling).tolist()
    else:
        raise SystemExit(f"no reference for rope_type {kind!r}")
    positions = np.array(request["positions"], dtype=np.float64)
    angle = np.outer(positions, inv_freq)
    answer.update(
        inv_freq=inv_freq.tolist(),
        angle=angle.tolist(),
        cos=np.cos(angle).tolist(),
        sin=np.sin(angle).tolist(),
    )
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
