#!/usr/bin/env bash
# Install the Debian packages named as arguments where their command (or file) is missing.
# Runs apt-get as root, or through sudo; tells the user what to do when neither works.
set -euo pipefail
# What shows a package is there: a command, or (starting with /) a file glob.
declare -A COMMAND_OF=([ffmpeg]=ffmpeg [slurm-wlm]=slurmctld [munge]=munged
  [libfluidsynth3]="/usr/lib/*/libfluidsynth.so.3" [fluid-soundfont-gm]=/usr/share/sounds/sf2/FluidR3_GM.sf2
  [espeak-ng]=espeak-ng)
missing=()
for pkg in "$@"; do
  cmd=${COMMAND_OF[$pkg]:-$pkg}
  if [[ $cmd == /* ]]; then
    compgen -G "$cmd" >/dev/null || missing+=("$pkg")
  else
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "Installing system packages: ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "error: need ${missing[*]} (Debian/Ubuntu: apt-get install ${missing[*]}); run as root or install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${missing[@]}" >/dev/null
}
