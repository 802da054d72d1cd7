#!/usr/bin/env bash
# Stream a point-of-sale export into inv as stock movements, in one `inv import -` process.
#
#   stream-movements.sh [-s STORE] [FEED.csv ...]      no FEED (or -): read stdin
#
# The till exports one line per sale, `timestamp,sku,qty_sold` (a header line is
# optional, a negative qty_sold is a return).  awk turns each line into an import row
#
#   sku,change,reason,idempotency_key
#   HW-1008,-4,sale,pos-main-2026-11-25T09:14:03Z-0002
#
# and the rows go, as they are made, to one `inv import - --on-error skip-rows`.  The key
# is built from the store, the timestamp and the line number, so sending the same feed
# again (a retry, a re-run after fixing a line) applies every sale once and only once.
#
# Every data line of the feed becomes exactly one line of the stream (a blank line for a
# zero quantity), so inv's "row N" is mapped back to "FEED line L" in the report.
#
# Exit status, for cron wrappers:
#    0  every line applied (or already applied by an earlier run)
#   65  some lines were bad: they are listed with file and line; the good ones WERE
#       applied.  Retrying the same feed will not help: fix those lines and send again.
#   75  inv could not reach its storage (file locked, service down): nothing was applied
#       by this run; safe to retry later with the same feed.
#   66  a feed file cannot be read;  anything else: inv's own exit status, passed on.
#
# Settings are inv's: INV_FILE / INV_BACKEND ... ; INV names the inv command (default: inv).
#
#   INV_FILE=/srv/shop/inventory.json examples/stream-movements.sh -s north till-2.csv
#   ssh till-1 cat /var/pos/export.csv | examples/stream-movements.sh -s main
set -euo pipefail

INV=${INV:-inv}
store=main

usage() {
    sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while getopts ":s:h" opt; do
    case $opt in
        s) store=$OPTARG ;;
        h) usage ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[[ $# -gt 0 ]] || set -- -

for feed in "$@"; do
    if [[ $feed != - && ! -r $feed ]]; then
        echo "stream-movements: cannot read $feed" >&2
        exit 66
    fi
done

workdir=$(mktemp -d "${TMPDIR:-/tmp}/stream-movements.XXXXXX")
trap 'rm -rf "$workdir"' EXIT
linemap=$workdir/lines     # stream row -> "FEED line L"
errors=$workdir/errors     # inv's stderr

# One CSV row per feed line.  The feed is read as plain comma-separated values (a value
# may be in double quotes, but may not contain a comma).  Values are quoted for inv; a
# quantity that is not a whole number is passed on as it is ("-abc"), so inv names the
# row and the column.
to_rows() {
    awk -v store="$store" -v linemap="$linemap" '
        function csv(s) { gsub(/"/, "\"\"", s); return "\"" s "\"" }
        function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }
        function field(s) { s = trim(s); if (s ~ /^".*"$/) s = substr(s, 2, length(s) - 2); return s }
        BEGIN { FS = ","; print "sku,change,reason,idempotency_key"; out = 1 }
        {
            sub(/\r$/, "")
            name = (FILENAME == "-" || FILENAME == "") ? "stdin" : FILENAME
            if (FNR == 1 && tolower(field($1)) == "timestamp") next   # the feed header
            out++
            print out "\t" name " line " FNR > linemap
            if (trim($0) == "") { print ""; next }
            ts = field($1); sku = field($2); qty = field($3)
            if (qty ~ /^[+-]?[0-9]+$/) {
                qty = qty + 0
                if (qty == 0) { print ""; next }              # nothing sold: no row
                change = -qty
                reason = qty > 0 ? "sale" : "return"
            } else {
                change = "-" qty                               # inv reports it
                reason = "sale"
            }
            key = sprintf("pos-%s-%s-%04d", store, ts, FNR)
            print csv(sku) "," change "," reason "," csv(key)
        }
    ' "$@"
}

# Turn inv's "Error: stdin: row N, column C: reason" into "FEED line L, column C: reason".
report() {
    awk -F '\t' '
        NR == FNR { where[$1] = $2; next }
        match($0, /^Error: stdin: row [0-9]+/) {
            row = substr($0, 19, RLENGTH - 18)
            rest = substr($0, RLENGTH + 1)
            print "  " (row in where ? where[row] : "row " row) rest
            next
        }
        { print "  " $0 }
    ' "$linemap" "$errors" >&2
}

: >"$linemap"
set +e
to_rows "$@" | "$INV" import - --format csv --on-error skip-rows --store "$store" 2>"$errors"
status=("${PIPESTATUS[@]}")
set -e
awk_status=${status[0]}
inv_status=${status[1]}

case $inv_status in
    0)
        if [[ $awk_status -ne 0 ]]; then
            echo "stream-movements: reading the feed failed (awk exit $awk_status)" >&2
            exit 1
        fi
        cat "$errors" >&2 # warnings, if any
        ;;
    65)
        # "Error: stdin: row 7, column change: ..." -> count the distinct row numbers
        bad=$(awk '/^Error: stdin: row [0-9]/ { sub(/[,:].*/, "", $4); if (!($4 in seen)) n++; seen[$4] }
                   END { print n + 0 }' "$errors")
        echo "stream-movements: $bad bad line(s) in the feed; every other line was applied:" >&2
        report
        echo "stream-movements: fix those lines and send the feed again" \
            "(lines already applied are skipped)" >&2
        exit 65
        ;;
    75)
        cat "$errors" >&2
        echo "stream-movements: storage unreachable; nothing applied by this run." \
            "Retry later with the same feed." >&2
        exit 75
        ;;
    *)
        cat "$errors" >&2
        echo "stream-movements: inv import failed (exit $inv_status)" >&2
        exit "$inv_status"
        ;;
esac
