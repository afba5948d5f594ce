#!/usr/bin/env bash
# Batch download + prepare of public datasets: a thin wrapper over `musicpipe download` / `musicpipe prepare`.
# Resumable (musicpipe resumes partial downloads; finished items are skipped through markers), goes on past a
# failing item, and lists the failures at the end with a non-zero exit.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/download_script.sh [options] ITEM...
       scripts/download_script.sh [options] -f LIST_FILE

Download and prepare each ITEM in turn with musicpipe; an item that fails does not stop the others.

Items (SOURCE:VALUE; `musicpipe sources` lists the sources, the item each takes and its variables):
  fma_small_mini | fma_small | fma_medium | fma_large | fma_full    an FMA subset (also written fma:SUBSET)
  mtg_jamendo:PARTS                                                 MTG-Jamendo tar parts, e.g. mtg_jamendo:0-9
                                                                    or mtg_jamendo:0,5,7-9
  e.g.  scripts/download_script.sh fma_small_mini fma_large mtg_jamendo:0-9

Options:
  -f FILE          read items from FILE (whitespace-separated, any number per line; '#' starts a comment)
  -w DIR           workspace (default: $MUSICPIPE_WORKSPACE, else <repo>/workspace)
  -d               download only (no prepare)
  -F               ignore this script's done-markers (musicpipe still skips its own finished work)
  -n               dry run: print the commands, run nothing
  -h               this help

Environment (the sources' variables, as `musicpipe sources` lists them, then this script's):
  FMA_MIRROR              base URL replacing FMA's archive host          (download fma --mirror)
  MTG_MIRROR              base URL replacing MTG-Jamendo's archive host  (download mtg_jamendo --mirror)
  MTG_METADATA_MIRROR     base URL of MTG-Jamendo's metadata TSVs        (--metadata-mirror)
  MTG_VARIANT             audio-low (default) or audio
  DOWNLOAD_ARGS           extra arguments for every `musicpipe download`, e.g. "--num-tracks 16"
  PREPARE_ARGS            extra arguments for every `musicpipe prepare`, e.g. "--num-jobs 8 --format flac"
  MUSICPIPE_BIN           the musicpipe command (default <repo>/.venv/bin/musicpipe)

A finished step leaves a marker next to its dataset (<ws>/data/<dataset>/.download_script.<item>.<step>.done);
a re-run skips it. Each item's output is also appended to <ws>/logs/download_script/<item>.log.
Exit status: 0 all items done, 1 some item failed (listed at the end), 2 bad usage, 130 interrupted.
EOF
}

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MUSICPIPE="${MUSICPIPE_BIN:-$REPO/.venv/bin/musicpipe}"
WS="${MUSICPIPE_WORKSPACE:-$REPO/workspace}"
LIST_FILE=""
DOWNLOAD_ONLY=0
FORCE=0
DRY_RUN=0

say() { printf '[download] %s\n' "$*"; }
usage_error() { printf 'download_script.sh: %s\n' "$*" >&2; printf "Try 'scripts/download_script.sh -h'.\n" >&2; exit 2; }

while getopts ":f:w:dFnh" opt; do
    case "$opt" in
        f) LIST_FILE="$OPTARG" ;;
        w) WS="$OPTARG" ;;
        d) DOWNLOAD_ONLY=1 ;;
        F) FORCE=1 ;;
        n) DRY_RUN=1 ;;
        h) usage; exit 0 ;;
        :) usage_error "option -$OPTARG needs a value" ;;
        *) usage_error "unknown option -$OPTARG" ;;
    esac
done
shift $((OPTIND - 1))

ITEMS=()
if [[ -n "$LIST_FILE" ]]; then
    [[ -r "$LIST_FILE" ]] || usage_error "cannot read the list file $LIST_FILE"
    while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line%%#*}"
        read -r -a words <<<"$line"
        ITEMS+=("${words[@]}")
    done <"$LIST_FILE"
fi
ITEMS+=("$@")
((${#ITEMS[@]} > 0)) || usage_error "no items: give some (e.g. fma_small_mini mtg_jamendo:0-3) or -f FILE"
[[ -x "$MUSICPIPE" ]] || usage_error "$MUSICPIPE not found: run \`make setup\` first (or set MUSICPIPE_BIN)"
read -r -a EXTRA_DOWNLOAD <<<"${DOWNLOAD_ARGS:-}"
read -r -a EXTRA_PREPARE <<<"${PREPARE_ARGS:-}"
LOG_DIR="$WS/logs/download_script"

DONE=()
SKIPPED=()
FAILED=()
REASONS=()

summary() {
    local i
    local dry=""
    ((DRY_RUN)) && dry=" (dry run: nothing was run)"
    say "summary: ${#ITEMS_SEEN[@]} item(s): ${#DONE[@]} done now, ${#SKIPPED[@]} already done, ${#FAILED[@]} failed$dry"
    for i in "${!FAILED[@]}"; do
        say "FAILED ${FAILED[$i]}: ${REASONS[$i]}"
    done
}

on_interrupt() {
    trap - INT TERM
    echo
    say "interrupted: partial downloads stay and resume on the next run"
    summary
    exit 130
}
trap on_interrupt INT TERM

# Run a command, appending its output to the item's log; $1 is the log file.
run_step() {
    local log="$1"
    shift
    local shown
    shown="$(printf '%q ' "$@")"
    say "\$ ${shown% }"
    if ((DRY_RUN)); then
        return 0
    fi
    mkdir -p "$(dirname "$log")"
    printf '=== %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$log"
    local status=0
    "$@" 2>&1 | tee -a "$log" || status=$?
    return "$status"
}

# The last non-empty line of a log (the error, usually); progress bars' carriage returns end lines too.
last_line() {
    local line
    line="$(tr '\r' '\n' <"$1" 2>/dev/null | grep -v '^[[:space:]]*$' | tail -n 1)" || true
    printf '%s' "${line:0:300}"
}

write_marker() {
    local marker="$1"
    shift
    ((DRY_RUN)) && return 0
    mkdir -p "$(dirname "$marker")"
    printf '%s\n%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >"$marker.tmp"
    mv -f "$marker.tmp" "$marker"
}

# Download then prepare one item; returns non-zero (with REASON set) when a step fails.
# `musicpipe sources --item` resolves the item through the source registry: its dataset and the arguments of
# `musicpipe download` and `musicpipe prepare` (tab-separated lines; the sources' variables already applied).
REASON=""
process_item() {
    local item="$1" dataset="" safe log resolved row
    local download=("$MUSICPIPE" download) prepare=("$MUSICPIPE" prepare) fields=()
    if ! resolved="$("$MUSICPIPE" sources --item "$item" --workspace "$WS" 2>&1)"; then
        REASON="$(printf '%s\n' "$resolved" | tail -n 1)"
        REASON="${REASON#musicpipe sources: error: }"
        return 1
    fi
    while IFS= read -r row; do
        IFS=$'\t' read -r -a fields <<<"$row"
        case "${fields[0]:-}" in
            dataset) dataset="${fields[1]}" ;;
            download) download+=("${fields[@]:1}") ;;
            prepare) prepare+=("${fields[@]:1}") ;;
        esac
    done <<<"$resolved"
    if [[ -z "$dataset" ]]; then
        REASON="musicpipe sources --item $item printed no dataset"
        return 1
    fi
    safe="${item//[^A-Za-z0-9_.-]/_}"
    log="$LOG_DIR/$safe.log"
    download+=("${EXTRA_DOWNLOAD[@]}")
    prepare+=("${EXTRA_PREPARE[@]}")
    local data="$WS/data/$dataset"
    local marker_download="$data/.download_script.$safe.download.done"
    local marker_prepare="$data/.download_script.$safe.prepare.done"
    local manifest="$data/egs/train/data.jsonl"

    if ((!FORCE)) && [[ -f "$marker_download" ]] &&
        { ((DOWNLOAD_ONLY)) || [[ -f "$marker_prepare" && -f "$manifest" ]]; }; then
        say "$item: already done (markers in $data; -F to redo)"
        return 3
    fi
    say "$item: start"
    if ((!FORCE)) && [[ -f "$marker_download" ]]; then
        say "$item: download already done"
    elif run_step "$log" "${download[@]}"; then
        write_marker "$marker_download" "${download[*]}"
    else
        REASON="download: $(last_line "$log") (log: $log)"
        return 1
    fi
    if ((DOWNLOAD_ONLY)); then
        say "$item: downloaded (-d: prepare skipped)"
        return 0
    fi
    if run_step "$log" "${prepare[@]}"; then
        write_marker "$marker_prepare" "${prepare[*]}"
    else
        REASON="prepare: $(last_line "$log") (log: $log)"
        return 1
    fi
    if ((DRY_RUN)); then
        say "$item: (dry run)"
    else
        say "$item: done; manifests in $data/egs/{train,valid}/data.jsonl, dset=audio/$dataset"
    fi
}

say "workspace $WS; ${#ITEMS[@]} item(s): ${ITEMS[*]}"
declare -A SEEN=()
ITEMS_SEEN=()
for item in "${ITEMS[@]}"; do
    [[ -n "${SEEN[$item]:-}" ]] && continue
    SEEN[$item]=1
    ITEMS_SEEN+=("$item")
    REASON=""
    status=0
    process_item "$item" || status=$?
    case "$status" in
        0) DONE+=("$item") ;;
        3) SKIPPED+=("$item") ;;
        *) FAILED+=("$item"); REASONS+=("$REASON"); say "$item: FAILED: $REASON" ;;
    esac
done
summary
((${#FAILED[@]} == 0))
