#!/usr/bin/env bash
# How soon a confirmed callback is dialled when its queue is free (issue
# #5). Not a test: it reports figures. Needs sipp (apt-get install -y
# sip-tester). Usage: benches/callback-dial.sh [callers] [rate]
#
# SIPp books callbacks from distinct numbers (flow cb, route 8002, confirm by
# SIP INFO); a second SIPp plays the trunk and answers each outbound INVITE
# with 486. The server logs, for every INVITE it sends, the time since the
# request was filed (before its fsync'd commit, so the commit is included):
# `since_request_us`. Reported: min, median, p95 and max of those.
set -euo pipefail
cd "$(dirname "$0")/.."
callers=${1:-200}
rate=${2:-20}
cargo build --release --quiet
bin=target/release/callflow
work=$(mktemp -d)
port=5994
trunk=5995
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
cat >"$work/config.yaml" <<YAML
trunk: { address: "127.0.0.1:$trunk", domain: trunk.test, from: "37160000000" }
dialler: { max_attempts: 1, max_in_progress: 1000, poll: 1s }
YAML
sipp -sf benches/sipp/trunk_busy.xml -i 127.0.0.1 -p $trunk -m "$callers" -nostdin \
  -timeout 300s >"$work/trunk.out" 2>&1 &
trunk_pid=$!
RUST_LOG=info $bin serve --config "$work/config.yaml" --listen 127.0.0.1:$port \
  --rtp-ports 46000-47999 --flows tests/sipp/flows --default-flow e2e --route 8002=cb \
  --call-records "$work/calls.jsonl" --callbacks "$work/callbacks.db" >"$work/serve.log" 2>&1 &
server=$!
sleep 1
sipp 127.0.0.1:$port -sf benches/sipp/book.xml -i 127.0.0.1 -p 5996 -mp 16000 -nostdin \
  -r "$rate" -m "$callers" -timeout 300s >"$work/callers.out" 2>&1 || echo "some booking calls failed (see $work)"
wait "$trunk_pid" || echo "the trunk SIPp saw failures (see $work)"
kill -TERM "$server"; wait "$server" || true
sed -n 's/.*since_request_us=\([0-9]*\).*/\1/p' "$work/serve.log" | sort -n >"$work/us.txt"
n=$(wc -l <"$work/us.txt")
pick() { sed -n "$(( ($1 * n + 99) / 100 ))p" "$work/us.txt"; }
if [ "$n" -eq 0 ]; then echo "no callback was dialled (see $work/serve.log)"; exit 1; fi
echo "callbacks dialled: $n of $callers booked at $rate/s"
echo "request filed -> outbound INVITE (µs): min $(head -1 "$work/us.txt")  median $(pick 50)  p95 $(pick 95)  max $(tail -1 "$work/us.txt")"
rm -rf "$work"
