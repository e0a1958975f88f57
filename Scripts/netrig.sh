#!/usr/bin/env bash
# Network test rig for NetStack: a Linux peer namespace and a router namespace joined by a
# veth pair, plus the TAP device that a Libellula stack serves, moved into the router.
# All addresses live only inside the namespaces; the root namespace gets no route to them.
#
#   PREFIX-peer  veth PREFIX-p 10.200.1.1/24 --- PREFIX-r 10.200.1.254/24  PREFIX-rtr (forwarding)
#                                                TAP      10.200.2.254/24  ---fd--- stack 10.200.2.1
#
# Usage:
#   netrig.sh up PREFIX              create both namespaces and the veth pair
#   netrig.sh attach PREFIX TAP      move TAP (opened by the stack in the root namespace)
#                                    into the router and give it its address
#   netrig.sh impair PREFIX PERMILLE [PROTO]
#                                    drop PERMILLE/1000 of forwarded PROTO (udp, the default,
#                                    or tcp) packets, both directions
#   netrig.sh drops PREFIX           print how many packets the impairment dropped
#   netrig.sh unimpair PREFIX        remove the impairment
#   netrig.sh down PREFIX            delete everything (safe to run more than once)
#   netrig.sh run PREFIX CMD...      up, run CMD, and always tear down afterwards
# PREFIX must be at most 12 characters (interface names are limited to 15).
set -euo pipefail

cmd=${1:-}; p=${2:-}
[ -n "$cmd" ] && [ -n "$p" ] || { sed -n '2,23p' "$0" >&2; exit 2; }
[ "${#p}" -le 12 ] || { echo "netrig: prefix '$p' too long" >&2; exit 2; }
peer="$p-peer"; rtr="$p-rtr"

down() {
    ip netns del "$peer" 2>/dev/null || true
    ip netns del "$rtr" 2>/dev/null || true
    ip link del "$p-p" 2>/dev/null || true
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
    up) down; up ;;
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
