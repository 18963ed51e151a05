#!/usr/bin/env bash
# bench/relay.sh — end-to-end throughput of answer-relay against Postfix.
#
# Runs Postfix's smtp-source, in one go, into
#   (a) smtp-sink directly,
#   (b) a private local Postfix instance relaying to smtp-sink,
#   (c) answer-relay (bench/relaybench: the relay on Redis with appendonly yes)
#       relaying to smtp-sink,
# and prints end-to-end messages per second for each: the time from the
# first connection of smtp-source until smtp-sink has received every message
# (smtp-sink -M exits then). For (c) it also prints the relay's peak RSS.
#
# Usage: bench/relay.sh [-n messages] [-s sessions] [-l message_bytes] [-w relay_workers]
#   defaults: -n 5000 -s 10 -l 5120 -w 8
# Needs: postfix (smtp-source, smtp-sink, postfix), redis-server, go. Run as
# root (the private Postfix instance needs it); everything binds 127.0.0.1
# on free ports and lives in a temporary directory removed at the end.
set -euo pipefail

N=5000 SESSIONS=10 SIZE=5120 WORKERS=8 TIMEOUT=600
while getopts "n:s:l:w:t:" o; do
	case $o in
	n) N=$OPTARG ;; s) SESSIONS=$OPTARG ;; l) SIZE=$OPTARG ;; w) WORKERS=$OPTARG ;; t) TIMEOUT=$OPTARG ;;
	*) sed -n 2,17p "$0"; exit 2 ;;
	esac
done

for bin in smtp-source smtp-sink postfix redis-server go; do
	command -v "$bin" >/dev/null || PATH=$PATH:/usr/sbin command -v "$bin" >/dev/null || { echo "bench: $bin not found" >&2; exit 1; }
done
export PATH=$PATH:/usr/sbin

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/relay-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
	for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
	[ -f "$WORK/pf/etc/main.cf" ] && postfix -c "$WORK/pf/etc" stop >/dev/null 2>&1 || true
	sleep 0.5
	rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "bench: nothing listens on $1" >&2; return 1; }
now() { date +%s.%N; }

SINK_PORT=$(free_port)

# run_case NAME PORT: smtp-source into PORT, smtp-sink on SINK_PORT counts.
# Prints "NAME rate" and leaves the rate in $RATE.
run_case() {
	local name=$1 port=$2
	timeout "$TIMEOUT" smtp-sink -u postfix -M "$N" 127.0.0.1:"$SINK_PORT" 256 &
	local sink=$!
	wait_port "$SINK_PORT"
	local t0 t1
	t0=$(now)
	# smtp-source may see the sink vanish after the last message: not an error.
	smtp-source -d -s "$SESSIONS" -m "$N" -l "$SIZE" -f agent@helpdesk.test -t customer@example.com 127.0.0.1:"$port" 2>/dev/null || true
	if ! wait "$sink"; then
		echo "bench: $name: the sink did not get $N messages within ${TIMEOUT}s" >&2
		RATE=0
		return 1
	fi
	t1=$(now)
	RATE=$(awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n/(b-a) }')
	printf '%-34s %8s msg/s  (%d messages in %.2fs)\n' "$name" "$RATE" "$N" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')"
}

echo "bench: $N messages of $SIZE bytes, $SESSIONS sessions, $(nproc) cores"

# (a) direct
run_case "(a) smtp-source -> smtp-sink" "$SINK_PORT"
DIRECT=$RATE

# (b) a private Postfix instance relaying to the sink
PF=$WORK/pf
PF_PORT=$(free_port)
mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
chown postfix:postfix "$PF/data"
cp /etc/postfix/master.cf /etc/postfix/dynamicmaps.cf "$PF/etc/"
sed -i "s/^smtp      inet/127.0.0.1:$PF_PORT      inet/" "$PF/etc/master.cf"
cat >"$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localdomain
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$SINK_PORT
smtpd_relay_restrictions = permit_mynetworks, reject
maillog_file = /dev/stdout
syslog_name = postfix-bench
smtp_tls_security_level = none
smtpd_tls_security_level = none
alias_maps =
alias_database =
biff = no
EOF
postfix -c "$PF/etc" check >/dev/null 2>&1 || true
postfix -c "$PF/etc" start >"$WORK/postfix.log" 2>&1
wait_port "$PF_PORT"
run_case "(b) smtp-source -> Postfix -> sink" "$PF_PORT"
POSTFIX=$RATE
postfix -c "$PF/etc" stop >/dev/null 2>&1 || true

# (c) answer-relay on Redis with appendonly yes
REDIS_PORT=$(free_port)
mkdir -p "$WORK/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --appendonly yes --appendfsync everysec \
	--save '' --daemonize no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT"
(cd "$ROOT" && go build -o "$WORK/relaybench" ./bench/relaybench)
RELAY_PORT=$(free_port)
"$WORK/relaybench" -listen 127.0.0.1:"$RELAY_PORT" -upstream 127.0.0.1:"$SINK_PORT" \
	-redis "redis://127.0.0.1:$REDIS_PORT" -workers "$WORKERS" >"$WORK/relay.out" 2>"$WORK/relay.log" &
RELAY_PID=$!
PIDS+=("$RELAY_PID")
wait_port "$RELAY_PORT"
PEAK=0
(
	while kill -0 "$RELAY_PID" 2>/dev/null; do
		r=$(ps -o rss= -p "$RELAY_PID" 2>/dev/null || echo 0)
		echo "$r" >>"$WORK/rss"
		sleep 0.1
	done
) &
PIDS+=($!)
run_case "(c) smtp-source -> answer-relay -> sink" "$RELAY_PORT" || { tail -20 "$WORK/relay.log" >&2; }
RELAY=$RATE
PEAK=$(sort -n "$WORK/rss" | tail -1)
printf '%-34s %8.1f MB\n' "answer-relay peak RSS" "$(awk -v k="$PEAK" 'BEGIN{print k/1024}')"

awk -v r="$RELAY" -v p="$POSTFIX" -v d="$DIRECT" 'BEGIN {
	printf "answer-relay / Postfix = %.2fx, answer-relay / direct = %.2fx\n", (p ? r/p : 0), (d ? r/d : 0)
}'
