#!/usr/bin/env bash
# The INVITE rate one source can send before calls from another source
# start failing (issue #9). Not a test: it reports figures. Needs sipp
# (apt-get install -y sip-tester).
#
#   benches/flood.sh [rates...]
#
# For each rate, 127.0.0.2 (trunk `carrier`) sends INVITEs that are never
# ACKed for 10 s, while 127.0.0.3 (trunk `pbx`) places 40 calls at 4/s
# (answer, 2 s, BYE). Reported: the PBX's failed calls and 503s, and what
# admission control turned away. `unlimited` runs the same flood with the
# carrier's limits lifted, which is what callflow did before trunks.
set -euo pipefail
cd "$(dirname "$0")/.."
rates=(100 1000 5000 10000)
[ $# -gt 0 ] && rates=("$@")
ulimit -n 65536 2>/dev/null || true
cargo build --release --quiet
bin=$PWD/target/release/callflow
work=$(mktemp -d)
port=5992
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

run() {
  local rate=$1 limits=$2
  cat >"$work/config.yaml" <<YAML
listen: 127.0.0.1:$port
rtp_ports: 20000-29999
flows: tests/sipp/flows
default_flow: e2e
call_records: $work/calls.jsonl
callbacks: $work/callbacks.db
trunks:
  carrier: { sources: 127.0.0.2/32, media: 127.0.0.0/8 $limits }
  pbx: { sources: 127.0.0.3/32, media: 127.0.0.0/8 }
YAML
  rm -f "$work/calls.jsonl"
  RUST_LOG=info $bin serve --config "$work/config.yaml" >"$work/serve.log" 2>&1 &
  local server=$!
  sleep 1
  (cd "$work" && sipp 127.0.0.1:$port -sf "$OLDPWD/tests/sipp/invite_flood.xml" -i 127.0.0.2 \
    -p 5101 -mp 6100 -r "$rate" -m $((rate * 10)) -l $((rate * 10)) -nd -nostdin \
    -timeout 30s >/dev/null 2>&1) &
  local flood=$!
  sleep 1
  (cd "$work" && sipp 127.0.0.1:$port -sf "$OLDPWD/tests/sipp/admission_probe.xml" -i 127.0.0.3 \
    -p 5102 -mp 6200 -r 4 -m 40 -l 40 -nostdin -timeout 60s -trace_msg \
    -message_file "$work/pbx.log" >/dev/null 2>&1) || true
  wait "$flood" || true
  local answered refused
  answered=$(grep -c '127.0.0.3' "$work/calls.jsonl" || true)
  refused=$(grep -c '^SIP/2.0 503' "$work/pbx.log" || true)
  kill -TERM "$server"; wait "$server" || true
  local turned
  turned=$(grep 'turned away so far' "$work/serve.log" | tail -1 | grep -oE '(rate_limited|sources_blocked|over_rate|over_calls)=[0-9]+' | xargs || true)
  printf '%-8s %-9s pbx calls answered %2s/40, 503s %2s; %s\n' "$rate/s" "$3" "$answered" "$refused" "$turned"
  rm -f "$work/pbx.log"
}

for r in "${rates[@]}"; do
  run "$r" "" limits
done
for r in 100 200 1000; do
  run "$r" ", calls_per_second: 100000, max_calls: 100000, requests_per_second: 1000000" unlimited
done
