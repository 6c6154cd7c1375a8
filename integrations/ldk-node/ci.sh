#!/usr/bin/env bash
# CI for integrations/ldk-node (a standalone package: its own Cargo.lock and target/): formatting,
# lints, then the tests, with LocalStack and SeaweedFS from ../../localstack/servers.sh so that the
# S3 tests run too. Servers already configured (LDK_OS_TEST_*_URL set) or already running are used
# as they are and left running; servers this script starts are stopped when it exits.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
SERVERS_SH="$(cd ../../localstack && pwd)/servers.sh"

step() {
	local t0=$SECONDS
	echo "--> ldk-node integration: $*"
	"$@"
	echo "<-- ldk-node integration: $1 ${2:-} ok in $((SECONDS - t0)) s"
}

step cargo fmt --check
# Also builds the example and the tests (the first build of ldk-node's tree takes minutes).
step cargo clippy --all-targets -- -D warnings

if [[ -z "${LDK_OS_TEST_LOCALSTACK_URL:-}" ]]; then
	# Both servers must answer; one left over from elsewhere is not enough.
	if ! curl -sf -m 2 -o /dev/null http://127.0.0.1:4566/_localstack/health ||
		! curl -sf -m 2 -o /dev/null http://127.0.0.1:8333/healthz; then
		trap '"$SERVERS_SH" stop' EXIT
		trap 'exit 130' INT
		trap 'exit 143' TERM
		"$SERVERS_SH" start
	fi
	eval "$("$SERVERS_SH" env)"
fi
step cargo test --all-targets
