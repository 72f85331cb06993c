package maglev

// The hashes below decide every backend's permutation and therefore every
// slot of every table. They are part of the cluster's wire contract: all
// balancers must compute byte-identical tables from the same input, so the
// functions must give the same answer on every machine, architecture and Go
// version. Changing anything here — the constants, the byte order of the
// seed, the domain bytes, the finaliser — breaks upgrades and mixed-version
// clusters, because two balancers would send the same flow to different
// backends. TestGoldenTables pins the output; if it fails, you changed the
// contract.
//
// hash/maphash is deliberately not used: it is randomised per process.

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211

	// Domain-separation bytes so that a backend's offset and skip are
	// independent hashes of the same ID.
	domainOffset = 'o'
	domainSkip   = 's'
)

// hashID returns fmix64(FNV-1a-64(seed as 8 little-endian bytes || domain || id)).
//
// FNV-1a mixes the high bits of its state poorly, which matters once the
// result is reduced modulo M, so the MurmurHash3 64-bit finaliser is applied
// on top for avalanche.
func hashID(seed uint64, domain byte, id string) uint64 {
	h := uint64(fnvOffset64)
	for i := range 8 {
		h ^= (seed >> (8 * i)) & 0xff
		h *= fnvPrime64
	}
	h ^= uint64(domain)
	h *= fnvPrime64
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= fnvPrime64
	}
	return fmix64(h)
}

// fmix64 is the MurmurHash3 64-bit finaliser.
func fmix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb93fe53a87
	h ^= h >> 33
	return h
}

// permutation returns the start and stride of a backend's preference list
// over a table of size m: slot j of the list is (offset + j*skip) mod m.
// Because m is prime and 1 <= skip < m, the list visits every slot exactly
// once.
func permutation(seed uint64, id string, m uint64) (offset, skip uint64) {
	offset = hashID(seed, domainOffset, id) % m
	skip = hashID(seed, domainSkip, id)%(m-1) + 1
	return offset, skip
}
