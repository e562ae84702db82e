package sweep

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// lockFile is the name of an experiment's lock in its directory.
const lockFile = "lock"

// lockInfo is the content of a lock file.
type lockInfo struct {
	Host    string `json:"host"`
	PID     int    `json:"pid"`
	Started string `json:"started"`
}

// BusyError reports an experiment locked by a live worker.
type BusyError struct {
	Path  string
	Owner lockInfo
	Age   time.Duration
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("locked by pid %d on %s (lock %s refreshed %s ago)", e.Owner.PID, e.Owner.Host, e.Path, e.Age.Round(time.Second))
}

type lock struct {
	path     string
	tookOver string // why a stale lock was taken over ("" if none)
	stop     chan struct{}
}

// acquireLock creates path exclusively. An existing lock is stale, and taken
// over, when its owner ran on this host and its process is gone, or when it
// has not been refreshed for staleAfter; otherwise a *BusyError is returned.
func acquireLock(path string, staleAfter time.Duration) (*lock, error) {
	host, _ := os.Hostname()
	me := lockInfo{Host: host, PID: os.Getpid(), Started: time.Now().UTC().Format(time.RFC3339)}
	data, err := json.Marshal(me)
	if err != nil {
		return nil, err
	}
	var tookOver string
	for attempt := 0; attempt < 3; attempt++ {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			_, werr := f.Write(data)
			cerr := f.Close()
			if err := errors.Join(werr, cerr); err != nil {
				os.Remove(path)
				return nil, fmt.Errorf("lock %s: %w", path, err)
			}
			return &lock{path: path, tookOver: tookOver}, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		st, err := os.Stat(path)
		if err != nil {
			continue // removed meanwhile: try again
		}
		age := time.Since(st.ModTime())
		var owner lockInfo
		raw, _ := os.ReadFile(path)
		perr := json.Unmarshal(raw, &owner)
		switch {
		case perr == nil && owner.Host == host && !processAlive(owner.PID):
			tookOver = fmt.Sprintf("took over the lock of pid %d, which is gone", owner.PID)
		case age > staleAfter:
			tookOver = fmt.Sprintf("took over a lock not refreshed for %s", age.Round(time.Second))
		case perr != nil && age > 5*time.Second:
			// Unreadable and not being written right now.
			tookOver = "took over an unreadable lock"
		default:
			return nil, &BusyError{Path: path, Owner: owner, Age: age}
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale lock %s: %w", path, err)
		}
	}
	return nil, fmt.Errorf("lock %s: contended, gave up", path)
}

// processAlive reports whether pid is a running process on this host.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if pid == os.Getpid() {
		// Our own pid: only a lock this process still holds, which it
		// would not be asking about; a leftover from a process that had
		// our pid before is stale.
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// heartbeat refreshes the lock's modification time every d until the
// returned function is called.
func (l *lock) heartbeat(d time.Duration) func() {
	l.stop = make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case now := <-t.C:
				os.Chtimes(l.path, now, now)
			}
		}
	}()
	return func() { close(l.stop); <-done }
}

func (l *lock) release() { os.Remove(l.path) }
