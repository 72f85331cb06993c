package datapath

import "testing"

// The tags `switchyard version` prints for the embedded programs are the
// ones the kernel gives them once loaded, which `switchyard status` shows
// as program_tag: an operator compares the two to tell which build's
// program runs. A program that differs (the upgrade tests' variant) has
// another tag.
func TestEmbeddedTagsAreTheLoadedTags(t *testing.T) {
	requireRoot(t)
	tags, err := ReadEmbeddedTags()
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadBalancer(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	d, err := LoadDecap("", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	v, err := LoadBalancer(Options{ProgramVariant: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	bi, err := b.objs.XdpBalancer.Info()
	if err != nil {
		t.Fatal(err)
	}
	di, err := d.objs.XdpDecap.Info()
	if err != nil {
		t.Fatal(err)
	}
	vi, err := v.objs.XdpBalancer.Info()
	if err != nil {
		t.Fatal(err)
	}
	if tags.Balancer != bi.Tag {
		t.Errorf("embedded balancer tag %s (%s), the kernel's of the loaded program %s", tags.Balancer, tags.Hash, bi.Tag)
	}
	if tags.Decap != di.Tag {
		t.Errorf("embedded decap tag %s (%s), the kernel's of the loaded program %s", tags.Decap, tags.Hash, di.Tag)
	}
	if vi.Tag == tags.Balancer {
		t.Errorf("a balancer program with another instruction has the embedded one's tag %s", vi.Tag)
	}
}

func TestKernelVersion(t *testing.T) {
	for _, tc := range []struct {
		release      string
		major, minor int
		ok           bool
	}{
		{"6.18.0-1-amd64", 6, 18, true},
		{"6.1.0", 6, 1, true},
		{"5.15.0-91-generic", 5, 15, true},
		{"6.19-rc1", 6, 19, true},
		{"6", 0, 0, false},
		{"x.y", 0, 0, false},
	} {
		major, minor, ok := kernelVersion(tc.release)
		if major != tc.major || minor != tc.minor || ok != tc.ok {
			t.Errorf("kernelVersion(%q) = %d, %d, %v; want %d, %d, %v", tc.release, major, minor, ok, tc.major, tc.minor, tc.ok)
		}
	}
}
