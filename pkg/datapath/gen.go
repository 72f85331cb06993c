package datapath

// The BPF objects are built by bpf2go (pinned as a Go tool in go.mod) and
// committed; `make generate` runs these lines and CI fails if the result
// differs from what is committed.

//go:generate go tool bpf2go -cc clang-16 -strip llvm-strip-16 -cflags "-O2 -g -Wall -Werror -mcpu=v3 -nostdinc -I../../bpf/include" -target bpfel -go-package datapath -type addr -type vip_key -type vip_meta -type vip_slot -type flow_key -type conn_set -type conn_slot -type backend -type vip_counters -type backend_counters -type sy_stat -type vip_flags -type backend_flags -type cfg_flags balancer ../../bpf/balancer.bpf.c -- -I../../bpf
//go:generate go tool bpf2go -cc clang-16 -strip llvm-strip-16 -cflags "-O2 -g -Wall -Werror -mcpu=v3 -nostdinc -I../../bpf/include" -target bpfel -go-package datapath -type decap_config -type decap_stat decap ../../bpf/decap.bpf.c -- -I../../bpf
//go:generate go tool bpf2go -cc clang-16 -strip llvm-strip-16 -cflags "-O2 -g -Wall -Werror -mcpu=v3 -nostdinc -I../../bpf/include" -target bpfel -go-package datapath testprogs ../../bpf/testprogs.bpf.c -- -I../../bpf
//go:generate go tool bpf2go -cc clang-16 -strip llvm-strip-16 -cflags "-O2 -g -Wall -Werror -mcpu=v3 -nostdinc -I../../bpf/include" -target bpfel -go-package datapath -type clock_sample clock ../../bpf/clock.bpf.c -- -I../../bpf
//go:generate go tool bpf2go -cc clang-16 -strip llvm-strip-16 -cflags "-O2 -g -Wall -Werror -mcpu=v3 -nostdinc -I../../bpf/include" -target bpfel -go-package datapath memlat ../../bpf/memlat.bpf.c -- -I../../bpf
//go:generate go tool bpf2go -cc clang-16 -strip llvm-strip-16 -cflags "-O2 -g -Wall -Werror -mcpu=v3 -nostdinc -I../../bpf/include" -target bpfel -go-package datapath balancerbench ../../bpf/balancer.bpf.c -- -I../../bpf -DSY_BENCH_UNDO
//go:generate go tool bpf2go -cc clang-16 -strip llvm-strip-16 -cflags "-O2 -g -Wall -Werror -mcpu=v3 -nostdinc -I../../bpf/include" -target bpfel -go-package datapath -type hc_stat hcencap ../../bpf/hc_encap.bpf.c -- -I../../bpf
