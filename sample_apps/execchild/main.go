// execchild: os/exec of itself (/proc/self/exe child); the child does one user lookup.
//
// Hidden dependencies exercised: execve of /proc/self/exe (a fork + exec the tracer must
// follow: PTRACE_EVENT_FORK/VFORK/EXEC), then in the child the os/user path of userlookup
// (cgo: getpwuid_r -> /etc/nsswitch.conf, /etc/passwd; pure: /etc/passwd). The parent waits
// and exits with 0 only if the child did.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "child" {
		u, err := user.LookupId("0") // expect:child-lookupid
		if err != nil {
			fmt.Println("child: LookupId(0): error:", err)
			os.Exit(1)
		}
		fmt.Printf("child pid %d: LookupId(0): %s\n", os.Getpid(), u.Username)
		return
	}
	cmd := exec.Command("/proc/self/exe", "child")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil { // expect:exec-self
		fmt.Println("parent: child failed:", err)
		os.Exit(1)
	}
	fmt.Printf("parent pid %d: child %d exited 0\n", os.Getpid(), cmd.Process.Pid)
}
