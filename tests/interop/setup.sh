#!/usr/bin/env bash
# Installs what the interop matrix needs, under DIR (a cache directory in cargo's target dir):
# Debian packages (Chromium, GStreamer, Node, Python venv), the aiortc venv, playwright-core, and
# GStreamer's whipsink/whepsrc, which Debian 12's GStreamer 1.22 lacks and so are built here from
# the gst-plugin-webrtchttp crate.
#
# Usage: tests/interop/setup.sh [--check] [DIR]
# DIR defaults to interop/ in cargo's target tmpdir (target/tmp, or $CARGO_TARGET_DIR/tmp), where
# tests/interop.rs looks. Idempotent: a second run only checks and takes seconds. Progress goes to
# stderr; the last line on stdout is a JSON object with the paths the drivers need.
# --check installs and writes nothing: when everything is in place it prints the same JSON line,
# otherwise it names what is missing on stderr and exits 1. The same tests decide what a run
# installs and what --check reports missing.
set -euo pipefail

PLAYWRIGHT_CORE_VERSION=1.61.1   # the last release that still runs on Debian 12's Node 18
WEBRTCHTTP_VERSION=0.15.4
WEBRTCHTTP_SHA256=180a9daf918387be9e9ee46acaf555bdf8df9e427c1397f4008295f00e57dad5

usage() { echo "usage: $0 [--check] [DIR]" >&2; exit 2; }
CHECK=0
DIR=
for arg in "$@"; do
    case $arg in
        --check) CHECK=1 ;;
        -*) usage ;;
        *) [ -z "$DIR" ] || usage; DIR=$arg ;;
    esac
done
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Like cargo, read a relative CARGO_TARGET_DIR against the working directory. The default is
# the "interop" folder of cargo's target tmpdir (CARGO_TARGET_TMPDIR), where the test looks.
if [ -z "$DIR" ]; then
    DIR="${CARGO_TARGET_DIR:-$(cd "$HERE/../.." && pwd)/target}/tmp"
    DIR="$DIR/interop"
fi
log() { echo "setup: $*" >&2; }

# What --check found missing; without --check, each of these is installed instead.
absent=()
if [ "$CHECK" = 1 ]; then
    if [ -d "$DIR" ]; then
        DIR=$(cd "$DIR" && pwd)
        # Wait for an installer at work here. A read-only lock, as the directory may be root's.
        if [ -e "$DIR/.setup.lock" ]; then
            exec 9<"$DIR/.setup.lock"
            flock -s 9
        fi
    else
        case $DIR in /*) ;; *) DIR="$PWD/$DIR" ;; esac
    fi
else
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    # Tests may run this concurrently; one installer at a time.
    exec 9>"$DIR/.setup.lock"
    flock 9
fi

# --- Debian packages -------------------------------------------------------------------------
# fonts-liberation: a recommend of Chromium's that --no-install-recommends would drop; pages and
# screenshots need some font. coturn: the TURN server a relay-only client plays through.
PACKAGES=(
    ca-certificates curl pkg-config build-essential
    chromium fonts-liberation
    gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-nice
    python3 python3-venv python3-gi
    coturn
    gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 gir1.2-nice-0.1
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
)
# Node may come from elsewhere (NodeSource bundles npm and conflicts with Debian's npm package).
command -v node >/dev/null || PACKAGES+=(nodejs)
command -v npm >/dev/null || PACKAGES+=(npm)

missing=()
for p in "${PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" = "ii " ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$CHECK" = 1 ]; then
        absent+=("Debian packages (installed when run as root): ${missing[*]}")
    elif [ "$(id -u)" -ne 0 ]; then
        log "missing Debian packages (run as root or install them): ${missing[*]}"
        exit 1
    else
        log "installing ${missing[*]} (log: $DIR/apt.log)"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
            >"$DIR/apt.log" 2>&1 || { tail -n 30 "$DIR/apt.log" >&2; exit 1; }
    fi
fi
if [ "$CHECK" = 0 ]; then
    command -v cargo >/dev/null || { log "cargo is required to build whipsink/whepsrc"; exit 1; }
fi

# --- aiortc venv ------------------------------------------------------------------------------
REQS="$HERE/requirements.txt"
VENV="$DIR/venv"
want=$(sha256sum "$REQS" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
    if [ "$CHECK" = 1 ]; then
        absent+=("the aiortc venv from tests/interop/requirements.txt: $VENV")
    else
        log "creating $VENV"
        rm -rf "$VENV"
        /usr/bin/python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS" >&2
        echo "$want" >"$VENV/.requirements.sha256"
    fi
fi

# --- playwright-core --------------------------------------------------------------------------
NODE_DIR="$DIR/node"
installed=$(node -p "require('$NODE_DIR/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$PLAYWRIGHT_CORE_VERSION" ]; then
    if [ "$CHECK" = 1 ]; then
        absent+=("playwright-core $PLAYWRIGHT_CORE_VERSION (found: ${installed:-none}): $NODE_DIR")
    else
        log "installing playwright-core@$PLAYWRIGHT_CORE_VERSION"
        mkdir -p "$NODE_DIR"
        npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error \
            "playwright-core@$PLAYWRIGHT_CORE_VERSION" >&2
    fi
fi

# --- whipsink / whepsrc -----------------------------------------------------------------------
GST_PLUGIN_DIR="$DIR/gst-plugins/webrtchttp-$WEBRTCHTTP_VERSION"
SO="$GST_PLUGIN_DIR/libgstwebrtchttp.so"
if [ ! -f "$SO" ] && [ "$CHECK" = 1 ]; then
    absent+=("GStreamer's whipsink/whepsrc (gst-plugin-webrtchttp $WEBRTCHTTP_VERSION): $SO")
elif [ ! -f "$SO" ]; then
    SRC="$DIR/src/gst-plugin-webrtchttp-$WEBRTCHTTP_VERSION"
    if [ ! -f "$SRC/Cargo.toml" ]; then
        log "downloading gst-plugin-webrtchttp $WEBRTCHTTP_VERSION"
        mkdir -p "$DIR/src"
        crate="$DIR/src/gst-plugin-webrtchttp-$WEBRTCHTTP_VERSION.crate"
        curl -sSfL -o "$crate" \
            "https://static.crates.io/crates/gst-plugin-webrtchttp/$WEBRTCHTTP_VERSION/download"
        echo "$WEBRTCHTTP_SHA256  $crate" | sha256sum -c --quiet - >&2
        tar -xzf "$crate" -C "$DIR/src"
    fi
    # The default features need GStreamer 1.24 (v1_24) and aws-lc's build; 1.22 and ring suffice.
    log "building gst-plugin-webrtchttp $WEBRTCHTTP_VERSION (a few minutes)"
    start=$(date +%s)
    # The ceiling keeps the version helper from stamping the plugin with this repository's commit.
    GIT_CEILING_DIRECTORIES="$DIR/src" CARGO_TARGET_DIR="$DIR/gst-target" cargo build --release --locked --quiet \
        --manifest-path "$SRC/Cargo.toml" --no-default-features --features rustls-ring >&2
    log "built in $(($(date +%s) - start)) s"
    # Only the plugin in its own directory: GStreamer scans GST_PLUGIN_PATH recursively and would
    # also load the copies in cargo's deps/.
    mkdir -p "$GST_PLUGIN_DIR"
    cp "$DIR/gst-target/release/libgstwebrtchttp.so" "$SO.tmp"
    mv "$SO.tmp" "$SO"
fi
if [ -f "$SO" ]; then
    for element in whipsink whepsrc; do
        # Not --exists: that also demands a plugin version >= GStreamer's own.
        GST_PLUGIN_PATH="$GST_PLUGIN_DIR" gst-inspect-1.0 "$element" >/dev/null 2>&1 && continue
        [ "$CHECK" = 1 ] || { log "GStreamer cannot load $element from $SO"; exit 1; }
        absent+=("GStreamer cannot load $element from $SO")
    done
fi

CHROMIUM=$(command -v chromium || true)
[ -n "$CHROMIUM" ] || absent+=("chromium on PATH")
TURNSERVER=$(command -v turnserver || true)
[ -n "$TURNSERVER" ] || absent+=("turnserver (coturn) on PATH")
if [ ${#absent[@]} -gt 0 ]; then
    for a in "${absent[@]}"; do log "missing: $a"; done
    [ "$CHECK" = 0 ] || log "--check installed nothing; $0 without --check installs these" \
        "(the Debian packages only as root)"
    exit 1
fi
log "GST_PLUGIN_PATH=$GST_PLUGIN_DIR"

printf '{"python":"%s","node_modules":"%s","gst_plugin_path":"%s","chromium":"%s","turnserver":"%s"}\n' \
    "$VENV/bin/python" "$NODE_DIR/node_modules" "$GST_PLUGIN_DIR" "$CHROMIUM" "$TURNSERVER"
