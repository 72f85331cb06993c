package datapath

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// EmbeddedTags are the kernel program tags of the balancer and decap
// programs built into this binary: what `switchyard status` shows as
// program_tag (and switchyard_info's program_tag label) once a daemon of
// this binary has loaded them. The kernel computes a tag from the
// program's instructions with its map references zeroed, so the values the
// daemons set before loading (in maps) do not change it.
type EmbeddedTags struct {
	Balancer string `json:"balancer"`
	Decap    string `json:"decap"`
	// Hash is the hash the kernel takes the tag from: sha256 from Linux
	// 6.18 on, sha1 before. The same program has another tag on the
	// other kind of kernel.
	Hash string `json:"hash"`
}

// ReadEmbeddedTags computes the tags the running kernel gives the embedded
// programs. It needs no privileges: nothing is loaded.
func ReadEmbeddedTags() (EmbeddedTags, error) {
	newHash, name, err := kernelTagHash()
	if err != nil {
		return EmbeddedTags{}, err
	}
	t := EmbeddedTags{Hash: name}
	for _, p := range []struct {
		load func() (*ebpf.CollectionSpec, error)
		prog string
		tag  *string
	}{
		{loadBalancer, "xdp_balancer", &t.Balancer},
		{loadDecap, "xdp_decap", &t.Decap},
	} {
		spec, err := p.load()
		if err != nil {
			return EmbeddedTags{}, fmt.Errorf("read the embedded %s object: %w", p.prog, err)
		}
		tag, err := programTag(spec.Programs[p.prog], newHash())
		if err != nil {
			return EmbeddedTags{}, fmt.Errorf("tag of the embedded %s: %w", p.prog, err)
		}
		*p.tag = tag
	}
	return t, nil
}

// programTag mirrors the kernel's bpf_prog_calc_tag: the first 8 bytes of
// the hash of the instructions as loaded (a bpf_loop callback's address
// resolved to its offset), each map load's immediate zeroed (file
// descriptors and value offsets differ from load to load). The objects
// are built for little-endian machines (the _bpfel files).
func programTag(prog *ebpf.ProgramSpec, h hash.Hash) (string, error) {
	insns := prog.Copy().Instructions
	for i := range insns {
		if insns[i].IsLoadFromMap() {
			insns[i].Constant = 0
		}
	}
	if err := insns.Marshal(h, binary.LittleEndian); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)[:unix.BPF_TAG_SIZE]), nil
}

// kernelTagHash is the hash the running kernel takes program tags from:
// Linux 6.18 moved from SHA-1 to SHA-256.
func kernelTagHash() (func() hash.Hash, string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return nil, "", fmt.Errorf("read the kernel release: %w", err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	major, minor, ok := kernelVersion(release)
	if !ok {
		return nil, "", fmt.Errorf("kernel release %q is not MAJOR.MINOR...: cannot tell how it tags programs", release)
	}
	if major > 6 || major == 6 && minor >= 18 {
		return sha256.New, "sha256", nil
	}
	return sha1.New, "sha1", nil
}

// kernelVersion reads the major and minor version from a kernel release
// such as "6.18.0-1-amd64".
func kernelVersion(release string) (major, minor int, ok bool) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minorDigits := parts[1]
	if i := strings.IndexFunc(minorDigits, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minorDigits = minorDigits[:i]
	}
	minor, err2 := strconv.Atoi(minorDigits)
	return major, minor, err1 == nil && err2 == nil
}
