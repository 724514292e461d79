#!/usr/bin/env bash
# Builds the seed corpora (fuzz/corpus/<target>/) from real files: objects
# of a repository treectl commits from this checkout's docs, real .debs
# (the benchmark corpus, else `apt-get download`), tars exported from them,
# apt's own Release and Packages files, lockfiles and signed indexes written
# by treectl, and Release files signed with the fuzz key.
# Usage: fuzz/seed.sh   (needs a built treectl: cargo build -p treectl)
set -euo pipefail
cd "$(dirname "$0")"
fuzz=$PWD
top=$(cd .. && pwd)
treectl=${TREECTL:-${CARGO_TARGET_DIR:-$top/target}/debug/treectl}
[[ -x $treectl ]] || { echo "seed.sh: no treectl at $treectl; run cargo build -p treectl or set TREECTL" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
c=$fuzz/corpus
mkdir -p "$c"/{object_decode,filez_decode,pack_frames,signed_index,lockfile_parse,apt_index,apt_signature,import_tar,import_deb,export_round_trip,delta_read}

# Real .debs: small ones from the benchmark corpus, else from the archive.
mkdir -p "$work/debs"
if compgen -G "$top/../shared/corpus/debs/*.deb" >/dev/null; then
  find "$top/../shared/corpus/debs" -name '*.deb' -size -200k | sed -n '1,20p' | xargs -r cp -t "$work/debs"
else
  (cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root base-files zlib1g libgcc-s1 gcc-12-base netbase >/dev/null 2>&1) || true
fi
for d in "$work"/debs/*.deb; do
  cp "$d" "$c/import_deb/"
  # The data member as a plain tar (and compressed, for the sniffer).
  dpkg-deb --fsys-tarfile "$d" >"$c/import_tar/$(basename "$d" .deb).tar"
done
tars=("$c"/import_tar/*.tar)
for t in "${tars[@]:0:3}"; do
  gzip -9nc "$t" >"$t.gz"; xz -c "$t" >"$t.xz"; zstd -qc "$t" >"$t.zst"
done
# Small tars round-trip fastest.
find "$c/import_tar" -name '*.tar' -size -64k -exec cp -t "$c/export_round_trip" {} +

# A repository of real trees: docs and a .deb, archive mode, signed and
# published, so objects, .filez, summary.json and signatures are real.
repo=$work/repo
"$treectl" --repo "$repo" init --mode archive >/dev/null
"$treectl" keygen --out "$work/key" >/dev/null
"$treectl" --repo "$repo" commit --ref docs --tree "$top/docs" --subject docs >/dev/null
debs=("$work"/debs/*.deb)
first=${debs[0]}
[[ -f $first ]] && "$treectl" --repo "$repo" commit --ref seed-deb --subject deb --deb "$first" >/dev/null
"$treectl" --repo "$repo" publish "$repo" os/stable docs --sign-key "$work/key" >/dev/null
n=0
while IFS= read -r f; do
  n=$((n + 1))
  case $f in
    *.dirtree) printf '\0' | cat - "$f" >"$c/object_decode/tree-$n" ;;
    *.dirmeta) printf '\1' | cat - "$f" >"$c/object_decode/dirmeta-$n" ;;
    *.commit) printf '\2' | cat - "$f" >"$c/object_decode/commit-$n" ;;
    *.filez)
      cp "$f" "$c/filez_decode/filez-$n"
      # The header alone, for FileHeader::decode.
      python3 - "$f" "$c/object_decode/header-$n" <<'PY'
import struct, sys
d = open(sys.argv[1], 'rb').read()
n = struct.unpack('<I', d[:4])[0]
open(sys.argv[2], 'wb').write(b'\x03' + d[4:4 + n])
PY
      ;;
  esac
done < <(find "$repo/objects" -type f | sort | head -400)
find "$repo" \( -name summary.json -o -path '*/signatures/*' \) -type f -exec cp -t "$c/signed_index" {} + 2>/dev/null || true
# Pack framing (docs/http-api.md): real objects of that repository in a
# pack, as an upload or a batched fetch carries them.
python3 - "$repo" "$c/pack_frames/pack-real" <<'PY'
import os, struct, sys
repo, out = sys.argv[1], sys.argv[2]
tags = {'.filez': 1, '.dirtree': 2, '.dirmeta': 3, '.commit': 4}
body = bytearray(b'TCPACK\x00\x01')
n = 0
for root, _, files in sorted(os.walk(os.path.join(repo, 'objects'))):
    for f in sorted(files):
        stem, ext = os.path.splitext(f)
        if ext not in tags or n >= 40:
            continue
        data = open(os.path.join(root, f), 'rb').read()
        body += bytes([tags[ext]]) + bytes.fromhex(os.path.basename(root) + stem)
        body += struct.pack('<Q', len(data)) + data
        n += 1
body.append(0)
open(out, 'wb').write(body)
PY

# Lockfiles: the documented example and one lock add writes.
# shellcheck disable=SC2016 # backquotes, not an expansion
sed -n '/^```toml/,/^```/p' "$top/docs/lockfile.md" | sed '1d;$d' >"$c/lockfile_parse/lockfile-md.lock"
for d in "$work"/debs/*.deb; do
  "$treectl" --repo "$repo" lock add --lockfile "$c/lockfile_parse/local.lock" --deb "$d" >/dev/null 2>&1 || true
done

# apt's own lists: real Release files and the head of real Packages files.
for f in /var/lib/apt/lists/*_InRelease; do
  [[ -f $f ]] || continue
  cp "$f" "$c/apt_signature/$(basename "$f" | md5sum | cut -c1-8)-inrelease"
  printf '\1' | cat - "$f" >"$c/apt_signature/$(basename "$f" | md5sum | cut -c1-8)-inrelease-1"
  sed -n '/^Origin/,/^-----BEGIN PGP SIGNATURE/p' "$f" | sed -n '1,200p' >"$c/apt_index/$(basename "$f" | md5sum | cut -c1-8)-release"
done
for f in /var/lib/apt/lists/*_Packages*; do
  [[ -f $f ]] || continue
  /usr/lib/apt/apt-helper cat-file "$f" 2>/dev/null | sed -n '1,600p' >"$c/apt_index/$(basename "$f" | md5sum | cut -c1-8)-packages" || true
done
# Release files signed by the fuzz key, clearsigned and detached.
export GNUPGHOME=$work/gnupg
mkdir -m 700 "$GNUPGHOME"
gpg --batch --quiet --import "$fuzz/keys/fuzz-archive.secret.asc"
rels=("$c"/apt_index/*-release)
rel=${rels[0]}
if [[ -f $rel ]]; then
  gpg --batch --quiet --yes --pinentry-mode loopback --passphrase '' --clearsign -o "$work/InRelease" "$rel"
  printf '\1' | cat - "$work/InRelease" >"$c/apt_signature/fuzz-signed-inrelease"
  gpg --batch --quiet --yes --pinentry-mode loopback --passphrase '' --detach-sign -o "$work/Release.gpg" "$rel"
  { printf '\2'; cat "$rel"; printf '\0'; cat "$work/Release.gpg"; } >"$c/apt_signature/fuzz-signed-detached"
fi
printf '\0' | cat - "$fuzz/keys/fuzz-archive.asc" >"$c/apt_signature/keyring-armored"
{ printf '\0'; cat /usr/share/keyrings/debian-archive-keyring.gpg; } >"$c/apt_signature/keyring-binary" 2>/dev/null || true

# The delta reader edits a real delta it makes itself: an odd first byte
# and no edits is that delta as it is; a few edits and a cut to start from.
printf '\1' >"$c/delta_read/the-real-delta"
printf '\1\0\200\377' >"$c/delta_read/one-byte-flipped"
printf '\3\0\300\0' >"$c/delta_read/cut-at-three-quarters"

for d in "$c"/*/; do printf '%-20s %4d files\n' "$(basename "$d")" "$(find "$d" -type f | wc -l)"; done
