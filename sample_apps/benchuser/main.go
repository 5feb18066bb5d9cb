// benchuser: N user.LookupId(UID) calls (bench workload, cgo lookups).
//
// Hidden dependencies exercised: the os/user path of userlookup, N times: with cgo each call
// is a getpwuid_r that opens /etc/passwd again (plus nscd/nsswitch probes); pure Go parses
// /etc/passwd each time. Usage: benchuser [N [UID]] (default 20000 and uid 1, daemon).
// The uid must not be the caller's own: LookupId answers the current user from the cache
// user.Current fills once, so LookupId("0") run as root would make no C call at all.
package main

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"time"
)

func main() {
	n := 20000
	if len(os.Args) > 1 {
		v, err := strconv.Atoi(os.Args[1])
		if err != nil || v < 1 {
			fmt.Println("usage: benchuser [N [UID]]")
			os.Exit(2)
		}
		n = v
	}
	uid := "1"
	if len(os.Args) > 2 {
		uid = os.Args[2]
	}
	t0 := time.Now()
	for i := 0; i < n; i++ {
		if _, err := user.LookupId(uid); err != nil { // expect:benchuser
			fmt.Println("benchuser:", err)
			os.Exit(1)
		}
	}
	fmt.Printf("benchuser: %d LookupId(%s) in %.3f s\n", n, uid, time.Since(t0).Seconds())
}
