#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine to run the test bed: installs the system
# packages it needs, starts a Docker engine when none answers (PID 1 is not
# systemd on the build machines), and checks free disk. Safe to run again.
set -euo pipefail

min_free_gb=${HPCGW_MIN_FREE_GB:-8}
# chromium: the spawn form test drives Debian's browser with Playwright.
packages=(docker.io iptables debootstrap python3-venv openssl make chromium)

die() { printf 'host-setup: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts dockerd)"

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "host-setup: installing ${missing[*]}"
  apt-get update -qq || die "apt-get update failed: is the Debian mirror reachable?"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi

if ! docker info >/dev/null 2>&1; then
  if pgrep -x dockerd >/dev/null; then
    echo "host-setup: dockerd runs but does not answer yet; waiting"
  else
    echo "host-setup: starting dockerd (log: /var/log/hpcgw-dockerd.log)"
    nohup dockerd >>/var/log/hpcgw-dockerd.log 2>&1 &
  fi
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || {
    tail -5 /var/log/hpcgw-dockerd.log >&2 || true
    die "no Docker engine could be started here (see /var/log/hpcgw-dockerd.log)"
  }
fi

docker_root=$(docker info -f '{{.DockerRootDir}}')
for dir in "$docker_root" /var/tmp; do
  free_gb=$(df -P -BG "$dir" | awk 'NR == 2 { sub("G", "", $4); print $4 }')
  [ "$free_gb" -ge "$min_free_gb" ] \
    || die "only ${free_gb} GB free under $dir; the test bed needs ${min_free_gb} GB (images, builds)"
done
echo "host-setup: ready (docker $(docker version -f '{{.Server.Version}}'), ${free_gb} GB free)"
