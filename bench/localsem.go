package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
)

// The local semaphore is the harness's own floor: a third "tool" that hands out the N slots at
// no network cost, so that what is left between its efficiency and tierlock's is tierlock's,
// and what is left between its efficiency and 1 is the harness's (process start-up on a small
// machine, the recorder, the gate). Each simulated host is still one OS process, started
// behind the same gate, and runs the same recorder as its child, as `tierlock run` and
// `consul lock` do; only where the slot comes from differs.
//
// Why a unix-socket server in the harness rather than flock(2) on N slot files: a host that
// blocks on one slot file waits for that slot even while another is free, and the kernel
// wakes the waiters of a file in no promised order, so flock gives neither full use of the N
// slots nor FIFO. The server costs one connect, one line and one byte per run, all on
// loopback inside this machine, and grants strictly in the order it enqueued the waiters,
// which is the order the FIFO figure compares against (as Consul's commit order is for the
// two real tools). A holder gives its slot back by closing the connection, so a host that
// dies frees its slot as well.

// errSlotGone is returned by a host whose semaphore server went away before granting a slot.
var errSlotGone = errors.New("bench: local semaphore closed before granting a slot")

// localSem is the semaphore server: N slots, granted first come, first served.
type localSem struct {
	Path string
	ln   net.Listener
	wg   sync.WaitGroup

	mu      sync.Mutex
	free    int
	queue   []net.Conn
	holding map[net.Conn]bool
	seq     int64
	waited  map[string]int64 // holder -> its place in line, for those that had to wait
	maxHeld int
	held    int
}

// newLocalSem listens on a unix socket at path and grants n slots.
func newLocalSem(path string, n int) (*localSem, error) {
	if n < 1 {
		return nil, fmt.Errorf("bench: local semaphore needs at least one slot, got %d", n)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("bench: local semaphore: %w", err)
	}
	s := &localSem{Path: path, ln: ln, free: n, waited: map[string]int64{}, holding: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *localSem) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		s.wg.Add(1)
		go s.handle(c)
	}
}

// handle reads the holder's name, then either grants it a slot or puts it in line; when the
// connection ends (the holder's command ended, or the holder died) the slot passes to the head
// of the line.
func (s *localSem) handle(c net.Conn) {
	defer s.wg.Done()
	defer c.Close()
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		return
	}
	name = strings.TrimSpace(name)
	s.mu.Lock()
	if s.free > 0 && len(s.queue) == 0 {
		if s.grantLocked(c) {
			s.free--
		}
	} else {
		s.seq++
		s.waited[name] = s.seq
		s.queue = append(s.queue, c)
	}
	s.mu.Unlock()
	// Nothing more is sent by a holder: EOF (or any error) is the release. A host still in
	// line that goes away is taken out of the line, so its turn is not given to nobody.
	_, _ = io.Copy(io.Discard, r)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.queue {
		if q == c {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			return
		}
	}
	if !s.holding[c] {
		return // granted nothing: its grant could not be written
	}
	delete(s.holding, c)
	s.held--
	for len(s.queue) > 0 {
		next := s.queue[0]
		s.queue = s.queue[1:]
		if s.grantLocked(next) {
			return
		}
	}
	s.free++
}

// grantLocked tells c it holds a slot; false if c is gone (its slot is then not taken).
func (s *localSem) grantLocked(c net.Conn) bool {
	if _, err := c.Write([]byte{1}); err != nil {
		return false
	}
	s.holding[c] = true
	s.held++
	s.maxHeld = max(s.maxHeld, s.held)
	return true
}

// placeInLine is holder's place in the line (1 for the first to wait), 0 if it never waited.
func (s *localSem) placeInLine(holder string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waited[holder]
}

// Close stops accepting hosts and waits until every connection has ended.
func (s *localSem) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

// slot is what a local-semaphore host runs (`bench slot SOCKET HOLDER CMD...`): it takes a
// slot from the harness's server, runs the command as its child, as `tierlock run` does, and
// gives the slot back by closing the connection when the command has ended.
func slot(args []string) {
	if len(args) < 3 {
		fmt.Fprintln(os.Stderr, "bench slot: want SOCKET HOLDER CMD...")
		os.Exit(2)
	}
	code, err := holdSlot(args[0], args[1], args[2:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

func holdSlot(socket, holder string, argv []string) (int, error) {
	c, err := net.Dial("unix", socket)
	if err != nil {
		return 0, fmt.Errorf("bench: local semaphore: %w", err)
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "%s\n", holder); err != nil {
		return 0, fmt.Errorf("bench: local semaphore: %w", err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return 0, fmt.Errorf("%w: %w", errSlotGone, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Exited() {
			return ws.ExitStatus(), nil
		}
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("bench: local semaphore: run %q: %w", argv[0], err)
	}
	return 0, nil
}
