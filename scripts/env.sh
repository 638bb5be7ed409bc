# Sourced by the scripts of this folder, not run by itself:
#
#   . "$(dirname "$0")/env.sh"
#
# Makes CARGO_TARGET_DIR absolute and exports it (a relative one is taken from the folder the
# script was started in, as cargo takes it), moves to the repository's root, and sets
#   target    the cargo target folder, absolute ("target" in the repository by default)
#   release   "$target/release", where `cargo build --release` puts the binaries
# and installs the toolchain that rust-toolchain.toml pins when rustup is there and lacks it
# (rustup 1.28 and later no longer install it on first use).
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    CARGO_TARGET_DIR=$(realpath -m -- "$CARGO_TARGET_DIR")
    export CARGO_TARGET_DIR
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
release="$target/release"
if command -v rustup >/dev/null && ! rustup run "$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)" true 2>/dev/null; then
    rustup toolchain install >&2
fi
