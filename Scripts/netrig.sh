#!/usr/bin/env bash
# Network rig for Libellula's own TCP/IP stack: a Linux peer namespace and a router
# namespace joined by a veth pair, plus the TAP device that a Libellula stack serves, in the
# router. All addresses live only inside the namespaces; the root namespace gets no route
# to them.
#
#   PREFIX-peer  veth PREFIX-p 10.200.1.1/24 --- PREFIX-r 10.200.1.254/24  PREFIX-rtr (forwarding)
#                                                TAP      10.200.2.254/24  ---fd--- stack 10.200.2.1
#
# For people (PREFIX defaults to lbl):
#   netrig.sh up                     namespaces, veth and a multi-queue TAP lbl-tap in the
#                                    router; prints the serve and curl commands to run
#   netrig.sh down                   remove all of it (also after a crash; safe to repeat)
# For tests:
#   netrig.sh up PREFIX              create both namespaces and the veth pair
#   netrig.sh tap PREFIX [TAP [single]]
#                                    create a persistent multi-queue TAP (default PREFIX-tap;
#                                    `single`: one queue, for a server with one CPU) in the
#                                    router with 10.200.2.254/24; a server then runs in the
#                                    router namespace: serve --net tap:TAP
#   netrig.sh attach PREFIX TAP      move TAP (opened by the stack in the root namespace)
#                                    into the router and give it its address
#   netrig.sh impair PREFIX PERMILLE [PROTO]
#                                    drop PERMILLE/1000 of forwarded PROTO (udp, the default,
#                                    or tcp) packets, both directions
#   netrig.sh drops PREFIX           print how many packets the impairment dropped
#   netrig.sh unimpair PREFIX        remove the impairment
#   netrig.sh down PREFIX            delete everything (safe to run more than once)
#   netrig.sh leftovers PREFIX       print what of the rig still exists (nothing: all gone)
#   netrig.sh run PREFIX CMD...      up, run CMD, and always tear down afterwards
# PREFIX must be at most 12 characters (interface names are limited to 15).
set -euo pipefail

cmd=${1:-}; p=${2:-}
user=0
if [ -z "$p" ] && { [ "$cmd" = up ] || [ "$cmd" = down ] || [ "$cmd" = leftovers ]; }; then p=lbl; user=1; fi
[ -n "$cmd" ] && [ -n "$p" ] || { sed -n '2,31p' "$0" >&2; exit 2; }
[ "${#p}" -le 12 ] || { echo "netrig: prefix '$p' too long" >&2; exit 2; }
peer="$p-peer"; rtr="$p-rtr"

down() {
    # A persistent TAP is deleted explicitly (wherever it is) before its namespace goes.
    ip -n "$rtr" link del "$p-tap" 2>/dev/null || true
    ip link del "$p-tap" 2>/dev/null || true
    ip netns del "$peer" 2>/dev/null || true
    ip netns del "$rtr" 2>/dev/null || true
    ip link del "$p-p" 2>/dev/null || true
}

# What of the rig is still there: namespaces, links named after the prefix (root namespace),
# and nftables tables in the router.
leftovers() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -x -e "$peer" -e "$rtr" | sed 's/^/namespace /' || true
    ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -x -e "$p-p" -e "$p-r" -e "$p-tap" | sed 's/^/link /' || true
    if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$rtr"; then
        ip netns exec "$rtr" nft list tables 2>/dev/null | sed 's/^/nft /' || true
    fi
}

# A persistent multi-queue TAP with virtio-net headers in the router, addressed and up;
# Libellula attaches one queue per CPU (TUNSETIFF with IFF_MULTI_QUEUE | IFF_VNET_HDR).
tap() {
    local t=$1 mq=multi_queue
    [ "${#t}" -le 15 ] || { echo "netrig: TAP name '$t' is longer than 15 bytes (use a shorter prefix or name)" >&2; return 2; }
    [ "${2:-}" = single ] && mq=
    ip netns exec "$rtr" ip tuntap add dev "$t" mode tap $mq vnet_hdr
    ip -n "$rtr" addr add 10.200.2.254/24 dev "$t"
    ip -n "$rtr" link set "$t" up
}

# The commands to run next, for people.
instructions() {
    local bin=libellula here
    here=$(cd "$(dirname "$0")/.." && pwd)
    # The newest build (release or debug), else whatever `libellula` is on PATH.
    for b in "$here/.build/release/libellula" "$here/.build/debug/libellula"; do
        [ -x "$b" ] && { [ "$bin" = libellula ] || [ "$b" -nt "$bin" ]; } && bin=$b
    done
    cat <<TEXT
rig '$p' is up:
  $peer (10.200.1.1) --veth-- $rtr (10.200.1.254; TAP $p-tap 10.200.2.254) --TAP-- Libellula 10.200.2.1

1. Serve on Libellula's own TCP/IP stack, in the router namespace (2 or more CPUs):
     ip netns exec $rtr $bin serve --net tap:$p-tap,address=10.200.2.1/24,gateway=10.200.2.254
2. From the peer namespace:
     ip netns exec $peer curl http://10.200.2.1:8080/hello.txt
   (memcached: port 11211 on 10.200.2.1)
For comparison, host sockets over the same veth:
     ip netns exec $rtr $bin serve --http 10.200.1.254:8080 --memcached 10.200.1.254:11211
     ip netns exec $peer curl http://10.200.1.254:8080/hello.txt
Remove everything: $0 down$([ "$user" = 1 ] || echo " $p")
TEXT
}

up() {
    trap 'down' ERR
    ip netns add "$peer"
    ip netns add "$rtr"
    ip link add "$p-p" type veth peer name "$p-r"
    ip link set "$p-p" netns "$peer"
    ip link set "$p-r" netns "$rtr"
    ip -n "$peer" link set lo up
    ip -n "$rtr" link set lo up
    ip -n "$peer" addr add 10.200.1.1/24 dev "$p-p"
    ip -n "$rtr" addr add 10.200.1.254/24 dev "$p-r"
    ip -n "$peer" link set "$p-p" up
    ip -n "$rtr" link set "$p-r" up
    ip -n "$peer" route add 10.200.2.0/24 via 10.200.1.254
    ip netns exec "$rtr" sysctl -qw net.ipv4.ip_forward=1
    trap - ERR
}

case "$cmd" in
    up)
        down; up
        if [ "$user" = 1 ]; then
            tap "$p-tap" || { down; exit 1; }
            instructions
        fi ;;
    tap) tap "${3:-$p-tap}" "${4:-}" ;;
    leftovers) leftovers ;;
    attach)
        tap=${3:?tap name}
        ip link set "$tap" netns "$rtr"
        ip -n "$rtr" addr add 10.200.2.254/24 dev "$tap"
        ip -n "$rtr" link set "$tap" up ;;
    impair)
        permille=${3:?permille}
        ip netns exec "$rtr" nft -f - <<NFT
table inet wire {
    chain pass {
        type filter hook forward priority 0; policy accept;
        meta l4proto ${4:-udp} numgen random mod 1000 < $permille counter drop
    }
}
NFT
        ;;
    drops)
        ip netns exec "$rtr" nft list table inet wire 2>/dev/null | sed -n 's/.*counter packets \([0-9]*\).*/\1/p' | head -1 ;;
    unimpair) ip netns exec "$rtr" nft delete table inet wire 2>/dev/null || true ;;
    down) down ;;
    run)
        shift 2
        trap 'down' EXIT
        down; up
        "$@" ;;
    *) echo "netrig: unknown command $cmd" >&2; exit 2 ;;
esac
