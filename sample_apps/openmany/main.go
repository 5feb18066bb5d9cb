// openmany: N goroutines, each locked to its own OS thread, open distinct files at once.
//
// Hidden dependencies exercised: none on purpose; this is a stress case for the tracer: N
// threads (default 100) hit openat at the same moment, each on its own file
// DIR/openmany-<i>.txt (created, written, reopened, read back, removed). DIR is argv[2],
// default a fresh directory under $TMPDIR that is removed afterwards.
//
// Usage: openmany [N [DIR]]
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
)

func main() {
	n := 100
	if len(os.Args) > 1 {
		v, err := strconv.Atoi(os.Args[1])
		if err != nil || v < 1 {
			fmt.Println("usage: openmany [N [DIR]]")
			os.Exit(2)
		}
		n = v
	}
	dir := ""
	if len(os.Args) > 2 {
		dir = os.Args[2]
	} else {
		d, err := os.MkdirTemp("", "openmany-")
		if err != nil {
			fmt.Println("mkdtemp:", err)
			os.Exit(1)
		}
		defer os.RemoveAll(d)
		dir = d
	}
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	tids := make([]int, n)
	for i := 0; i < n; i++ {
		ready.Add(1)
		done.Add(1)
		go func(i int) {
			defer done.Done()
			runtime.LockOSThread() // one goroutine per thread: N threads in openat together
			tids[i] = syscall.Gettid()
			ready.Done()
			<-start
			errs[i] = roundTrip(filepath.Join(dir, fmt.Sprintf("openmany-%d.txt", i)), i)
		}(i)
	}
	ready.Wait()
	close(start)
	done.Wait()
	threads := map[int]bool{}
	for i, err := range errs {
		threads[tids[i]] = true
		if err != nil {
			fmt.Printf("file %d: %v\n", i, err)
			os.Exit(1)
		}
	}
	fmt.Printf("openmany: %d goroutines on %d threads opened %d files in %s\n",
		n, len(threads), n, dir)
	if len(threads) != n {
		fmt.Println("openmany: expected one thread per goroutine")
		os.Exit(1)
	}
}

func roundTrip(path string, i int) error {
	want := strconv.Itoa(i)
	if err := os.WriteFile(path, []byte(want), 0o600); err != nil { // expect:openmany-create
		return err
	}
	got, err := os.ReadFile(path) // expect:openmany-read
	if err != nil {
		return err
	}
	if string(got) != want {
		return fmt.Errorf("read %q, wrote %q", got, want)
	}
	return os.Remove(path)
}
