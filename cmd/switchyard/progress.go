package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// isTerminal says whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// showProgress shows on stderr, while a command waits for something that
// can take seconds, what it waits for and for how long, as
// "switchyard NAME: WHAT... 3s", and erases the line when the returned
// function is called. Only for a person at a terminal: with stderr not a
// terminal (a script, a log) or with --json it writes nothing, as stderr
// then carries errors alone.
func showProgress(name, what string, json bool) (done func()) {
	if json || !isTerminal(os.Stderr) {
		return func() {}
	}
	return progressTo(os.Stderr, name, what, time.Second)
}

// progressTo is showProgress on w, updated every tick.
func progressTo(w io.Writer, name, what string, tick time.Duration) (done func()) {
	start := time.Now()
	write := func() {
		fmt.Fprintf(w, "\r\033[Kswitchyard %s: %s... %ds", name, what, int(time.Since(start).Seconds()))
	}
	write()
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-stop:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
				write()
			}
		}
	}()
	return func() { close(stop); <-stopped }
}
