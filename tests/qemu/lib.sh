# Sourced by the host halves of the qemu tests (smoke.sh, rootkit.sh,
# modtree.sh); $repo must be set.

# kestrel_binary WHO: prints the kestrel binary to put in the guest:
# $KESTREL_BIN, or a release build into $CARGO_TARGET_DIR (default
# /tmp/qemu-target). WHO prefixes the messages.
kestrel_binary() {
  local who=$1 k=${KESTREL_BIN:-} target
  if [ -z "$k" ]; then
    target=${CARGO_TARGET_DIR:-/tmp/qemu-target}
    echo "$who: building kestrel (release) into $target" >&2
    if ! ( cd "$repo" && CARGO_TARGET_DIR=$target cargo build --release --locked -q -p kestrel ) >&2; then
      echo "$who: error: cargo build failed (set KESTREL_BIN to a built binary)" >&2
      return 1
    fi
    k=$target/release/kestrel
  fi
  [ -x "$k" ] || { echo "$who: error: kestrel binary not found: $k" >&2; return 1; }
  echo "$k"
}
