#!/usr/bin/env bash
# Check the Docker image as an operator would: build it, run it with published ports, wait for
# its health check, then /healthz, the user it runs as, a WHIP publish and a WHEP watch through
# the published ports with the bundled examples, a configuration file mounted at
# /etc/wishcast/wishcast.toml, and a graceful `docker stop`. Exits non-zero on the first failed
# check. Needs a running Docker daemon, curl and cargo (the examples are built on the host).
#
# Environment:
#   IMAGE       image tag to build and run (default wishcast:check)
#   BUILD_ARGS  extra arguments for `docker build`, e.g. "--pull" or "--build-arg …"
#   NO_BUILD=1  run an already built IMAGE
#   HTTP_PORT   host TCP port for HTTP (default 38080)
#   UDP_PORT    first of two host UDP ports for the two shards (default 38189); the container
#               uses the same numbers, since its announced candidate carries the port
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${IMAGE:-wishcast:check}
HTTP_PORT=${HTTP_PORT:-38080}
UDP_PORT=${UDP_PORT:-38189}
UDP_LAST=$((UDP_PORT + 1))
NAME=wishcast-check-$$
WATCH_SECONDS=5
FPS=30

work=$(mktemp -d)
publisher=
fail() {
  echo "FAIL: $*" >&2
  if docker inspect "$NAME" >/dev/null 2>&1; then
    echo "--- last container log lines:" >&2
    docker logs --tail 30 "$NAME" >&2 2>&1 || true
  fi
  exit 1
}
ok() { echo "ok: $*"; }
cleanup() {
  if [ -n "$publisher" ]; then kill "$publisher" 2>/dev/null || true; fi
  docker rm -f "$NAME" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

for tool in docker curl cargo; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool not found"
done
docker info >/dev/null 2>&1 || fail "no Docker daemon answers (is dockerd running, may this user use it?)"

if [ "${NO_BUILD:-}" != 1 ]; then
  echo "== docker build -t $IMAGE ${BUILD_ARGS:-}"
  # shellcheck disable=SC2086 # BUILD_ARGS is a list of arguments
  if ! docker build ${BUILD_ARGS:-} -t "$IMAGE" . >"$work/build.log" 2>&1; then
    tail -n 30 "$work/build.log" >&2
    for base in $(awk 'toupper($1) == "FROM" { print $2 }' Dockerfile); do
      if ! docker image inspect "$base" >/dev/null 2>&1; then
        echo "hint: base image $base is not present and could not be pulled;" \
          "pull it from a reachable registry or mirror (docker pull, docker load) and retry" >&2
      fi
    done
    fail "docker build"
  fi
  ok "image built: $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
fi

echo "== examples (cargo build --release --examples)"
cargo build --release --locked --examples --message-format=json-render-diagnostics \
  >"$work/cargo.json" || fail "building the examples"
example() {
  grep -o "\"executable\":\"[^\"]*/examples/$1\"" "$work/cargo.json" | tail -n 1 | cut -d'"' -f4
}
publish=$(example publish)
watch=$(example watch)
[ -x "$publish" ] && [ -x "$watch" ] || fail "example binaries not found in cargo's output"

# Waits until the container's health check reports healthy; fails if it exits or turns unhealthy.
wait_healthy() {
  local status
  for _ in $(seq 1 60); do
    status=$(docker inspect --format '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$NAME")
    case $status in
      "running healthy") return 0 ;;
      "running unhealthy") fail "health check reports unhealthy: $(docker inspect --format '{{json .State.Health.Log}}' "$NAME")" ;;
      running*) sleep 1 ;;
      *) fail "container is $status" ;;
    esac
  done
  fail "not healthy after 60 s ($status)"
}

# $1: what a failure means, besides the status.
healthz() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$HTTP_PORT/healthz") || true
  [ "$code" = 200 ] || fail "GET /healthz on host port $HTTP_PORT answered ${code:-nothing}, expected 200${1:+ ($1)}"
  ok "/healthz 200"
}

echo "== run with published ports (README: announce the host's address)"
docker run -d --name "$NAME" -p "$HTTP_PORT:8080" -p "$UDP_PORT-$UDP_LAST:$UDP_PORT-$UDP_LAST/udp" \
  -e WISHCAST_MEDIA__SHARDS=2 -e WISHCAST_MEDIA__UDP_BASE_PORT="$UDP_PORT" \
  -e WISHCAST_MEDIA__PUBLIC_IPS='["127.0.0.1"]' "$IMAGE" >/dev/null ||
  fail "docker run (are ports $HTTP_PORT/tcp and $UDP_PORT-$UDP_LAST/udp free? set HTTP_PORT, UDP_PORT)"
wait_healthy
ok "health check: healthy"
healthz
uid=$(docker exec "$NAME" cat /proc/1/status | awk '/^Uid:/ { print $2 }')
[ -n "$uid" ] && [ "$uid" != 0 ] || fail "the server runs as uid ${uid:-?}, expected non-root"
ok "server runs as uid $uid"

echo "== WHIP publish and WHEP watch through the published ports"
"$publish" "http://127.0.0.1:$HTTP_PORT/whip/check" --fps "$FPS" --seconds $((WATCH_SECONDS + 4)) \
  >"$work/publish.log" 2>&1 &
publisher=$!
for _ in $(seq 1 100); do
  grep -q '^connected' "$work/publish.log" && break
  kill -0 "$publisher" 2>/dev/null || break
  sleep 0.1
done
grep -q '^connected' "$work/publish.log" || { cat "$work/publish.log" >&2; fail "publisher did not connect"; }
"$watch" "http://127.0.0.1:$HTTP_PORT/whep/check" --seconds "$WATCH_SECONDS" >"$work/watch.log" 2>&1 ||
  { cat "$work/watch.log" >&2; fail "watch exited with an error"; }
# Sums the viewer's report lines, "t=  1s video N frames/s … (keyframes K, missing M,
# discontinuities D) | audio N frames/s … (…)"; missing and discontinuities of both kinds.
read -r vframes keyframes aframes missing discont < <(awk '
  function count(text, word,    n, parts, i, sum) {
    n = split(text, parts, word " ")
    for (i = 2; i <= n; i++) sum += parts[i] + 0
    return sum
  }
  /^t=/ {
    split($0, half, "|")
    v += count(half[1], "video"); k += count(half[1], "keyframes"); a += count(half[2], "audio")
    m += count($0, "missing"); d += count($0, "discontinuities")
  }
  END { print v + 0, k + 0, a + 0, m + 0, d + 0 }' "$work/watch.log")
cat "$work/watch.log"
# At least 80% of what the publisher sent while the viewer watched (slack for timing); nothing
# may be missing, loopback loses no packets.
min_video=$((WATCH_SECONDS * FPS * 8 / 10))
min_audio=$((WATCH_SECONDS * 50 * 8 / 10))
[ "$vframes" -ge "$min_video" ] || fail "viewer got $vframes video frames in ${WATCH_SECONDS} s, expected at least $min_video"
[ "$aframes" -ge "$min_audio" ] || fail "viewer got $aframes audio frames in ${WATCH_SECONDS} s, expected at least $min_audio"
[ "$keyframes" -ge 1 ] || fail "viewer got no keyframe"
[ "$missing" -eq 0 ] || fail "viewer reports $missing missing frames"
[ "$discont" -eq 0 ] || fail "viewer reports $discont discontinuities"
grep -q '^session ended' "$work/watch.log" && fail "the gateway ended the viewer's session"
grep -q '^DELETE -> 200' "$work/watch.log" || fail "viewer's DELETE did not get 200"
ok "viewer received $vframes video frames ($keyframes keyframes) and $aframes audio frames, none missing"
wait "$publisher" || { cat "$work/publish.log" >&2; fail "publisher exited with an error"; }
publisher=
grep -q '^DELETE -> 200' "$work/publish.log" || { cat "$work/publish.log" >&2; fail "publisher's DELETE did not get 200"; }
ok "publisher finished"

echo "== docker stop (SIGTERM)"
start=$(date +%s%N)
docker stop -t 10 "$NAME" >/dev/null
took_ms=$((($(date +%s%N) - start) / 1000000))
code=$(docker inspect --format '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || fail "exit code $code after docker stop, expected 0"
[ "$took_ms" -lt 5000 ] || fail "docker stop took $took_ms ms"
ok "stopped in $took_ms ms with exit code 0"
docker rm "$NAME" >/dev/null

echo "== configuration file mounted at /etc/wishcast/wishcast.toml"
printf '[http]\nlisten = "0.0.0.0:9090"\n' >"$work/wishcast.toml"
chmod 644 "$work/wishcast.toml"
docker run -d --name "$NAME" -p "$HTTP_PORT:9090" \
  -v "$work/wishcast.toml:/etc/wishcast/wishcast.toml:ro" "$IMAGE" >/dev/null || fail "docker run with the file"
# Healthy only if the health check read the same file as the server.
wait_healthy
ok "health check: healthy"
healthz "the server does not listen on the file's port 9090: was the file read?"
docker stop -t 10 "$NAME" >/dev/null
code=$(docker inspect --format '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || fail "exit code $code after docker stop, expected 0"

echo "all Docker checks passed"
