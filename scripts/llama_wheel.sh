#!/usr/bin/env bash
# Prints the path of a llama-cpp-python wheel built with the given CMake flags, building it once.
#
#   scripts/llama_wheel.sh PIP VERSION "CMAKE FLAGS"
#
# PyPI serves llama-cpp-python as source only, and pip's own wheel cache keys a built wheel by the
# source it came from, not by the flags it was built with: a wheel built earlier with other flags
# would come back. So the wheel is kept under a folder named after the version and the flags
# (in $XDG_CACHE_HOME, else ~/.cache), and built there (about 10 minutes on 2 cores) when that
# folder has none. The folder appears whole or not at all.
set -euo pipefail

pip=$1
version=$2
flags=$3
key=$(printf '%s\n%s\n' "$version" "$flags" | sha256sum | cut -c1-16)
root="${XDG_CACHE_HOME:-$HOME/.cache}/doppeltweet/wheels"
dir="$root/llama-cpp-python-$version-$key"

if ! compgen -G "$dir/*.whl" >/dev/null; then
    mkdir -p "$root"
    work=$(mktemp -d "$root/.building.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "Building llama-cpp-python $version (once for these flags; about 10 minutes on 2 cores)." >&2
    # --no-binary: built here with these flags even where an index or --find-links offers a wheel.
    CMAKE_ARGS="$flags" "$pip" wheel -q --no-cache-dir --no-deps --no-binary llama-cpp-python \
        --wheel-dir "$work/wheel" "llama-cpp-python==$version" >&2
    rm -rf "$dir"
    mv "$work/wheel" "$dir"
fi
compgen -G "$dir/*.whl" | head -n 1
