package api

import "time"

// sampleStatus is a daemon with two VIPs that share a backend address, one
// backend down and drained, one removed from the configuration that still
// has flows, and a failed reload.
func sampleStatus(now time.Time) Status {
	return Status{
		Node:             "lb1",
		Interface:        "eth0",
		AttachMode:       "native",
		ProgramTag:       "5f1c0a9e3b2d7c41",
		ProgramState:     ProgramState{ProgramAttached: true, LinkPinned: true},
		ConfigFile:       "/etc/switchyard/switchyard.yaml",
		ConfigGeneration: 4,
		Reloads:          5,
		ReloadFailures:   1,
		LastReloadError:  "/etc/switchyard/switchyard.yaml:12: vips[0].port: 0 is not 1 to 65535",
		Warnings:         []string{"backend self of VIP web: 10.1.1.2 is an address of this balancer's interface eth0: write the backend's own address"},
		StartedAt:        now.Add(-(3*time.Hour + 12*time.Minute)),
		NextHop:          NextHop{Gateway: "10.0.0.1", MAC: "02:00:00:00:00:01", Resolved: true},
		ConnTable:        ConnTable{Capacity: 65536, Entries: 1234},
		VIPs: []VIP{
			{
				Name: "web", Address: "10.0.0.100", Port: 80, Protocol: "tcp", Hash: "maglev",
				Conntrack: true, TableSize: 65537, Packets: 12345, Bytes: 9876543, NewFlows: 321, PacketRate: 120.5,
				Backends: []Backend{
					{Name: "web-1", Address: "10.2.1.1", ID: 1, Weight: 1, Healthy: true, HealthInfo: "",
						Since: now.Add(-5 * time.Minute), TableSlots: 65537, Packets: 4000, Bytes: 400000,
						Check: "http", Checks: 300, FailedChecks: 2, LastCheckSeconds: 0.00251, Flows: 12345, ActiveFlows: 87},
					{Name: "web-backend-2", Address: "10.2.1.22", ID: 2, Weight: 10, Healthy: false,
						HealthInfo: "tcp check: dial tcp 10.2.1.22:80: connect: connection refused",
						Check:      "tcp", Checks: 40, FailedChecks: 12, LastCheckSeconds: 0.0001,
						Since: now.Add(-12 * time.Second), Drained: true, TableSlots: 0, Packets: 1234567, Bytes: 99, Flows: 4},
					{Name: "10.2.1.3", Address: "10.2.1.3", ID: 3, Removed: true, Packets: 250, Bytes: 25000, Flows: 6, ActiveFlows: 2},
				},
			},
			{
				Name: "dns", Address: "10.0.0.53", Port: 53, Protocol: "udp", Hash: "maglev",
				TableSize: 251, Packets: 7, Bytes: 700, NewFlows: 0,
				Backends: []Backend{
					{Name: "dns-1", Address: "10.2.1.1", ID: 1, Weight: 2, Healthy: true, HealthInfo: "no check",
						TableSlots: 251, Packets: 4000, Bytes: 400000},
				},
			},
		},
		Counters: map[string]uint64{"drop_fragment": 3, "drop_no_backend": 12, "drop_ttl": 0, "encap": 12352},
	}
}

func sampleFlows() FlowsResponse {
	return FlowsResponse{
		Flows: []Flow{
			{Protocol: "tcp", Client: "192.0.2.10:51234", VIP: "10.0.0.100:80", VIPName: "web", Backend: "web-1", BackendID: 1, IdleSecond: 3.25},
			{Protocol: "udp", Client: "[2001:db8::1]:5353", VIP: "10.0.0.53:53", Backend: "10.2.1.9", BackendID: 9, IdleSecond: 725},
		},
		Truncated: true,
	}
}
