#!/usr/bin/env bash
# Builds the test bed's images with no registry: debootstrap makes a minimal
# Debian rootfs per suite (imported as hpcgw/base-<suite>), and a Dockerfile per
# fixture (hub, cluster, services) adds its packages on top. Each image is tagged
# with a hash of everything that goes into it (its recipe folder, the base it
# starts from, the host's extra CA certificates), so an unchanged recipe is
# never rebuilt. Prints one line per image with its build time and size.
# The bases, then the fixtures, are built at the same time.
#
# usage: build-images.sh [hub|cluster|services ...]   (default: all three)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
images="$here/images"
mirror=${HPCGW_DEBIAN_MIRROR:-http://deb.debian.org/debian}
host_cas=(/usr/local/share/ca-certificates/*.crt)

declare -A suite_of=([hub]=bookworm [cluster]=trixie [services]=bookworm)

die() { echo "build-images: $*" >&2; exit 1; }

# A short hash of files and strings; stable across machines for the same input.
hash_of() {
  { for item in "$@"; do
      if [ -d "$item" ]; then
        (cd "$item" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
      elif [ -f "$item" ]; then sha256sum < "$item"
      else printf '%s\n' "$item"; fi
    done; } | sha256sum | cut -c1-16
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

report() {  # name tag seconds
  local size
  size=$(docker image inspect -f '{{.Size}}' "$2")
  printf '%-10s %-40s %5ss %6s MB\n' "$1" "$2" "$3" "$((size / 1000000))"
}

build_base() {  # suite -> prints tag
  local suite=$1 tag start rootfs
  tag="hpcgw/base-$suite:$(hash_of "$images/base" "$suite" "$mirror")"
  if ! have_image "$tag"; then
    start=$SECONDS
    rootfs=$(mktemp -d /var/tmp/hpcgw-rootfs.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$rootfs'" RETURN
    debootstrap --variant=minbase --include="$(paste -sd, "$images/base/packages")" \
      "$suite" "$rootfs" "$mirror" > "$rootfs.log" 2>&1 \
      || { tail -20 "$rootfs.log" >&2; die "debootstrap $suite failed (log: $rootfs.log)"; }
    rm -f "$rootfs.log"
    # What a minimal container needs and a VM does not: no docs, no caches.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar --numeric-owner --xattrs -C "$rootfs" -cf - . \
      | docker import - "$tag" >/dev/null
    report "base-$suite" "$tag" $((SECONDS - start)) >&2
  fi
  echo "$tag"
}

build_fixture() {  # name
  local name=$1 base tag context start
  base=$(build_base "${suite_of[$name]}")
  tag="hpcgw/$name:$(hash_of "$images/$name" "$base" "${host_cas[@]}")"
  if ! have_image "$tag"; then
    start=$SECONDS
    context=$(mktemp -d /var/tmp/hpcgw-context.XXXXXX)
    cp -a "$images/$name/." "$context/"
    mkdir -p "$context/host-ca"
    cp "${host_cas[@]}" "$context/host-ca/" 2>/dev/null || true
    if ! docker build --build-arg "BASE=$base" -t "$tag" "$context" > "$context.log" 2>&1; then
      tail -30 "$context.log" >&2
      rm -rf "$context"
      die "docker build of $name failed (full log: $context.log)"
    fi
    rm -rf "$context" "$context.log"
    report "$name" "$tag" $((SECONDS - start))
  else
    report "$name" "$tag" 0
  fi
  docker tag "$tag" "hpcgw/$name:latest"
}

command -v debootstrap >/dev/null || die "debootstrap is missing: run tests/testbed/host-setup.sh"
docker info >/dev/null 2>&1 || die "no docker engine answers: run tests/testbed/host-setup.sh"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(hub cluster services)
for name in "${targets[@]}"; do
  [ -n "${suite_of[$name]:-}" ] || die "unknown image '$name' (known: ${!suite_of[*]})"
done

# In parallel: first each Debian suite's base (debootstrap waits mostly on
# the mirror and the disk), then the fixtures on top of them. On a fresh
# machine this takes the time of the slowest chain, not of all three.
wait_all() {  # pid...: fails when any failed (each has said why on stderr)
  local pid rc=0
  for pid in "$@"; do wait "$pid" || rc=1; done
  return $rc
}
pids=()
for suite in $(for name in "${targets[@]}"; do echo "${suite_of[$name]}"; done | sort -u); do
  build_base "$suite" >/dev/null &
  pids+=($!)
done
wait_all "${pids[@]}" || die "a base image failed (above)"
pids=()
for name in "${targets[@]}"; do
  build_fixture "$name" &
  pids+=($!)
done
wait_all "${pids[@]}" || die "an image failed (above)"
