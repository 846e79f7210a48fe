#!/bin/sh
# netns.sh MPIRUN TEST_DIST — the equivalence test of test_dist on 2 ranks that talk over a real
# network link: two network namespaces joined by a veth pair, with addresses of the project's
# own (198.18.0.0/30, the range RFC 2544 sets aside for benchmarks, reachable nowhere else);
# mpirun runs in the first namespace and starts the second rank through a launch agent that
# enters the second; OpenMPI may use its TCP transport only, on that link only. The figures must
# be the same as over shared memory, and the link must have carried the traffic.
# Exits 77 (skipped) with a message where the machine does not allow namespaces.
set -eu
mpirun=$1
test=$2
filter=equivalent_to_one_process

skip() {
    echo "netns.sh: skipped: $*"
    exit 77
}
command -v ip >/dev/null || skip "no ip command (iproute2)"
[ "$(id -u)" = 0 ] || skip "network namespaces need root (CAP_NET_ADMIN)"

id=$$
a=tgdist${id}a
b=tgdist${id}b
work=$(mktemp -d)
cleanup() {
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$b" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$a" 2>"$work/err" || skip "cannot create a network namespace: $(cat "$work/err")"
ip netns add "$b"
ip link add "tgv${id}a" type veth peer name "tgv${id}b" 2>"$work/err" ||
    skip "cannot create a veth pair: $(cat "$work/err")"
ip link set "tgv${id}a" netns "$a"
ip link set "tgv${id}b" netns "$b"
ip -n "$a" addr add 198.18.0.1/30 dev "tgv${id}a"
ip -n "$b" addr add 198.18.0.2/30 dev "tgv${id}b"
for ns in "$a" "$b"; do
    ip -n "$ns" link set lo up
done
ip -n "$a" link set "tgv${id}a" up
ip -n "$b" link set "tgv${id}b" up

# The launch agent, in OpenMPI's place for ssh: "agent HOST COMMAND..." runs COMMAND (a shell
# command line, as ssh hands it to the remote shell) inside HOST's namespace.
cat >"$work/agent" <<EOF
#!/bin/sh
host=\$1
shift
echo "\$host" >>"$work/agent.log"
case \$host in
198.18.0.1) ns=$a ;;
198.18.0.2) ns=$b ;;
*) echo "agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" sh -c "\$*"
EOF
chmod +x "$work/agent"

sent() { ip netns exec "$a" cat "/sys/class/net/tgv${id}a/statistics/tx_bytes"; }
before=$(sent)
echo "=== over TCP between namespaces $a (198.18.0.1) and $b (198.18.0.2)"
ip netns exec "$a" "$mpirun" -np 2 --host 198.18.0.1,198.18.0.2 \
    --mca plm_rsh_agent "$work/agent" --mca btl tcp,self \
    --mca btl_tcp_if_include 198.18.0.0/30 --mca oob_tcp_if_include 198.18.0.0/30 \
    "$test" "$filter" >"$work/network.txt" 2>&1 || {
    cat "$work/network.txt"
    echo "netns.sh: the test failed over the network"
    exit 1
}
after=$(sent)
cat "$work/network.txt"

echo "=== over shared memory, for comparison"
"$mpirun" -np 2 "$test" "$filter" >"$work/local.txt" 2>&1 || {
    cat "$work/local.txt"
    echo "netns.sh: the test failed over shared memory"
    exit 1
}
grep '^  f' "$work/local.txt" >"$work/local.fig"
grep '^  f' "$work/network.txt" >"$work/network.fig"
[ -s "$work/network.fig" ] || {
    echo "netns.sh: no figures in the network run's output"
    exit 1
}
if ! cmp -s "$work/local.fig" "$work/network.fig"; then
    diff "$work/local.fig" "$work/network.fig" || true
    echo "netns.sh: the figures differ between the network and shared memory"
    exit 1
fi
grep -qx 198.18.0.2 "$work/agent.log" || {
    echo "netns.sh: the launch agent never started a rank in $b"
    exit 1
}
bytes=$((after - before))
echo "netns.sh: the same $(wc -l <"$work/network.fig") figures as over shared memory;" \
    "$bytes bytes left 198.18.0.1 on the veth link"
# Each 2-rank step averages the MLP's 235,146 gradients: well over 1 MB a step.
[ "$bytes" -gt 10000000 ] || {
    echo "netns.sh: too little traffic on the link ($bytes bytes): not the network"
    exit 1
}
