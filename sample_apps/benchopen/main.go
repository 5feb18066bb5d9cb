// benchopen: N open+close pairs of one existing file (bench workload, open-heavy).
//
// Hidden dependencies exercised: none; every openat is a watched syscall, so this measures
// the tracer's cost per stop. Usage: benchopen [N [PATH]] (default 20000 and this binary).
package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

func main() {
	n := 20000
	if len(os.Args) > 1 {
		v, err := strconv.Atoi(os.Args[1])
		if err != nil || v < 1 {
			fmt.Println("usage: benchopen [N [PATH]]")
			os.Exit(2)
		}
		n = v
	}
	path, err := os.Executable()
	if len(os.Args) > 2 {
		path, err = os.Args[2], nil
	}
	if err != nil {
		fmt.Println("benchopen:", err)
		os.Exit(1)
	}
	t0 := time.Now()
	for i := 0; i < n; i++ {
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0) // expect:benchopen
		if err != nil {
			fmt.Println("benchopen: open:", err)
			os.Exit(1)
		}
		syscall.Close(fd)
	}
	fmt.Printf("benchopen: %d opens of %s in %.3f s\n", n, path, time.Since(t0).Seconds())
}
