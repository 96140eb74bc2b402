#!/usr/bin/env bash
# Peers on nurture's bench part (e) scenario, on the same Postgres, alternated:
#   bench/peers/run.sh POSTGRES_URL ROUNDS CONTACTS NURTURE_BENCH_COMMAND...
# e.g. bench/peers/run.sh postgres://postgres@127.0.0.1:5432/bench 3 20000 nurture bench
# Installs package.json's pinned packages into a temporary folder (removed at the end),
# then each round runs nurture (part e, 1 worker, on POSTGRES_URL) and each peer (a
# database of its own on the same cluster, made by peer.mjs), the order reversed every
# other round, and prints the table of medians. A peer that fails to install or run
# shows as "failed: ..."; nurture failing fails the script.
set -euo pipefail
url="$1" rounds="$2" contacts="$3"
shift 3
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp "$here/package.json" "$here/peer.mjs" "$here/table.mjs" "$tmp/"
results="$tmp/results.jsonl"
: >"$results"
echo "peers: npm install into $tmp ..." >&2
installed=""
(cd "$tmp" && npm install --no-audit --no-fund --loglevel=error >"$tmp/npm.log" 2>&1) ||
  installed="npm install: $(tail -n 1 "$tmp/npm.log")"
failed() { node -e 'console.log(JSON.stringify({peer: process.argv[1], failed: process.argv[2]}))' "$1" "$2"; }
systems=(nurture pg-boss graphile-contact restate graphile-steps)
machine="unknown"
for ((round = 1; round <= rounds; round++)); do
  order=("${systems[@]}")
  if ((round % 2 == 0)); then
    order=()
    for ((i = ${#systems[@]} - 1; i >= 0; i--)); do order+=("${systems[i]}"); done
  fi
  for sys in "${order[@]}"; do
    echo "peers: round $round/$rounds: $sys ..." >&2
    if [ "$sys" = nurture ]; then
      "$@" --postgres "$url" --only workers --workers 1 --worker-contacts "$contacts" \
        --worker-repeats 1 --json "$tmp/nurture.json" >"$tmp/nurture.out"
      machine="$(sed -n 's/^machine: //p' "$tmp/nurture.out" | head -n 1)"
      node -e 'const r = require(process.argv[1]).workers[0];
        console.log(JSON.stringify({peer: "nurture", steps: r.steps, seconds: r.seconds, steps_per_sec: r.steps_per_sec}))' \
        "$tmp/nurture.json" >>"$results"
    elif [ -n "$installed" ]; then
      failed "$sys" "$installed" >>"$results"
    elif ! (cd "$tmp" && node peer.mjs "$sys" "$url" "$contacts" >>"$results" 2>"$tmp/$sys.err"); then
      failed "$sys" "$(grep -m1 -iE 'error|steps in' "$tmp/$sys.err" || tail -n 1 "$tmp/$sys.err")" >>"$results"
    fi
    tail -n 1 "$results" >&2
  done
done
node "$tmp/table.mjs" "$results" "$machine" "$rounds" "$contacts"
