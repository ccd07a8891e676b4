#!/usr/bin/env bash
# Stand-ins for the two images that Dockerfile and docker-compose.yml start from,
# python:3.11-slim and postgres:15, for a machine that cannot reach Docker Hub
# (tests/test_compose_docker.py runs this; with Docker Hub you never need it).
#
# One Debian bookworm root file system from the machine's own apt mirror
# (mmdebstrap, debootstrap's successor, which downloads in parallel), imported as
# tuner-standin/debian:bookworm; on it, a Python 3.11 with pip that trusts this machine's CA bundle (a proxy may sit between it and
# PyPI), and a PostgreSQL 15 whose entrypoint honours the official image's
# POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD_FILE and PGDATA.
#
# Images built from these same files (and CA bundle) are kept: labelled with their
# hash, they are reused, and the whole script then takes a second.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ca=/etc/ssl/certs/ca-certificates.crt
hash="$(cat "$here/build-standins.sh" "$here"/standins/* "$ca" | sha256sum | cut -c1-16)"

# Up to date: a stand-in built from these files, or the real image (no stand-in label),
# which is never replaced.
up_to_date() {
    docker image inspect "$1" > /dev/null 2>&1 || return 1
    label="$(docker image inspect -f '{{index .Config.Labels "tuner.standin"}}' "$1")"
    [ "$label" = "$hash" ] || [ -z "$label" ] || [ "$label" = "<no value>" ]
}
if up_to_date python:3.11-slim && up_to_date postgres:15; then
    echo "images python:3.11-slim and postgres:15 are up to date (stand-ins: $hash)"
    exit 0
fi

# The mirror apt uses here (deb822 .sources or a one-line sources.list), else Debian's own.
mirror="${DEBIAN_MIRROR:-$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | awk '/^URIs:/ {uri=$2} /^Suites:/ && / bookworm( |$)/ {print uri; exit}')}"
mirror="${mirror:-$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)}"
mirror="${mirror:-http://deb.debian.org/debian}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "mmdebstrap bookworm from $mirror"
# What an image does not need: docs, manuals, translations, and the cluster that
# postgresql-15 creates when it is installed (the entrypoint makes its own).
mmdebstrap --variant=minbase --include=ca-certificates,netbase,tzdata,python3,python3-venv,postgresql-15 \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/postgresql/15 "$1"/etc/postgresql/15' \
    bookworm - "$mirror" 2> "$work/mmdebstrap.log" \
    | docker import --change "LABEL tuner.standin=$hash" - tuner-standin/debian:bookworm > /dev/null \
    || { tail -30 "$work/mmdebstrap.log"; exit 1; }

cp "$here"/standins/* "$work/"
cp "$ca" "$work/ca-certificates.crt"
for name in python postgres; do
    tag="$( [ "$name" = python ] && echo python:3.11-slim || echo postgres:15 )"
    up_to_date "$tag" || docker build -q --network none --label "tuner.standin=$hash" -t "$tag" \
        -f "$work/$name.Dockerfile" "$work" > /dev/null
done
echo "built stand-in images python:3.11-slim and postgres:15 ($hash)"
