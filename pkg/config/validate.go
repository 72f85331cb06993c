package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// namePattern is what a VIP name may look like: it is the metrics' vip
// label, a column of status, the VIP of `drain VIP/NAME` and `flows --vip`
// (so no '/' or space), and the start of the keys of the drains file, so
// it stays lower-case and plain. No path is made of it: the pin
// directories are named after the interface.
var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// MaxNameLen is the longest name of a node, VIP or backend, in bytes: the
// longest DNS name, so that a host's fully qualified name fits. Names are
// metric labels, columns of status and log attributes, which a name of
// megabytes would flood.
const MaxNameLen = 253

// nameTooLong reports that name is longer than MaxNameLen, quoting only
// its start.
func nameTooLong(p *problems, path, name string) {
	head, _ := userValue(name).head()
	p.add(path, "%q... is %d bytes, longer than the %d a name may have: it is a metric label and a column of status; use a shorter name",
		head, len(name), MaxNameLen)
}

// checkNodeName checks node.name, of the balancer or the agent (which one
// the hint for a missing name says): the node label of every metric and a
// line of status.
func checkNodeName(p *problems, name, hint string) {
	if name == "" {
		p.add("node.name", "required: the hostname could not be read; set a name %s", hint)
	} else if len(name) > MaxNameLen {
		nameTooLong(p, "node.name", name)
	} else if bad, ok := invisibleRune(name); ok {
		p.add("node.name", "%q contains %q, a space or control character, which would break status and the metrics' node label; write visible characters only, e.g. %s",
			userValue(name), bad, userValue(visibleName(name)))
	}
}

// maxSocketPath is the longest path a unix socket may have: sun_path is
// 108 bytes including the terminating NUL.
const maxSocketPath = 107

// checkInterface applies the kernel's rules for interface names.
func checkInterface(p *problems, path, name, what string) {
	if name == "" {
		p.add(path, "required; name the NIC that %s, e.g. eth0", what)
	} else if err := CheckInterfaceName(name); err != nil {
		p.add(path, "%v", err)
	}
}

// CheckInterfaceName applies the kernel's rules for interface names
// (dev_valid_name): 1 to 15 bytes, not "." or "..", no '/', ':' or byte
// its isspace() takes for a space (\t \n \v \f \r, ' ' and 0xa0), nor a
// NUL, which ends the name the kernel reads. A name that passes is one
// element of a path: the pin directories are named after interfaces.
func CheckInterfaceName(name string) error {
	switch {
	case name == "":
		return errors.New("an interface name is required, e.g. eth0")
	case len(name) > 15:
		return fmt.Errorf("%q is longer than 15 bytes, the Linux limit for interface names; check `ip link`", userValue(name))
	case name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\v\f\r\x00") || strings.IndexByte(name, 0xa0) >= 0:
		return fmt.Errorf("%q is not a valid interface name; check `ip link`", userValue(name))
	}
	return nil
}

// parseUnicast parses an address that traffic is sent to or from (a VIP, a
// backend, an address on lo). It reports a problem and returns false if s
// is not one.
func parseUnicast(p *problems, path, s string) (netip.Addr, bool) {
	if s == "" {
		p.add(path, "required; write an IPv4 or IPv6 address, e.g. 10.0.0.1 or fd00::1")
		return netip.Addr{}, false
	}
	a, ok := parseAddr(p, path, s)
	if !ok || !checkUnicast(p, path, a, false, "use a unicast address such as 10.0.0.1 or fd00::1") {
		return a, false
	}
	return a, true
}

// checkUnicast reports a problem, ending with fix, and returns false if a
// cannot be the address of one host that packets are sent to: unspecified,
// "this network", loopback, multicast (link-local multicast included),
// broadcast or reserved; or link-local unless onLink (a next hop, reached
// on the interface's own link).
func checkUnicast(p *problems, path string, a netip.Addr, onLink bool, fix string) bool {
	if a.IsUnspecified() {
		p.add(path, "%s is the unspecified address: it names no host; %s", a, fix)
		return false
	}
	for _, r := range martianRanges(a.Is6()) {
		if r.linkLocal && onLink {
			continue
		}
		if r.prefix.Contains(a) {
			p.add(path, "%s is %s %s address (%s): %s; %s", a, article(r.what), r.what, r.prefix, r.why, fix)
			return false
		}
	}
	return true
}

// ipv4Compatible is ::/96, where ::a.b.c.d addresses lie.
var ipv4Compatible = netip.MustParsePrefix("::/96")

// parseAddr parses an IP address, rejecting forms that would make two
// spellings of one address compare different.
func parseAddr(p *problems, path, s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		p.add(path, "%q is not an IP address; write e.g. 10.0.0.1 or fd00::1", userValue(s))
	case a.Zone() != "":
		p.add(path, "%q has an IPv6 zone; remove %%%s, the interface comes from the interface setting", userValue(s), userValue(a.Zone()))
	case a.Is4In6():
		p.add(path, "%s is an IPv4-mapped IPv6 address; write it as %s", userValue(s), a.Unmap())
	case ipv4Compatible.Contains(a) && a.Compare(netip.IPv6Loopback()) > 0:
		// ::a.b.c.d, deprecated by RFC 4291: no router forwards it as
		// the IPv4 address it embeds (:: and ::1 are named below).
		p.add(path, "%s is an IPv4-compatible IPv6 address, deprecated and not routed; write the IPv4 address %s, or an IPv6 one",
			userValue(s), netip.AddrFrom4([4]byte(a.AsSlice()[12:])))
	default:
		return a, true
	}
	return a, false
}

// checkFamilyAddr checks an optional address that must be of one family.
func checkFamilyAddr(p *problems, path, s string, v6 bool) {
	if s == "" {
		return
	}
	a, ok := parseAddr(p, path, s)
	if !ok {
		return
	}
	if a.Is6() != v6 {
		p.add(path, "%s is not an %s address; %s", userValue(s), familyName(v6), otherFamilyHint(path, v6))
		return
	}
	for _, r := range martianRanges(v6) {
		if r.prefix.Contains(a) {
			p.add(path, "%s is %s %s address (%s); use an address of this host that routers forward, or leave it empty",
				userValue(s), article(r.what), r.what, r.prefix)
			return
		}
	}
}

func article(word string) string {
	if strings.ContainsRune("aeiou", rune(word[0])) {
		return "an"
	}
	return "a"
}

// checkFamilyPrefix checks an optional CIDR prefix that must be of one
// family and have no host bits set.
func checkFamilyPrefix(p *problems, path, s string, v6 bool) {
	if s == "" {
		return
	}
	pf, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		p.add(path, "%q is not a CIDR prefix; write one such as %s", userValue(s), prefixExample(v6))
	case pf.Addr().Is4In6() || pf.Addr().Is6() != v6:
		p.add(path, "%s is not an %s prefix; %s", userValue(s), familyName(v6), otherFamilyHint(path, v6))
	case pf != pf.Masked():
		p.add(path, "%s has host bits set; write %s", userValue(s), pf.Masked())
	default:
		// The outer source is hashed from anywhere in the prefix, so all
		// of it must be unicast, as checkFamilyAddr asks of one address.
		for _, r := range martianRanges(v6) {
			if pf.Overlaps(r.prefix) {
				p.add(path, "%s holds %s addresses (%s); use a unicast prefix routed to this balancer, e.g. %s",
					userValue(s), r.what, r.prefix, prefixExample(v6))
				return
			}
		}
	}
}

type martianRange struct {
	what      string
	prefix    netip.Prefix
	why       string // why no one host can be reached there
	linkLocal bool   // reached on its own link only: fine for a next hop
}

const (
	whyNoHost    = "it names no host"
	whyLoopback  = "packets to it never leave the host"
	whyMulticast = "it names a group of hosts, not one"
	whyLinkLocal = "routers do not forward it, so only hosts on one link reach it"
)

// martianRanges returns the ranges a packet's source address must not come
// from: receivers and routers drop such packets as martians, or (link-local)
// keep them on their link. The balancer's packets cross routers both ways:
// from clients to a VIP, and to backends through its next hop.
func martianRanges(v6 bool) []martianRange {
	if v6 {
		return []martianRange{
			{"unspecified", netip.MustParsePrefix("::/128"), whyNoHost, false},
			{"loopback", netip.MustParsePrefix("::1/128"), whyLoopback, false},
			{"multicast", netip.MustParsePrefix("ff00::/8"), whyMulticast, false},
			{"link-local", netip.MustParsePrefix("fe80::/10"), whyLinkLocal, true},
		}
	}
	return []martianRange{
		{`"this network"`, netip.MustParsePrefix("0.0.0.0/8"), whyNoHost, false},
		{"loopback", netip.MustParsePrefix("127.0.0.0/8"), whyLoopback, false},
		{"multicast", netip.MustParsePrefix("224.0.0.0/4"), whyMulticast, false},
		{"link-local", netip.MustParsePrefix("169.254.0.0/16"), whyLinkLocal, true},
		// Before reserved, which holds it: the more telling name.
		{"broadcast", netip.MustParsePrefix("255.255.255.255/32"), "it names every host on the link", false},
		{"reserved", netip.MustParsePrefix("240.0.0.0/4"), "it is set aside for future use, and hosts and routers drop it", false},
	}
}

func prefixExample(v6 bool) string {
	if v6 {
		return "fd00:16::/64"
	}
	return "172.16.0.0/16"
}

func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

func otherFamilyHint(path string, v6 bool) string {
	if v6 {
		return "put IPv4 ones in " + strings.TrimSuffix(path, "v6") + "v4"
	}
	return "put IPv6 ones in " + strings.TrimSuffix(path, "v4") + "v6"
}

// checkPort checks a port number; lo is 0 where 0 has a meaning, else 1.
func checkPort(p *problems, path string, port, lo int, zeroMeans string) {
	if port >= lo && port <= 65535 {
		return
	}
	if lo == 0 {
		p.add(path, "%d is out of range; use 0 (%s) to 65535", port, zeroMeans)
		return
	}
	p.add(path, "%d is out of range; use 1 to 65535", port)
}

// checkServerName checks the name a TLS client sends as SNI: a DNS name,
// as RFC 6066 has it; an address would not be sent at all.
func checkServerName(p *problems, path, s string) {
	name, _, err := net.SplitHostPort(s)
	hasPort := err == nil && !strings.Contains(s, "://")
	if !hasPort {
		name = s
	}
	if _, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
		p.add(path, "%q is an IP address, which TLS does not send as a server name (RFC 6066); write the DNS name the backend serves, e.g. app.example.com, or leave it empty to send none", userValue(s))
		return
	}
	if hasPort {
		p.add(path, "%q has a port, which TLS does not send; write the name alone, e.g. %s", userValue(s), userValue(name))
		return
	}
	if why := dnsNameProblem(s); why != "" {
		p.add(path, "%q %s; write the DNS name alone, e.g. app.example.com", userValue(s), why)
	}
}

// checkHostHeader checks the Host header of an HTTP check: a host name,
// an IPv4 address or an IPv6 one in brackets, with an optional port.
func checkHostHeader(p *problems, path, s string) {
	const fix = "write a host name or an address, with a port if needed, e.g. app.example.com or [fd00::1]:8080"
	if strings.Contains(s, "://") || strings.ContainsAny(s, "/?#@") {
		p.add(path, "%q is a URL, not a host; %s", userValue(s), fix)
		return
	}
	var host, port string
	var hasPort bool
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			p.add(path, "%q has no closing ']'; %s", userValue(s), fix)
			return
		}
		host = s[1:end]
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() || a.Zone() != "" {
			p.add(path, "%q: %s in brackets is not an IPv6 address; %s", userValue(s), userValue(host), fix)
			return
		}
		switch rest := s[end+1:]; {
		case strings.HasPrefix(rest, ":"):
			port, hasPort = rest[1:], true
		case rest != "":
			p.add(path, "%q has %q after the address; %s", userValue(s), userValue(rest), fix)
			return
		}
	} else {
		if a, err := netip.ParseAddr(s); err == nil && a.Is6() {
			p.add(path, "%q is an IPv6 address, which a Host header writes in brackets: write [%s]", userValue(s), userValue(s))
			return
		}
		host, port, hasPort = strings.Cut(s, ":")
		if host == "" {
			p.add(path, "%q has no host before the port; %s", userValue(s), fix)
			return
		}
		if a, err := netip.ParseAddr(host); err != nil || !a.Is4() {
			if why := dnsNameProblem(host); why != "" {
				p.add(path, "%q %s; %s", userValue(s), why, fix)
				return
			}
		}
	}
	if n, err := strconv.Atoi(port); hasPort && (err != nil || n < 1 || n > 65535) {
		p.add(path, "port %q in %q is not 1 to 65535; %s", userValue(port), userValue(s), fix)
	}
}

// dnsNameProblem says why s is not a DNS host name, or returns "": ASCII
// letters, digits, '-' and '_' in dot-separated labels of 1 to 63 bytes,
// 253 in all, a final dot allowed. A host name goes into a TLS handshake
// or an HTTP header as it is written: one a server cannot parse fails
// every check, taking the VIP's backends down.
func dnsNameProblem(s string) string {
	name := strings.TrimSuffix(s, ".")
	switch {
	case strings.Contains(s, "://") || strings.ContainsAny(s, "/?#@"):
		return "is a URL, not a host name"
	case strings.IndexFunc(s, func(r rune) bool { return r >= utf8.RuneSelf }) >= 0:
		return "has non-ASCII characters, which are sent in their IDNA (xn--) form: write that form"
	case name == "":
		return "is not a name"
	case len(name) > 253:
		return fmt.Sprintf("is %d bytes, longer than the 253 a DNS name may have", len(name))
	}
	for _, label := range strings.Split(name, ".") {
		switch {
		case label == "":
			return "has an empty label (a leading dot, or two dots in a row)"
		case len(label) > 63:
			return fmt.Sprintf("has a label of %d bytes, longer than the 63 DNS allows", len(label))
		}
		if i := strings.IndexFunc(label, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
		}); i >= 0 {
			return fmt.Sprintf("contains %q, which a host name cannot (letters, digits, '-', '_' and '.' only)", label[i])
		}
	}
	return ""
}

// checkListen checks a metrics listen address: "" (disabled) or host:port.
func checkListen(p *problems, path, s, example string) {
	if s == "" {
		return
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		p.add(path, "%q is not host:port; write e.g. %s, or \"\" to disable", userValue(s), example)
		return
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		p.add(path, "port %q in %q is not 1 to 65535; write e.g. %s", userValue(port), userValue(s), example)
		return
	}
	if strings.ContainsAny(host, " \t/%") {
		p.add(path, "host %q in %q is not an address or host name; write e.g. %s", userValue(host), userValue(s), example)
	}
}

// checkSocket checks the path of the API's unix socket.
func checkSocket(p *problems, path, s, example string) {
	switch {
	case s == "":
		p.add(path, "required; the command line tools talk to the daemon over it, e.g. %s", example)
	case !filepath.IsAbs(s):
		p.add(path, "%q is not an absolute path; write e.g. %s", userValue(s), example)
	case len(s) > maxSocketPath:
		p.add(path, "%q is %d bytes, longer than the %d a unix socket path may have; use a shorter path", userValue(s), len(s), maxSocketPath)
	}
}

// bpffsRoot is where bpffs is mounted (datapath.BPFFSRoot).
const bpffsRoot = "/sys/fs/bpf"

// checkPinDir checks the bpffs directory the datapath pins its state in;
// def is the default, for the fix. It must be a directory of its own:
// `switchyard remove` deletes it whole.
func checkPinDir(p *problems, path, s, def string) {
	switch clean := filepath.Clean(s); {
	case !filepath.IsAbs(s):
		p.add(path, "%q is not an absolute path; leave it empty for the default, or write a directory under /sys/fs/bpf", userValue(s))
	case clean == bpffsRoot:
		p.add(path, "%q is the root of bpffs, where other programs pin theirs too, and `switchyard remove` deletes the pin directory whole; leave it empty for %s, or write a directory under it", userValue(s), userValue(def))
	case clean == "/":
		p.add(path, "%q is the root directory; leave it empty for %s, or write a directory under /sys/fs/bpf", userValue(s), userValue(def))
	}
}

// checkUniqueAddrs checks a list of unicast addresses with no repeats.
func checkUniqueAddrs(p *problems, path string, list []string) {
	seen := map[netip.Addr]int{}
	for i, s := range list {
		ip := fmt.Sprintf("%s[%d]", path, i)
		a, ok := parseUnicast(p, ip, s)
		if !ok {
			continue
		}
		if j, dup := seen[a]; dup {
			p.add(ip, "%s is already %s[%d]; list each address once", userValue(s), path, j)
			continue
		}
		seen[a] = i
	}
}

// addr returns the parsed form of an address string that Validate accepted,
// and the zero Addr for "" or anything Validate rejects.
func addr(s string) netip.Addr {
	a, _ := netip.ParseAddr(s)
	return a
}

func prefix(s string) netip.Prefix {
	p, _ := netip.ParsePrefix(s)
	return p
}
