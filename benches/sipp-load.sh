#!/usr/bin/env bash
# The SIPp load benchmark for `callflow serve` (issue #4). Not a test: it
# reports figures. Needs sipp (apt-get install -y sip-tester), root for a
# large fd limit. Usage: benches/sipp-load.sh [rates...] -- [concurrencies...]
#
# 1. Call rate: calls of answer + 2 s of prompt + BYE at each rate for 10 s;
#    reports failed calls, the server's CPU% and its peak RSS.
# 2. Concurrency: C calls held 40 s while prompts stream; reports CPU%, RSS
#    per call and how late RTP packets left against their 20 ms schedule.
# 3. Call setup: INVITE, 200, ACK, BYE, 200 with no hold, 15 s at each of
#    SETUP_RATES (default 4000), split over SIPP_INSTANCES SIPp processes
#    (default 2): one SIPp tops out near 3,200 calls/s on a core here.
#    SETUP_TRANSPORT=tcp runs it over TCP (one connection per SIPp, -t t1).
set -euo pipefail
cd "$(dirname "$0")/.."
rates=(200 400 600 800 1000)
concurrency=(500 1000 2000)
if [ $# -gt 0 ]; then
  rates=(); concurrency=()
  target=rates
  for a in "$@"; do
    if [ "$a" = "--" ]; then target=concurrency; continue; fi
    if [ $target = rates ]; then rates+=("$a"); else concurrency+=("$a"); fi
  done
fi
ulimit -n 65536 || true
cargo build --release --quiet
bin=target/release/callflow
work=$(mktemp -d)
port=5990
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

start_server() {
  local tcp=()
  if [ "${SETUP_TRANSPORT:-udp}" = tcp ]; then tcp=(--tcp); fi
  $bin serve "${tcp[@]}" --listen 127.0.0.1:$port --rtp-ports 20000-45000 --flows benches/flows \
    --default-flow stream --call-records "$work/calls.jsonl" --rtp-timeout 120s \
    >"$work/serve.log" 2>&1 &
  server=$!
  sleep 1
}

stop_server() {
  kill -TERM "$server"
  wait "$server" || true
}

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

run_sipp() { # extra sipp args...
  sipp 127.0.0.1:$port -sf benches/sipp/hold.xml -i 127.0.0.1 -p 5991 -mp 16000 \
    -nostdin -buff_size 4194304 -trace_stat -stf "$work/stat.csv" -timeout 300s "$@" \
    >"$work/sipp.out" 2>&1 || true
  # Last line of the statistics: successful and failed call counts.
  awk -F';' 'NR==1 { for (i = 1; i <= NF; i++) { if ($i == "SuccessfulCall(C)") s = i; if ($i == "FailedCall(C)") f = i } }
             { last = $0 } END { split(last, v, ";"); print v[s], v[f] }' "$work/stat.csv"
}

echo
echo "== call rate: answer + 2 s prompt + BYE, 10 s at each rate"
printf '%8s %10s %8s %8s %10s\n' rate successful failed cpu% peak_rss_MB
for r in "${rates[@]}"; do
  start_server
  idle_rss=$(rss_kb "$server")
  t0=$(cpu_ticks "$server"); s0=$(date +%s.%N)
  peak=$idle_rss
  ( while kill -0 "$server" 2>/dev/null; do rss_kb "$server"; sleep 0.5; done ) >"$work/rss.txt" 2>/dev/null &
  sampler=$!
  read -r ok failed < <(run_sipp -r "$r" -m $((r * 10)) -l $((r * 4)) -d 2000)
  t1=$(cpu_ticks "$server"); s1=$(date +%s.%N)
  kill "$sampler" 2>/dev/null || true
  peak=$(sort -n "$work/rss.txt" | tail -1)
  cpu=$(echo "($t1 - $t0) / $(getconf CLK_TCK) / ($s1 - $s0) * 100" | bc -l)
  printf '%8s %10s %8s %8.0f %10.1f\n' "$r" "$ok" "$failed" "$cpu" "$(echo "$peak/1024" | bc -l)"
  stop_server
done

run_sipp_split() { # rate total: N SIPp processes, each on its own ports
  local rate=$1 total=$2 n=${SIPP_INSTANCES:-2} pids=() i transport=u1
  if [ "${SETUP_TRANSPORT:-udp}" = tcp ]; then transport=t1; fi
  for ((i = 0; i < n; i++)); do
    sipp 127.0.0.1:$port -sf benches/sipp/hold.xml -t $transport -i 127.0.0.1 -p $((5991 + i)) \
      -mp $((16000 + i * 2000)) -nostdin -buff_size 4194304 -trace_stat \
      -stf "$work/stat$i.csv" -timeout 300s -r $((rate / n)) -m $((total / n)) \
      >"$work/sipp$i.out" 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}" || true
  for ((i = 0; i < n; i++)); do
    awk -F';' 'NR==1 { for (i = 1; i <= NF; i++) { if ($i == "SuccessfulCall(C)") s = i; if ($i == "FailedCall(C)") f = i } }
               { last = $0 } END { split(last, v, ";"); print v[s], v[f] }' "$work/stat$i.csv"
  done | awk '{ ok += $1; failed += $2 } END { print ok, failed }'
}

echo
echo "== call setup over ${SETUP_TRANSPORT:-udp}: INVITE/200/ACK/BYE/200, no hold, 15 s at each rate, ${SIPP_INSTANCES:-2} SIPp processes"
printf '%8s %10s %8s %8s %10s\n' rate successful failed cpu% calls/s
for r in ${SETUP_RATES:-4000}; do
  start_server
  t0=$(cpu_ticks "$server"); s0=$(date +%s.%N)
  read -r ok failed < <(run_sipp_split "$r" $((r * 15)))
  t1=$(cpu_ticks "$server"); s1=$(date +%s.%N)
  cpu=$(echo "($t1 - $t0) / $(getconf CLK_TCK) / ($s1 - $s0) * 100" | bc -l)
  printf '%8s %10s %8s %8.0f %10.0f\n' "$r" "$ok" "$failed" "$cpu" "$(echo "$ok / ($s1 - $s0)" | bc -l)"
  stop_server
done

echo
echo "== concurrency: calls held 40 s while prompts stream"
printf '%8s %10s %8s %8s %12s  %s\n' calls successful failed cpu% kB_per_call pacing
for c in "${concurrency[@]}"; do
  start_server
  idle_rss=$(rss_kb "$server")
  ramp=$(( c / 200 + 2 ))
  run_sipp -r 200 -m "$c" -l "$c" -d 40000 >"$work/result.txt" &
  sipp_pid=$!
  sleep "$ramp"
  t0=$(cpu_ticks "$server"); s0=$(date +%s.%N)
  sleep 20
  t1=$(cpu_ticks "$server"); s1=$(date +%s.%N)
  rss=$(rss_kb "$server")
  wait "$sipp_pid" || true
  read -r ok failed <"$work/result.txt"
  stop_server
  pacing=$(grep -o 'rtp packets=.*' "$work/serve.log" | tail -1)
  cpu=$(echo "($t1 - $t0) / $(getconf CLK_TCK) / ($s1 - $s0) * 100" | bc -l)
  per_call=$(echo "($rss - $idle_rss) / $c" | bc -l)
  printf '%8s %10s %8s %8.0f %12.1f  %s\n' "$c" "$ok" "$failed" "$cpu" "$per_call" "$pacing"
done
rm -rf "$work"
