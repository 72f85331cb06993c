package demo

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// StopTimeout bounds how long Stop waits after SIGTERM before it kills.
const StopTimeout = 10 * time.Second

// Process is a switchyard process the lab started inside a node. Its
// output goes to a log file in the lab's work directory.
type Process struct {
	Name string // e.g. "lb1", "be2-agent", "be2-server"
	Node string // namespace
	Log  string // path of the log file

	cmd  *exec.Cmd
	done chan struct{}
	err  error // of Wait, valid once done is closed
}

// start runs cmd (made by Topology.Command) with its output in logPath.
// The process gets its own process group, so that a Ctrl-C on the
// terminal reaches only the lab's owner, which then stops everything in
// order.
func start(name, node, logPath string, cmd *exec.Cmd) (*Process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", name, err)
	}
	fmt.Fprintf(f, "---- %s: %s\n", time.Now().Format(time.RFC3339Nano), cmd.String())
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s in %s: %w", name, node, err)
	}
	p := &Process{Name: name, Node: node, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id (nsenter execs the program, so it is the
// program's own).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// ExitErr is the result of the process, once Done is closed (nil for exit
// status 0).
func (p *Process) ExitErr() error {
	<-p.done
	return p.err
}

// Signal sends sig to the process if it still runs.
func (p *Process) Signal(sig os.Signal) error {
	if !p.Running() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s (pid %d): %w", p.Name, p.Pid(), err)
	}
	return nil
}

// Stop sends SIGTERM and waits up to timeout (<= 0: StopTimeout) for the
// process to exit, then kills it. It returns the process's exit error
// (nil after a clean exit), or an error saying it had to be killed.
// Stopping a process that has exited returns its exit error again.
func (p *Process) Stop(timeout time.Duration) error {
	if timeout <= 0 {
		timeout = StopTimeout
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		// A process still starting up may not handle SIGTERM yet; ended
		// by it, it stopped as asked.
		if ee, ok := errors.AsType[*exec.ExitError](p.err); ok {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
				return nil
			}
		}
		return p.err
	case <-t.C:
	}
	p.Kill()
	return fmt.Errorf("%s (pid %d) did not exit within %s of SIGTERM: killed", p.Name, p.Pid(), timeout)
}

// Kill kills the process with SIGKILL and waits until it is gone.
func (p *Process) Kill() {
	p.Signal(syscall.SIGKILL)
	<-p.done
}

// Tail returns the last n lines of the process's log.
func (p *Process) Tail(n int) string { return tailFile(p.Log, n) }

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)\n", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

func logPath(dir, name string) string { return filepath.Join(dir, name+".log") }
