#!/usr/bin/env bash
# Generate the callflow IVR prompt WAV files from prompts.txt.
#
# Usage: ./make-prompts.sh [NAME...]
#
#   With no arguments, every prompt in prompts.txt is (re)generated.
#   With arguments, only the named prompts are regenerated.
#
# prompts.txt lines are "name<TAB>text to speak"; lines starting with '#'
# and blank lines are ignored.  Each prompt becomes NAME.wav in this
# directory: 8000 Hz, mono, 16-bit signed PCM, leading/trailing silence
# trimmed, peak-normalised to -3 dBFS.
#
# Requires espeak-ng and sox (Debian: apt-get install -y espeak-ng sox).
# Output is deterministic: same inputs and tool versions give the same bytes.
set -euo pipefail

VOICE="en-gb"
SPEED=165          # words per minute
RATE=8000          # output sample rate (Hz)
NORM_DB=-3         # peak level (dBFS)
# Silence trimming: drop sound below THRESH at the start/end, then pad a
# short fixed gap back on so prompts do not start/stop abruptly.
THRESH="0.5%"
PAD_START=0.05
PAD_END=0.10

cd "$(dirname "${BASH_SOURCE[0]}")"

missing=()
for tool in espeak-ng sox; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "make-prompts.sh: missing required tool(s): ${missing[*]}" >&2
    echo "Install them with: apt-get install -y espeak-ng sox" >&2
    exit 1
fi

PROMPTS_FILE="prompts.txt"
if [[ ! -f "$PROMPTS_FILE" ]]; then
    echo "make-prompts.sh: $PWD/$PROMPTS_FILE not found" >&2
    exit 1
fi

# Parse prompts.txt into parallel arrays.
names=()
texts=()
lineno=0
while IFS= read -r line || [[ -n "$line" ]]; do
    lineno=$((lineno + 1))
    line="${line%$'\r'}"
    [[ -z "${line//[[:space:]]/}" || "$line" == \#* ]] && continue
    if [[ "$line" != *$'\t'* ]]; then
        echo "make-prompts.sh: $PROMPTS_FILE:$lineno: expected name<TAB>text" >&2
        exit 1
    fi
    name="${line%%$'\t'*}"
    text="${line#*$'\t'}"
    if [[ ! "$name" =~ ^[A-Za-z0-9_-]+$ ]]; then
        echo "make-prompts.sh: $PROMPTS_FILE:$lineno: bad prompt name '$name'" >&2
        exit 1
    fi
    if [[ -z "${text//[[:space:]]/}" ]]; then
        echo "make-prompts.sh: $PROMPTS_FILE:$lineno: empty text for '$name'" >&2
        exit 1
    fi
    for existing in "${names[@]}"; do
        if [[ "$existing" == "$name" ]]; then
            echo "make-prompts.sh: $PROMPTS_FILE:$lineno: duplicate prompt '$name'" >&2
            exit 1
        fi
    done
    names+=("$name")
    texts+=("$text")
done <"$PROMPTS_FILE"

# Decide which prompts to build.
declare -A wanted=()
if (($#)); then
    for arg in "$@"; do
        arg="${arg%.wav}"
        found=0
        for name in "${names[@]}"; do
            [[ "$name" == "$arg" ]] && found=1 && break
        done
        if ((!found)); then
            echo "make-prompts.sh: unknown prompt '$arg' (not in $PROMPTS_FILE)" >&2
            exit 1
        fi
        wanted[$arg]=1
    done
fi

tmpdir="$(mktemp -d)"
trap 'rm -rf "$tmpdir"' EXIT

count=0
for i in "${!names[@]}"; do
    name="${names[$i]}"
    text="${texts[$i]}"
    if (($#)) && [[ -z "${wanted[$name]:-}" ]]; then
        continue
    fi
    raw="$tmpdir/$name.raw.wav"
    out="$tmpdir/$name.wav"
    espeak-ng -v "$VOICE" -s "$SPEED" -w "$raw" -- "$text"
    # -R: repeatable mode (fixed seeds); -D: no dither, so output is exact.
    # silence/reverse/silence/reverse trims both ends; rate resamples with
    # the built-in anti-alias filter; norm runs last so the final peak is
    # exactly NORM_DB.
    sox -R -D -q "$raw" -r "$RATE" -c 1 -b 16 -e signed-integer "$out" \
        silence 1 0.01 "$THRESH" \
        reverse silence 1 0.01 "$THRESH" reverse \
        rate -v "$RATE" \
        pad "$PAD_START" "$PAD_END" \
        norm "$NORM_DB"
    mv -f "$out" "$name.wav"
    echo "  $name.wav  ($(soxi -D "$name.wav")s)"
    count=$((count + 1))
done

echo "Generated $count prompt(s) in $PWD"
