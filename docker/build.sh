#!/bin/sh
# `make image`: the production Dockerfile built where no registry is reachable, on the local
# Debian base (docker/base.sh, cached) and a wheelhouse built on this machine (pip's cache
# and index), served to the build over 127.0.0.1 for the duration of the build only.
#   docker/build.sh IMAGE BASE_IMAGE PYTHON
set -eu
image=$1 base=$2 python=$3
cd "$(dirname "$0")/.."
docker/base.sh "$base"
wheels=var/wheels
mkdir -p "$wheels"
# Also the project's build requirements (the image builds it from source), and what
# Debian's Python 3.11.2 needs beyond a newer host Python: redis's async-timeout
# (python_full_version < "3.11.3").
build_requires=$("$python" -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"])')
# shellcheck disable=SC2086 # one requirement per word
"$python" -m pip wheel -q -w "$wheels" --find-links "$wheels" -c constraints.txt \
  . $build_requires "async-timeout>=4.0.3"
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$python" -m http.server --bind 127.0.0.1 --directory "$wheels" "$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server' EXIT
until "$python" -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null; do
  sleep 0.1
done
DOCKER_BUILDKIT=0 docker build --network host -f docker/Dockerfile -t "$image" \
  --build-arg BASE="$base" --build-arg PIP_NO_INDEX=1 \
  --build-arg PIP_FIND_LINKS="http://127.0.0.1:$port/" .
docker image inspect -f "$image: {{.Size}} bytes" "$image"
