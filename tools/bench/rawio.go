package main

import (
	"errors"
	"io"
	"net"
	"syscall"
	"unsafe"
)

// rawIO reads and writes a TCP connection with raw system calls on its non-blocking socket,
// and waits for readiness through Go's network poller (syscall.RawConn), so deadlines work
// as on the net.Conn.
//
// Why: net.Conn's Read and Write enter each system call through the runtime's syscall
// bookkeeping. On the sessions' virtual machines a loopback write takes long enough that the
// runtime's monitor thread (sysmon) finds the goroutine in it, hands its P to another thread,
// and keeps waking every 20 µs: perf put sysmon at 23% of the generator's CPU, which at
// ~30 µs a request was the largest single part, on the core that the cache-miss points share
// with Redis and Postgres. A raw call on a socket that never blocks returns at once, so there
// is nothing to hand off.
type rawIO struct {
	rc syscall.RawConn
}

func newRawIO(c net.Conn) (*rawIO, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, errors.New("load: not a socket connection")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &rawIO{rc: rc}, nil
}

// Read reads what the socket holds, waiting until it holds something.
func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var (
		n     int
		errno syscall.Errno
	)
	err := r.rc.Read(func(fd uintptr) bool {
		m, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e == syscall.EAGAIN {
			return false // wait until readable, then call again
		}
		n, errno = int(m), e
		return true
	})
	switch {
	case err != nil:
		return 0, err
	case errno == syscall.EINTR:
		return r.Read(p)
	case errno != 0:
		return 0, errno
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p, waiting whenever the socket's buffer is full.
func (r *rawIO) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		var (
			n     int
			errno syscall.Errno
		)
		err := r.rc.Write(func(fd uintptr) bool {
			m, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[done])), uintptr(len(p)-done))
			if e == syscall.EAGAIN {
				return false
			}
			n, errno = int(m), e
			return true
		})
		switch {
		case err != nil:
			return done, err
		case errno == syscall.EINTR:
			continue
		case errno != 0:
			return done, errno
		}
		done += n
	}
	return done, nil
}
