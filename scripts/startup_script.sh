#!/usr/bin/env bash
# Pod initialisation for musicpipe. Idempotent: safe (and fast) to run at every pod start.
#
#   1. system packages (ffmpeg) with apt-get, only those missing (skipped with MUSICPIPE_SKIP_APT=1)
#   2. `make setup` (prints "everything already installed" when nothing changed)
#   3. the workspace folders
#   4. the environment (MUSICPIPE_WORKSPACE, USER, AUDIOCRAFT_*, DORA_*) in a profile file, sourced by
#      one managed line of ~/.bashrc, so every terminal sees it
#   5. the venv registered as the Jupyter kernel "musicpipe", carrying the same environment
#   6. the doctor's table (`.venv/bin/musicpipe doctor`); the script exits with the doctor's status
#
# Files are rewritten only when their content changes: a second run changes nothing.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/startup_script.sh [-h]

Initialise a pod for musicpipe (idempotent; run it at every pod start, e.g. from the pod's start command).
Installs missing system packages (ffmpeg), runs `make setup`, writes the environment to a profile file that
~/.bashrc sources and the Jupyter kernel "musicpipe" carries, and prints `musicpipe doctor`'s table.

Environment overrides:
  MUSICPIPE_WORKSPACE     workspace root (default /root/workspace)
  MUSICPIPE_SKIP_APT=1    never call apt-get (setup then runs `python3 -m musicpipe.install --no-apt`)
  MUSICPIPE_APT_PACKAGES  Debian packages to make sure of (default "ffmpeg")
  MUSICPIPE_ENV_FILE      the profile file (default $HOME/.musicpipe_env)
  MUSICPIPE_KERNEL_NAME   Jupyter kernel name (default musicpipe)
  AUDIOCRAFT_TEAM         (default "default"); AUDIOCRAFT_CLUSTER, AUDIOCRAFT_CACHE_DIR,
                          AUDIOCRAFT_REFERENCE_DIR are written too when set
  PYTHON                  the Python that runs setup (default python3, as in the Makefile)

Exit status: the doctor's (0 ready, 1 a required check failed); setup failures stop the script with 1.
EOF
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) usage >&2; exit 2 ;;
esac

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_PY="$REPO/.venv/bin/python"
PYTHON="${PYTHON:-python3}"
WS="${MUSICPIPE_WORKSPACE:-/root/workspace}"
ENV_FILE="${MUSICPIPE_ENV_FILE:-$HOME/.musicpipe_env}"
KERNEL_NAME="${MUSICPIPE_KERNEL_NAME:-musicpipe}"
APT_PACKAGES="${MUSICPIPE_APT_PACKAGES:-ffmpeg}"
BASHRC="$HOME/.bashrc"
BASHRC_TAG="# musicpipe-env (managed by scripts/startup_script.sh)"

say() { printf '[startup] %s\n' "$*"; }
warn() { printf '[startup] WARNING: %s\n' "$*" >&2; }
die() { printf '[startup] FAILED: %s\n' "$*" >&2; exit 1; }

# A value in single quotes, for a file that bash sources.
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# Replace $2 by the content of $1 only when they differ; prints "written" or "unchanged".
install_if_changed() {
    local new="$1" dest="$2"
    if [[ -f "$dest" ]] && cmp -s "$new" "$dest"; then
        rm -f "$new"
        echo unchanged
    else
        chmod 0644 "$new"
        mv -f "$new" "$dest"
        echo written
    fi
}

have_package() {
    if command -v dpkg-query >/dev/null 2>&1; then
        # shellcheck disable=SC2016  # ${Status} is dpkg-query's format, not a shell variable
        dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
    else
        command -v "$1" >/dev/null 2>&1
    fi
}

# -- 1. system packages ----------------------------------------------------------------------------------
system_packages() {
    if [[ "${MUSICPIPE_SKIP_APT:-0}" == 1 ]]; then
        say "system packages: skipped (MUSICPIPE_SKIP_APT=1)"
        return 0
    fi
    local pkg missing=()
    for pkg in $APT_PACKAGES; do
        have_package "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        say "system packages: $APT_PACKAGES already installed"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        warn "no apt-get: install ${missing[*]} yourself (make setup stops without ffmpeg)"
        return 0
    fi
    if [[ "$(id -u)" != 0 ]]; then
        warn "not root: cannot install ${missing[*]}; run: sudo apt-get install -y ${missing[*]}"
        return 0
    fi
    say "system packages: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# -- 2. make setup ---------------------------------------------------------------------------------------
run_setup() {
    if [[ "${MUSICPIPE_SKIP_APT:-0}" == 1 ]]; then
        say "setup: $PYTHON -m musicpipe.install --no-apt (make setup without apt-get)"
        (cd "$REPO" && "$PYTHON" -m musicpipe.install --no-apt) || die "setup failed (see above)"
    elif command -v make >/dev/null 2>&1; then
        say "setup: make setup"
        make -C "$REPO" --no-print-directory setup || die "make setup failed (see above)"
    else
        say "setup: no make on this machine: $PYTHON -m musicpipe.install (what make setup runs)"
        (cd "$REPO" && "$PYTHON" -m musicpipe.install) || die "setup failed (see above)"
    fi
    [[ -x "$VENV_PY" ]] || die "$VENV_PY missing after setup"
}

# -- 4. the environment ----------------------------------------------------------------------------------
ENV_NAMES=()
ENV_VALUES=()
collect_environment() {
    local user="${USER:-}"
    if [[ -z "$user" ]]; then
        user="$(id -un 2>/dev/null || echo musicpipe)"
    fi
    ENV_NAMES=(MUSICPIPE_WORKSPACE USER AUDIOCRAFT_TEAM AUDIOCRAFT_DORA_DIR DORA_PACKAGE DORA_MAIN_MODULE)
    ENV_VALUES=("$WS" "$user" "${AUDIOCRAFT_TEAM:-default}" "$WS/experiments/audiocraft"
                musicpipe.dora_entry train)
    local name
    for name in AUDIOCRAFT_CLUSTER AUDIOCRAFT_CACHE_DIR AUDIOCRAFT_REFERENCE_DIR; do
        if [[ -n "${!name:-}" ]]; then
            ENV_NAMES+=("$name")
            ENV_VALUES+=("${!name}")
        fi
    done
}

write_profile() {
    local tmp i
    mkdir -p "$(dirname "$ENV_FILE")"
    tmp="$(mktemp "$ENV_FILE.XXXXXX")"
    {
        echo "# musicpipe environment, written by $REPO/scripts/startup_script.sh (re-run it to change this file;"
        echo "# overrides: MUSICPIPE_WORKSPACE=... AUDIOCRAFT_TEAM=... scripts/startup_script.sh)."
        for i in "${!ENV_NAMES[@]}"; do
            printf 'export %s=%s\n' "${ENV_NAMES[$i]}" "$(sq "${ENV_VALUES[$i]}")"
        done
        echo "# musicpipe, dora and jupyter from the project's venv, after everything already on PATH"
        # shellcheck disable=SC2016  # ${PATH} is expanded when the profile is sourced, not now
        printf 'case ":${PATH}:" in *:%s:*) ;; *) export PATH="${PATH:+${PATH}:}"%s ;; esac\n' \
            "$(sq "$REPO/.venv/bin")" "$(sq "$REPO/.venv/bin")"
    } >"$tmp"
    say "profile: $(install_if_changed "$tmp" "$ENV_FILE") $ENV_FILE"
}

hook_bashrc() {
    # The literal $HOME (not expanded) keeps the line valid if the home folder moves.
    local line
    # shellcheck disable=SC2016
    line='if [ -f "$HOME/'"${ENV_FILE#"$HOME"/}"'" ]; then . "$HOME/'"${ENV_FILE#"$HOME"/}"'"; fi  '"$BASHRC_TAG"
    if [[ "$ENV_FILE" != "$HOME"/* ]]; then
        line="if [ -f $(sq "$ENV_FILE") ]; then . $(sq "$ENV_FILE"); fi  $BASHRC_TAG"
    fi
    if [[ -f "$BASHRC" ]] && grep -qF "$BASHRC_TAG" "$BASHRC"; then
        if grep -qxF "$line" "$BASHRC"; then
            say "bashrc: $BASHRC already sources $ENV_FILE"
        else
            warn "$BASHRC has a '$BASHRC_TAG' line that differs from: $line (left as it is)"
        fi
        return 0
    fi
    if [[ -s "$BASHRC" && -n "$(tail -c 1 "$BASHRC")" ]]; then
        echo >>"$BASHRC"  # the file did not end with a newline
    fi
    printf '%s\n' "$line" >>"$BASHRC"
    say "bashrc: added one line to $BASHRC that sources $ENV_FILE"
}

# -- 5. the Jupyter kernel -------------------------------------------------------------------------------
register_kernel() {
    local args=(-m ipykernel install --name "$KERNEL_NAME" --display-name "Python 3 (musicpipe)") i tmp dest
    for i in "${!ENV_NAMES[@]}"; do
        args+=(--env "${ENV_NAMES[$i]}" "${ENV_VALUES[$i]}")
    done
    dest="$("$VENV_PY" -c 'from jupyter_core.paths import jupyter_data_dir; print(jupyter_data_dir())')/kernels/$KERNEL_NAME"
    # Build the spec aside and compare: the user's kernel is rewritten only when it would change.
    tmp="$(mktemp -d)"
    "$VENV_PY" "${args[@]}" --prefix "$tmp" >/dev/null 2>&1 || { rm -rf "$tmp"; die "ipykernel install failed"; }
    if [[ -f "$dest/kernel.json" ]] && cmp -s "$tmp/share/jupyter/kernels/$KERNEL_NAME/kernel.json" "$dest/kernel.json"
    then
        say "jupyter kernel: $KERNEL_NAME unchanged ($dest)"
    else
        "$VENV_PY" "${args[@]}" --user >/dev/null || { rm -rf "$tmp"; die "ipykernel install --user failed"; }
        say "jupyter kernel: registered $KERNEL_NAME ($dest/kernel.json, python $VENV_PY)"
    fi
    rm -rf "$tmp"
}

main() {
    say "repo $REPO, workspace $WS, HOME $HOME"
    system_packages
    run_setup
    mkdir -p "$WS/data" "$WS/experiments/audiocraft"
    say "workspace: $WS"
    collect_environment
    write_profile
    hook_bashrc
    register_kernel
    local i
    for i in "${!ENV_NAMES[@]}"; do
        export "${ENV_NAMES[$i]}=${ENV_VALUES[$i]}"
    done
    say "doctor: $REPO/.venv/bin/musicpipe doctor"
    local status=0
    "$REPO/.venv/bin/musicpipe" doctor --workspace "$WS" || status=$?
    if ((status == 0)); then
        say "done: pod ready (open a new terminal, or: source $ENV_FILE; Jupyter kernel: $KERNEL_NAME)"
    else
        say "done, but the doctor reports a failed check (exit $status): see the table above"
    fi
    return "$status"
}

main
