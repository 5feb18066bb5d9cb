// nonleaderexec: execve from a thread that is not the thread-group leader.
//
// Hidden dependencies exercised: none on purpose; a ptrace corner case. The main goroutine
// stays locked to the leader thread while another goroutine, locked to a different thread,
// calls syscall.Exec. The kernel then kills every other thread and the exec is reported
// under the leader's tid (PTRACE_GETEVENTMSG gives the old tid). Target: argv[1] "self"
// (default: re-exec /proc/self/exe with "child", which prints and exits 0) or "true"
// (/bin/true).
package main

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
)

func init() {
	runtime.LockOSThread() // keep main on the leader thread, so the exec cannot run there
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "child" {
		fmt.Printf("nonleaderexec child: pid %d tid %d, exec from a non-leader thread done\n",
			os.Getpid(), syscall.Gettid())
		return
	}
	target := "self"
	if len(os.Args) > 1 {
		target = os.Args[1]
	}
	path, argv := "/proc/self/exe", []string{os.Args[0], "child"}
	if target == "true" {
		path, argv = "/bin/true", []string{"true"}
	} else if target != "self" {
		fmt.Println("usage: nonleaderexec [self|true]")
		os.Exit(2)
	}
	failed := make(chan error)
	go func() {
		runtime.LockOSThread()
		tid := syscall.Gettid()
		if tid == os.Getpid() {
			failed <- fmt.Errorf("exec goroutine landed on the leader thread")
			return
		}
		fmt.Printf("nonleaderexec: pid %d, exec of %s from tid %d\n", os.Getpid(), path, tid)
		failed <- syscall.Exec(path, argv, os.Environ()) // expect:nonleader-exec
	}()
	fmt.Println("nonleaderexec: exec failed:", <-failed)
	os.Exit(1)
}
