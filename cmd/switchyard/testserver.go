package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchyard-lb/switchyard/pkg/testserver"
)

func runTestserver(args []string) error {
	d := testserver.DefaultConfig()
	fs := newFlagSet("testserver")
	name := fs.String("name", "", "name this server reports in every answer (required)")
	httpAddr := fs.String("http", d.HTTPAddr, "HTTP listen address (\"\" disables)")
	udpAddr := fs.String("udp", d.UDPAddr, "UDP echo listen address (\"\" disables)")
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	// testserver.New adds its component attribute itself.
	base := slog.New(slog.NewTextHandler(os.Stderr, nil))
	log := base.With("component", "testserver")
	s, err := testserver.New(testserver.Config{Name: *name, HTTPAddr: *httpAddr, UDPAddr: *udpAddr}, base)
	if err != nil {
		return err
	}
	if err := s.Start(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The bound addresses: a configured port 0 is the kernel's choice.
	log.Info("serving", "name", *name, "http", addrString(s.HTTPAddr()), "udp", addrString(s.UDPAddr()))
	<-ctx.Done()
	return s.Close()
}

// addrString is a's address, or "" (off) for nil.
func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
