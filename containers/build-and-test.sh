#!/usr/bin/env bash
# Build the container images and test them for real:
#   containers/build-and-test.sh [cpu|cuda|all]      (default: all)
# Inside each image, run as a non-root uid:gid as the docker profile does (-u uid:gid): every
# bin/ tool's --help, the README quick start's example (virnucpro-make-test-models, then
# virnucpro-predict on examples/metagenome_scaffolds.fa) with its tables compared byte for byte
# with the same commands run here, outside the container; in the CUDA image also torch.compile
# of a small function on the CPU (it needs the C compiler Triton needs on a GPU).
#
# Needs the quick start's environment active (`virnucpro-predict` on PATH) for the run outside.
# Engine: `docker` where `docker info` works, else podman + buildah from Debian (installed with
# apt-get when missing and running as root), for machines without Docker Hub: the base image
# python:3.11-slim-bookworm is stood in for by a debootstrapped Debian 12 with its Python 3.11,
# from this machine's own Debian mirror, and pip inside the build uses this machine's own pip
# configuration (index, extra indexes, find-links, CA bundle), mounted read-only for the build.
# Environment:
#   VIRNUCPRO_ENGINE=docker|podman            force an engine
#   VIRNUCPRO_BUILD_ROOT=DIR                  podman/buildah storage (default /var/tmp/virnucpro-containers)
#   VIRNUCPRO_TEST_USER=UID:GID               user the tests run as (default 4242:4242)
#   TORCH_CUDA=cu126|cu128|cu130, TORCH_INDEX_URL=URL   build args of the CUDA image
set -euo pipefail

kinds="${1:-all}"
case "$kinds" in
    cpu|cuda) ;;
    all) kinds="cpu cuda" ;;
    *) echo "usage: $0 [cpu|cuda|all]" >&2; exit 2 ;;
esac
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
test_user="${VIRNUCPRO_TEST_USER:-4242:4242}"
build_root="${VIRNUCPRO_BUILD_ROOT:-/var/tmp/virnucpro-containers}"
say() { echo "[build-and-test $(date -u +%H:%M:%S)] $*" >&2; }
die() { echo "build-and-test: $*" >&2; exit 1; }

command -v virnucpro-predict >/dev/null \
    || die "virnucpro-predict is not on PATH: activate the quick start's environment (. .venv/bin/activate) first"

work="$(mktemp -d "${TMPDIR:-/tmp}/virnucpro-containers.XXXXXX")"
container=""
cleanup() {
    if [ -n "$container" ]; then buildah "${storage[@]}" rm "$container" >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# --- the README quick start's example commands (command 1, from virnucpro-make-test-models on) ---
example="$(python3 - <<'EOF'
import re
readme = open("README.md").read()
section = readme.split("<!-- section: quickstart -->")[1].split("<!-- end: quickstart -->")[0]
block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
first = next(line for line in block.splitlines() if line.strip() and not line.startswith("#"))
steps = [step.strip() for step in first.split("&&")]
print(" && ".join(step for step in steps if step.startswith("virnucpro-")))
EOF
)"
[ -n "$example" ] || die "no virnucpro-* commands found in the README's quick start"
tables="prediction_results.tsv prediction_results_highestscore.tsv sequence_summary.tsv"
tools="$(cd bin && echo virnucpro-*)"

# The same commands outside the container, once: the reference the images must reproduce.
reference() {
    [ -d "$work/host" ] && return
    say "example outside the container: $example"
    mkdir -p "$work/host"
    cp -r examples "$work/host/"
    (cd "$work/host" && eval "$example") >"$work/host.log" 2>&1 || { tail -20 "$work/host.log" >&2; die "the example failed outside the container"; }
}

# --- engine ---
engine="${VIRNUCPRO_ENGINE:-}"
if [ -z "$engine" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker; else engine=podman; fi
fi
storage=(--root "$build_root/storage" --runroot "$build_root/run" --storage-driver overlay)
build_opts=()

pip_setting() {  # the value pip uses here for a setting (environment first, then config files)
    { pip config list 2>/dev/null || true; } | python3 -c '
import sys
key, found = sys.argv[1], {}
for line in sys.stdin:
    name, _, value = line.rstrip("\n").partition("=")
    scope, _, setting = name.rpartition(".")
    if setting == key:
        found.setdefault(scope == ":env:", value.strip().strip("\x27\""))
print(found.get(True, found.get(False, "")))' "$1"
}

debian_mirror() {  # this machine's Debian mirror for bookworm, from its apt sources
    python3 - <<'EOF'
import glob, re
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path).read().split("\n\n"):
        fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
        if "deb" in fields.get("Types", "").split() and "bookworm" in fields.get("Suites", "").split():
            print(fields["URIs"].split()[0]); raise SystemExit
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        match = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
        if match:
            print(match.group(1)); raise SystemExit
EOF
}

setup_podman() {
    if ! command -v podman >/dev/null || ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
        if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
            die "needs a working docker, or podman, buildah and debootstrap (apt-get install podman buildah debootstrap)"
        fi
        say "installing podman, buildah and debootstrap with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah debootstrap >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah debootstrap >/dev/null; }
    fi
    mkdir -p "$build_root"
    if ! podman "${storage[@]}" image exists python:3.11-slim-bookworm; then
        local rootfs="$build_root/base-rootfs" mirror
        mirror="$(debian_mirror)"
        say "base image: debootstrap Debian bookworm (minbase, python3) from ${mirror:-the default mirror of debootstrap}"
        rm -rf "$rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python3-dev,ca-certificates \
            bookworm "$rootfs" ${mirror:+"$mirror"} >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
        # As in python:3.11-slim: pip may install into the system Python, `python` and `pip` exist.
        rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
        ln -sf python3 "$rootfs/usr/bin/python"
        ln -sf pip3 "$rootfs/usr/bin/pip"
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -c . | podman "${storage[@]}" import --change "ENV LANG=C.UTF-8" --change 'CMD ["python3"]' \
            - python:3.11-slim-bookworm >/dev/null
        rm -rf "$rootfs"
    fi
}

# pip settings of this machine for builds with podman: a pip.conf mounted as the image's
# /etc/pip.conf and every local path it names mounted read-only at the same place. find-links
# only for the CPU image (a directory of CPU wheels would otherwise win over the CUDA torch).
pip_mounts() {
    local kind="$1" conf="$work/pip-$1.conf" key value path
    echo "[global]" >"$conf"
    for key in index-url extra-index-url find-links cert trusted-host default-timeout; do
        [ "$key" = find-links ] && [ "$kind" = cuda ] && continue
        value="$(pip_setting "$key")"
        [ -n "$value" ] || continue
        echo "$key = $value" >>"$conf"
        for path in $value; do
            path="${path#file://}"
            [ -e "$path" ] || continue
            # a file:// "simple" index links to its files relative to the folder above it
            [ "$(basename "$path")" = simple ] && path="$(dirname "$path")"
            build_opts+=(-v "$path:$path:ro")
        done
    done
    build_opts+=(-v "$conf:/etc/pip.conf:ro")
}

reachable() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15)' "$1" >/dev/null 2>&1; }

image_of() { grep -oE -- "-t [^ ]+ \.$" "containers/$(dockerfile_of "$1")" | head -1 | cut -d' ' -f2; }
dockerfile_of() { if [ "$1" = cpu ]; then echo Dockerfile; else echo Dockerfile.cuda; fi; }

build() {
    local kind="$1" dockerfile image args=() default_index cuda_tag
    dockerfile="containers/$(dockerfile_of "$kind")"
    image="$(image_of "$kind")"
    if [ "$kind" = cuda ]; then
        [ -n "${TORCH_CUDA:-}" ] && args+=(--build-arg "TORCH_CUDA=$TORCH_CUDA")
        [ -n "${TORCH_INDEX_URL:-}" ] && args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
    fi
    if [ "$engine" = docker ]; then
        say "docker build -f $dockerfile -t $image ${args[*]} ."
        docker build -f "$dockerfile" -t "$image" "${args[@]}" .
        return
    fi
    build_opts=()
    pip_mounts "$kind"
    # The torch index the Dockerfile names; where it cannot be reached, this machine's own index.
    default_index="$(sed -n 's/^ARG TORCH_INDEX_URL=//p' "$dockerfile")"
    cuda_tag="${TORCH_CUDA:-$(sed -n 's/^ARG TORCH_CUDA=//p' "$dockerfile")}"
    # shellcheck disable=SC2016  # the literal ${TORCH_CUDA} of the Dockerfile's ARG
    default_index="${default_index/'${TORCH_CUDA}'/$cuda_tag}"
    if [ -z "${TORCH_INDEX_URL:-}" ] && ! reachable "$default_index/"; then
        local own; own="$(pip_setting index-url)"; own="${own:-https://pypi.org/simple}"
        say "$default_index cannot be reached from here: torch comes from $own"
        args+=(--build-arg "TORCH_INDEX_URL=$own")
    fi
    say "podman build -f $dockerfile -t $image ${args[*]} ."
    podman "${storage[@]}" build --pull=never --isolation chroot --network host \
        "${build_opts[@]}" "${args[@]}" -f "$dockerfile" -t "$image" .
}

# Run a shell command inside the image as $test_user, with $1 mounted at /work.
in_image() {
    local image="$1" dir="$2" script="$3"
    if [ "$engine" = docker ]; then
        docker run --rm -u "$test_user" -v "$dir:/work" -w /work "$image" sh -c "$script"
    else
        buildah "${storage[@]}" run --isolation chroot --user "$test_user" -v "$dir:/work" "$container" -- sh -c "cd /work && $script"
    fi
}

test_image() {
    local kind="$1" image dir started
    reference
    image="$(image_of "$kind")"
    dir="$work/$kind"
    mkdir -p "$dir"
    cp -r examples "$dir/"
    chmod -R a+rwX "$dir"
    if [ "$engine" = podman ]; then
        container="$(buildah "${storage[@]}" from --pull-never "localhost/$image")"
    fi
    say "$image: versions and user"
    in_image "$image" "$dir" 'python -c "import os, torch, virnucpro; print(\"virnucpro\", virnucpro.__version__, \"torch\", torch.__version__, \"uid:gid\", f\"{os.getuid()}:{os.getgid()}\", \"HOME\", os.environ.get(\"HOME\"))"'
    say "$image: --help of every tool in bin/"
    in_image "$image" "$dir" "set -e; for tool in $tools; do \$tool --help >/dev/null || { echo \"\$tool --help failed\" >&2; exit 1; }; echo \"\$tool --help ok\"; done"
    say "$image: example as uid:gid $test_user: $example"
    started=$SECONDS
    in_image "$image" "$dir" "$example" >"$dir.log" 2>&1 || { tail -30 "$dir.log" >&2; die "$image: the example failed"; }
    say "$image: example ran in $((SECONDS - started)) s"
    local table owner
    for table in $tables; do
        cmp "$work/host/example_output/$table" "$dir/example_output/$table" \
            || { diff "$work/host/example_output/$table" "$dir/example_output/$table" | head -10 >&2; die "$image: $table differs from the run outside the container"; }
        owner="$(stat -c %u:%g "$dir/example_output/$table")"
        [ "$owner" = "$test_user" ] || die "$image: $table belongs to $owner, not to $test_user"
    done
    say "$image: $tables identical to the run outside the container"
    if [ "$kind" = cuda ]; then
        say "$image: torch.compile on the CPU as uid:gid $test_user"
        in_image "$image" "$dir" 'python -c "
import torch
def f(x):
    return torch.sin(x) * 2 + x.cos()
x = torch.randn(1000)
compiled = torch.compile(f, backend=\"inductor\")
assert torch.allclose(compiled(x), f(x), atol=1e-6)
print(\"torch.compile (inductor, CPU) ok\")"'
    fi
    if [ "$engine" = podman ]; then
        buildah "${storage[@]}" rm "$container" >/dev/null
        container=""
    fi
}

image_size() {
    if [ "$engine" = docker ]; then docker image inspect -f '{{.Size}}' "$1"
    else podman "${storage[@]}" image inspect -f '{{.Size}}' "localhost/$1"; fi
}

[ "$engine" = podman ] && setup_podman
for kind in $kinds; do
    started=$SECONDS
    build "$kind"
    built=$((SECONDS - started))
    test_image "$kind"
    say "$(image_of "$kind"): built in $built s, tested in $((SECONDS - started - built)) s, $(( $(image_size "$(image_of "$kind")") / 1000000 )) MB"
done
say "all checks passed ($kinds, $engine)"
