// leaderexit: the thread-group leader exits while the other threads keep working.
//
// Hidden dependencies exercised: none on purpose; a ptrace corner case. The main goroutine is
// locked to the leader thread and calls into C, where the leader ends itself with a raw
// exit(2) syscall (glibc's pthread_exit would unwind through Go frames, and Go's runtime
// never calls __libc_start_main, which sets up the main thread's unwind buffer). The leader
// becomes a zombie; another thread then opens "/" (present in every rootfs) 20 times and
// exits the process with status 0. A tracer must keep going until no traced thread remains.
package main

/*
#include <sys/syscall.h>
#include <unistd.h>

static void cgotrace_exit_leader(void) { syscall(SYS_exit, 0); }
*/
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"
)

func init() {
	runtime.LockOSThread()
}

func main() {
	if syscall.Gettid() != os.Getpid() {
		fmt.Println("leaderexit: main is not on the leader thread")
		os.Exit(1)
	}
	go worker()
	fmt.Printf("leaderexit: leader %d exits now\n", os.Getpid())
	C.cgotrace_exit_leader() // expect:leader-exit
	fmt.Println("leaderexit: leader still alive after exit(2)")
	os.Exit(1)
}

func worker() {
	// Wait until the leader is a zombie, so the opens below happen after it exited.
	deadline := time.Now().Add(5 * time.Second)
	for leaderAlive() {
		if time.Now().After(deadline) {
			fmt.Println("leaderexit: leader did not exit")
			os.Exit(1)
		}
		time.Sleep(time.Millisecond)
	}
	opened := 0
	for i := 0; i < 20; i++ {
		f, err := os.Open("/") // expect:leaderexit-open
		if err == nil {
			f.Close()
			opened++
		}
	}
	fmt.Printf("leaderexit: worker tid %d opened / %d times after the leader exited\n",
		syscall.Gettid(), opened)
	os.Exit(0)
}

// leaderAlive reads the leader's state from /proc: "Z" (zombie) once it has exited.
func leaderAlive() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", os.Getpid(), os.Getpid()))
	if err != nil {
		return false
	}
	// Field 3 follows "pid (comm) ".
	for i := len(b) - 1; i > 0; i-- {
		if b[i] == ')' && i+2 < len(b) {
			return b[i+2] != 'Z' && b[i+2] != 'X'
		}
	}
	return false
}
