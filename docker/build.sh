#!/usr/bin/env bash
# Builds the container images fakenews-serve:latest and fakenews-train:latest with the engine that exists:
# `docker build` where a Docker engine answers, buildah otherwise (installed with apt-get when missing and run as root).
#
#   docker/build.sh                 both images (what `make images` runs)
#   docker/build.sh serve           one of them (serve, train)
#   docker/build.sh buildah ARGS    buildah with this script's image storage, e.g. `docker/build.sh buildah images`
#
# The Dockerfiles build from the official bases (python:3.11-slim-bookworm; CUDA for training). Where those cannot be
# pulled, buildah builds from a Debian bookworm base made here with debootstrap (cached), and training gets the CPU
# build of torch (the CUDA base is what a GPU needs; the CPU variant runs the same code). The host's pip settings
# (CA bundle, local wheel folders and indexes, from `pip config list`) reach the build only while it runs: a pip.conf
# and the CA bundle as build secrets, the folders through a loopback HTTP server. Nothing of this machine stays in an image.
#
# Settings (environment): FAKENEWS_IMAGES_DIR (buildah storage and the cached base; default /var/tmp/fakenews-images),
# ENGINE (docker or buildah), SERVE_BASE, TRAIN_BASE, SERVE_TORCH_INDEX, TRAIN_TORCH_INDEX, DEBIAN_MIRROR, TAG, and
# REGISTRY (a registry folder inside this repository to bake into the serving image, e.g. artifacts/registry).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGES_DIR=${FAKENEWS_IMAGES_DIR:-/var/tmp/fakenews-images}
TAG=${TAG:-latest}
SERVE_BASE=${SERVE_BASE:-docker.io/library/python:3.11-slim-bookworm}
TRAIN_BASE=${TRAIN_BASE:-docker.io/nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04}
SERVE_TORCH_INDEX=${SERVE_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
TRAIN_TORCH_INDEX=${TRAIN_TORCH_INDEX:-https://download.pytorch.org/whl/cu128}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
LOCAL_BASE=localhost/fakenews-base:bookworm  # debootstrap minbase + Debian's python3 (3.11) and venv
NICE=(nice -n 10)  # builds share the machine

say() { printf 'build.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# ---- the engine -------------------------------------------------------------------------------------------------
if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=buildah; fi
fi
if [ "$ENGINE" = buildah ] && ! command -v buildah >/dev/null; then
  [ "$(id -u)" = 0 ] || die "no Docker engine answers and buildah is missing: install buildah (apt-get install buildah)"
  say "installing buildah and debootstrap (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends buildah debootstrap >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah debootstrap >/dev/null; }
fi
# overlay where the kernel lets root mount it (cheap layers); vfs (a full copy per layer) otherwise.
DRIVER=${STORAGE_DRIVER:-$( { [ "$(id -u)" = 0 ] && grep -qw overlay /proc/filesystems; } && echo overlay || echo vfs)}
BUILDAH=(buildah --root "$IMAGES_DIR/storage" --runroot "$IMAGES_DIR/run" --storage-driver "$DRIVER")

if [ "${1:-}" = buildah ]; then shift; exec "${BUILDAH[@]}" "$@"; fi

# ---- the host's pip settings, for the build only ----------------------------------------------------------------
# pip inside the build reads a pip.conf made from this machine's (a build secret, mounted as /etc/pip.conf while a
# RUN step runs); the CA bundle is a second secret; local wheel folders and file:// indexes are served read-only on
# a loopback port for the length of the build (the build shares the host's network), so no mount point stays behind.
mkdir -p "$IMAGES_DIR"
BUILD_PIP=$IMAGES_DIR/pip.conf SHARE=$IMAGES_DIR/host-pip
SECRETS=()
PIP_CONFIG=$(python3 -m pip config list 2>/dev/null || true)
pip_setting() {  # the value of pip's `global.NAME` or `:env:.NAME` setting on this machine, or nothing
  printf '%s\n' "$PIP_CONFIG" | sed -n "s/^\(global\|:env:\)\.$1='\(.*\)'$/\2/p" | tail -n 1
}
rm -rf "$SHARE"; mkdir -p "$SHARE"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
shared() {  # shared KIND ITEM: the URL under which the build sees a find-links or index entry
  local dir=${2#file://} n
  case $2 in file://*|/*) ;; *) echo "$2"; return ;; esac
  [ -d "$dir" ] || return 0
  n=$(( $(find "$SHARE" -mindepth 1 -maxdepth 1 | wc -l) + 1 ))
  if [ "$1" = index ] && [ "$(basename "$dir")" = simple ]; then  # a PEP 503 index links to ../../files: share its parent
    ln -s "$(dirname "$(realpath "$dir")")" "$SHARE/$n"; echo "http://127.0.0.1:$PORT/$n/simple/"
  else ln -s "$(realpath "$dir")" "$SHARE/$n"; echo "http://127.0.0.1:$PORT/$n/"; fi
}
{
  echo "[global]"
  cert=$(pip_setting cert)
  if [ -n "$cert" ] && [ -f "$cert" ]; then echo "cert = /run/secrets/pip-cert"; SECRETS+=(--secret "id=pip-cert,src=$cert"); fi
  INDEX_URL=https://pypi.org/simple
  index=$(pip_setting index-url); [ -z "$index" ] || { INDEX_URL=$(shared index "$index"); echo "index-url = $INDEX_URL"; }
  links=() extra=()
  for item in $(pip_setting find-links); do links+=("$(shared links "$item")"); done
  for item in $(pip_setting extra-index-url); do extra+=("$(shared index "$item")"); done
  [ -z "${links[*]}" ] || echo "find-links = ${links[*]}"
  [ -z "${extra[*]}" ] || echo "extra-index-url = ${extra[*]}"
  echo "trusted-host = 127.0.0.1"
  echo "default-timeout = 120"
} > "$BUILD_PIP"
SECRETS+=(--secret "id=pip.conf,src=$BUILD_PIP")
if [ -n "$(ls -A "$SHARE")" ]; then
  python3 -m http.server --bind 127.0.0.1 --directory "$SHARE" "$PORT" >"$IMAGES_DIR/host-pip.log" 2>&1 &
  SERVER=$!; trap 'kill "$SERVER" 2>/dev/null || true' EXIT
  for _ in $(seq 50); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/" 2>/dev/null && break; sleep 0.2; done
fi

reachable() { curl -fsS -m 15 -o /dev/null "$1" 2>/dev/null; }
# Where the torch index cannot be reached, the host's index plus its local wheel folders must hold the CPU build.
torch_index() {
  if reachable "$1/torch/"; then echo "$1"; return; fi
  say "$1 cannot be reached: torch from $INDEX_URL and the host's wheel folders ($(pip_setting find-links))"
  echo "$INDEX_URL"
}

# ---- the base images --------------------------------------------------------------------------------------------
have_image() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }
pullable() {  # the image is here or can be pulled now
  have_image "$1" && return 0
  say "pulling $1"
  timeout 300 "${BUILDAH[@]}" pull --retry 1 --quiet "$1" >/dev/null 2>"$IMAGES_DIR/pull.log" && return 0
  say "cannot pull $1 ($(tail -n 1 "$IMAGES_DIR/pull.log"))"; return 1
}
local_base() {  # Debian bookworm made here: the stand-in for python:3.11-slim-bookworm (both are Debian 12, Python 3.11)
  have_image "$LOCAL_BASE" && return 0
  command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap): it makes the local Debian base"
  local rootfs=$IMAGES_DIR/rootfs-bookworm start=$SECONDS ctr
  rm -rf "$rootfs"
  say "making $LOCAL_BASE with debootstrap from $DEBIAN_MIRROR"
  "${NICE[@]}" debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$DEBIAN_MIRROR" \
    > "$IMAGES_DIR/debootstrap.log" 2>&1 || die "debootstrap failed: see $IMAGES_DIR/debootstrap.log"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/*
  ctr=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" copy --quiet "$ctr" "$rootfs" / >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd /bin/bash --label "org.opencontainers.image.description=Debian bookworm minbase + python3 (debootstrap)" "$ctr"
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$LOCAL_BASE" >/dev/null
  rm -rf "$rootfs"
  say "made $LOCAL_BASE in $((SECONDS - start)) s"
}

# ---- the builds -------------------------------------------------------------------------------------------------
build() {  # build NAME BASE TORCH_INDEX
  local name=$1 base=$2 index=$3 image=fakenews-$1:$TAG start=$SECONDS
  say "building $image from $base (torch from $index) with $ENGINE"
  local args=(-f "docker/$name.Dockerfile" -t "$image" --build-arg "BASE_IMAGE=$base" --build-arg "TORCH_INDEX_URL=$index")
  [ "$name" != serve ] || [ -z "${REGISTRY:-}" ] || args+=(--build-arg "REGISTRY=$REGISTRY")
  if [ "$ENGINE" = docker ]; then
    DOCKER_BUILDKIT=1 "${NICE[@]}" docker build --network host "${args[@]}" "${SECRETS[@]}" . >&2
  else
    "${NICE[@]}" "${BUILDAH[@]}" bud --isolation chroot --network host --layers --format docker "${args[@]}" "${SECRETS[@]}" . >&2
  fi
  BUILT+=("$image $((SECONDS - start))")
}
size_of() {  # uncompressed, as the engine reports it
  if [ "$ENGINE" = docker ]; then docker image ls --format '{{.Size}}' "$1"; else "${BUILDAH[@]}" images --noheading --format '{{.Size}}' "$1"; fi
}

targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(serve train)
BUILT=()
for target in "${targets[@]}"; do
  case $target in
    serve)
      base=$SERVE_BASE
      if [ "$ENGINE" = buildah ] && ! pullable "$base"; then local_base; base=$LOCAL_BASE; fi
      build serve "$base" "$(torch_index "$SERVE_TORCH_INDEX")" ;;
    train)
      base=$TRAIN_BASE index=$TRAIN_TORCH_INDEX
      if [ "$ENGINE" = buildah ] && ! pullable "$base"; then
        say "training image: CPU variant (no CUDA base here); on a GPU machine the default base and index give CUDA"
        local_base; base=$LOCAL_BASE; index=$SERVE_TORCH_INDEX
      fi
      build train "$base" "$(torch_index "$index")" ;;
    base) [ "$ENGINE" = buildah ] && local_base ;;  # only the local Debian base (buildah)
    *) die "unknown image $target (serve, train, base)" ;;
  esac
done

for entry in "${BUILT[@]}"; do
  read -r image secs <<<"$entry"
  printf '%-24s %9s  built in %s s\n' "$image" "$(size_of "$image")" "$secs"
done
[ "$ENGINE" = buildah ] && say "images are in $IMAGES_DIR/storage: docker/build.sh buildah images"
exit 0
