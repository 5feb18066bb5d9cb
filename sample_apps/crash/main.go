// crash: programs that die, for the tracer's exit-status and signal paths.
//
// Hidden dependencies exercised: none on purpose. argv[1] picks the way to die:
//
//	panic  - a Go panic: exit status 2, "panic: cgotrace deliberate panic" on stderr
//	gosegv - a nil pointer dereference in Go: a runtime panic, exit status 2
//	csegv  - a NULL write in C (cgo builds only): SIGSEGV in non-Go code, which the Go
//	         runtime reports as a fatal signal (exit status 2)
//	ok     - print and exit 0 (the default)
//
// The C half lives in crash_cgo.go; without cgo, csegv says so and exits 4.
package main

import (
	"fmt"
	"os"
)

type node struct{ next *node }

func main() {
	mode := "ok"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	fmt.Println("crash: mode", mode)
	switch mode {
	case "ok":
		fmt.Println("crash: not crashing")
	case "panic":
		panic("cgotrace deliberate panic") // expect:crash-panic
	case "gosegv":
		var n *node
		fmt.Println(n.next) // expect:crash-gosegv
	case "csegv":
		if !cSegv() {
			fmt.Println("crash: csegv needs a cgo build")
			os.Exit(4)
		}
	default:
		fmt.Println("usage: crash [ok|panic|gosegv|csegv]")
		os.Exit(64)
	}
}
