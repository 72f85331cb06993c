package datapath

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// Protocol numbers a VIP can carry.
const (
	ProtoTCP uint8 = 6
	ProtoUDP uint8 = 17
)

// VIPKey identifies a virtual service: address, port (0 = all ports), protocol.
type VIPKey struct {
	Addr  netip.Addr
	Port  uint16
	Proto uint8
}

func (k VIPKey) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(k.Addr, k.Port), protoName(k.Proto))
}

// VIPFlags are the per-VIP options of the datapath.
type VIPFlags uint32

const (
	// VIPHashSource hashes on the client address only (client affinity).
	VIPHashSource = VIPFlags(balancerVipFlagsVIP_F_HASH_SRC)
	// VIPNoConntrack skips the connection table: pure hashing (UDP services).
	VIPNoConntrack = VIPFlags(balancerVipFlagsVIP_F_NO_CONNTRACK)
)

// VIPMeta is what the datapath holds for a VIP.
type VIPMeta struct {
	Num       uint32    // index of the VIP's tables and counters
	Flags     VIPFlags  //
	TableSize [2]uint32 // slots of each generation's Maglev table (0: none)
	Gen       uint32    // active generation, 0 or 1
}

// FlowKey is a client flow's 5-tuple as the balancer sees it on the way in.
type FlowKey struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            uint8
}

func (f FlowKey) String() string {
	return fmt.Sprintf("%s %s -> %s", protoName(f.Proto),
		netip.AddrPortFrom(f.Src, f.SrcPort), netip.AddrPortFrom(f.Dst, f.DstPort))
}

// Conn is a connection-table entry: the backend a flow is pinned to.
type Conn struct {
	BackendID uint32
	VIPNum    uint32
	// LastSeen is CLOCK_MONOTONIC when the entry was last refreshed (at
	// most once per jiffy), to within a jiffy.
	LastSeen time.Duration
}

// ActiveFlowWindow is how recently a connection entry must have seen a
// packet for CountFlows to count its flow as active. The datapath tracks
// no FIN or RST: a TCP entry stays usable after its connection ended,
// until a new flow takes its place, so only its idle time tells a live
// flow from a finished one. A minute is longer than the gaps of an
// interactive session's keepalives, and status and metrics show both
// counts. (A UDP entry stops being usable after udp_idle_timeout anyway.)
const ActiveFlowWindow = 60 * time.Second

// VIPBackend names the flows that one VIP number pinned to one backend id:
// a connection entry records both, so a flow belongs to the VIP that
// recorded it, whichever other VIPs have the backend's address.
type VIPBackend struct {
	VIPNum, BackendID uint32
}

// FlowCount counts a VIP's usable connection entries of one backend id:
// Flows all of them, Active those that saw a packet within
// ActiveFlowWindow.
type FlowCount struct {
	Flows, Active uint64
}

// FlowCounts is a count of the connection table (CountFlows).
type FlowCounts struct {
	Total     uint64                   // every usable entry
	ByBackend map[VIPBackend]FlowCount // the same entries, by VIP and backend; no zero counts
}

// Backend is a backend slot of the datapath.
type Backend struct {
	Addr netip.Addr
}

// VIPCounters are a VIP's counters, summed over CPUs. ConnHits are the
// packets a connection-table entry sent to its backend, ConnMisses those
// that found no usable entry (Maglev then chose, or the packet was dropped).
type VIPCounters struct {
	Packets, Bytes, NewFlows, ConnHits, ConnMisses uint64
}

// BackendCounters are a backend's counters, summed over CPUs.
type BackendCounters struct {
	Packets, Bytes uint64
}

func protoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return fmt.Sprintf("proto-%d", p)
}

// toAddr converts to the datapath's 16-byte form: IPv4 as ::ffff:a.b.c.d,
// network byte order in memory.
func toAddr(a netip.Addr) balancerAddr {
	b := a.As16()
	var out balancerAddr
	for i := range out.A {
		out.A[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return out
}

func fromAddr(x balancerAddr) netip.Addr {
	var b [16]byte
	for i, w := range x.A {
		binary.NativeEndian.PutUint32(b[4*i:], w)
	}
	return netip.AddrFrom16(b).Unmap()
}

// htons returns v as it lies in memory in network byte order, read natively.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func ntohs(v uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}

func be32(v uint32) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return binary.NativeEndian.Uint32(b[:])
}

func toVIPKey(k VIPKey) balancerVipKey {
	return balancerVipKey{Addr: toAddr(k.Addr), Port: htons(k.Port), Proto: k.Proto}
}

func fromVIPKey(k balancerVipKey) VIPKey {
	return VIPKey{Addr: fromAddr(k.Addr), Port: ntohs(k.Port), Proto: k.Proto}
}

func toFlowKey(f FlowKey) balancerFlowKey {
	return balancerFlowKey{
		Src: toAddr(f.Src), Dst: toAddr(f.Dst),
		Sport: htons(f.SrcPort), Dport: htons(f.DstPort), Proto: f.Proto,
	}
}

func fromFlowKey(k balancerFlowKey) FlowKey {
	return FlowKey{
		Src: fromAddr(k.Src), Dst: fromAddr(k.Dst),
		SrcPort: ntohs(k.Sport), DstPort: ntohs(k.Dport), Proto: k.Proto,
	}
}

// flowHashSeed mirrors FLOW_HASH_SEED in bpf/consts.h.
const flowHashSeed = 0x5eed5eed

// FlowHash is the datapath's flow hash (bpf/hash.h): a multiply per 64-bit
// word of the flow key as the BPF program reads it, with a constant per
// word, summed, then fmix64. The Maglev slot of a flow is
// MaglevSlot(FlowHash, table size). With sourceOnly it hashes the client
// address, as a VIP with VIPHashSource does. Changing either side alone
// moves flows.
func FlowHash(f FlowKey, sourceOnly bool) uint32 {
	if sourceOnly {
		return hashAddr(toAddr(f.Src), flowHashSeed)
	}
	return hashFinal(flowSum(toFlowKey(f)), 40)
}

// flowSum mirrors hash_flow_sum in bpf/hash.h: the flow hash before its
// finaliser, by which the connection table places and checks entries.
func flowSum(k balancerFlowKey) uint64 {
	return uint64(flowHashSeed) +
		addrLane(k.Src, 0)*hashM[0] + addrLane(k.Src, 1)*hashM[1] +
		addrLane(k.Dst, 0)*hashM[2] + addrLane(k.Dst, 1)*hashM[3] +
		(uint64(k.Sport)|uint64(k.Dport)<<16|uint64(k.Proto)<<32)*hashM[4]
}

// MaglevSlot is the slot of a table of size slots that flow hash h picks:
// h scaled to [0, size) by a multiply (bpf maglev_pick does the same).
func MaglevSlot(h uint32, size int) int {
	return int(uint64(h) * uint64(size) >> 32)
}

func hashAddr(a balancerAddr, seed uint32) uint32 {
	return hashFinal(uint64(seed)+addrLane(a, 0)*hashM[0]+addrLane(a, 1)*hashM[1], 16)
}

// addrLane is the i-th 64-bit word of an address as a little-endian load
// of its bytes (bpf/hash.h reads the key that way).
func addrLane(a balancerAddr, i int) uint64 {
	return uint64(a.A[2*i]) | uint64(a.A[2*i+1])<<32
}

// vipIndexSlots and vipIndexProbes mirror VIP_INDEX_SLOTS and
// VIP_INDEX_PROBES (bpf/consts.h).
const (
	vipIndexSlots  = 4096
	vipIndexProbes = 16
)

// vipIndexHash mirrors vip_index_hash in bpf/hash.h: a VIP's home slot.
func vipIndexHash(a balancerAddr, portProto uint32) uint32 {
	return uint32((addrLane(a, 0)*hashM[0] + addrLane(a, 1)*hashM[1] + uint64(portProto)*hashM[4]) >> (64 - 12))
}

// vipFilterBit mirrors vip_filter_bit in bpf/parsing.h.
func vipFilterBit(a balancerAddr) uint32 {
	return uint32((addrLane(a, 0) ^ addrLane(a, 1)) * hashMul >> (64 - 16))
}

const hashMul = 0x9e3779b97f4a7c15 // vip_filter_bit's multiplier

// hashM are the per-word multipliers of the flow hash (HASH_M0..4).
var hashM = [5]uint64{0xa0761d6478bd642f, 0xe7037ed1a0b428db, 0x8ebc6af09c88c6e3, 0x589965cc75374cc3, 0x1d8e4e27c47d124f}

func hashFinal(h, n uint64) uint32 {
	h ^= n
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return uint32(h)
}
