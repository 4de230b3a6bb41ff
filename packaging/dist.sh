#!/usr/bin/env bash
# The executable boxes receive, and its debug information beside it.
#
#   packaging/dist.sh [CARGO_ARGS...]     # e.g. BANALYTICS_CORE_VERSION=2.0 packaging/dist.sh
#
# Builds `banalytics-box` with the `dist` profile (fat LTO, one codegen
# unit, line tables, `opt-level = "s"` for the cold crates; Cargo.toml),
# then splits it in two beside the build,
# in target/dist/:
#   banalytics-box.debug    the debug information (`objcopy --only-keep-debug`):
#                           published with the `debug` classifier, never sent to a box;
#   banalytics-box.shipped  the executable without symbols or debug sections
#                           (`objcopy --strip-all`), with a `.gnu_debuglink`
#                           naming the .debug file, so gdb and addr2line find it.
# The package (`cargo deb -p banalytics-runtime --profile dist`) makes the same
# split itself (`dbgsym`). Prints the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/dist"
cargo build --profile dist -p banalytics-runtime --bin banalytics-box "$@"
exe="$target/banalytics-box"
objcopy --only-keep-debug "$exe" "$exe.debug"
# The debuglink is resolved beside the executable: name the file, not a path.
(cd "$target" && objcopy --strip-all --add-gnu-debuglink=banalytics-box.debug banalytics-box banalytics-box.shipped)
chmod 755 "$exe.shipped"
stat -c '%s bytes  %n' "$exe" "$exe.shipped" "$exe.debug"
