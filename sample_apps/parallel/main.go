// parallel: eight goroutines doing user and port lookups at the same moment.
//
// Hidden dependencies exercised: the os/user and net.LookupPort paths of userlookup and
// dnslookup (cgo: getpwuid_r, getpwnam_r, getgrgid_r, getgrnam_r, getaddrinfo on
// /etc/passwd, /etc/group, /etc/services, /etc/nsswitch.conf; pure: Go file parsers), from
// eight call sites at once. With cgo each blocked C call holds its own OS thread, so the
// tracer sees the accesses interleaved across threads and must keep each one with its own
// goroutine's stack. No lookup leaves the machine (no host names are resolved). It looks up
// the Debian base users and groups daemon (1), bin (2), sys (3), not root: os/user answers a
// lookup of the current user from a cache (Current), which would hide the C call.
package main

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"sync"
)

type result struct {
	what string
	val  string
	err  error
}

func main() {
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	results := make([]result, 8)
	for i := 0; i < 8; i++ {
		ready.Add(1)
		done.Add(1)
		go func(i int) {
			defer done.Done()
			ready.Done()
			<-start // every goroutine is running before any lookup starts
			results[i] = lookup(i)
		}(i)
	}
	ready.Wait()
	close(start)
	done.Wait()
	failed := false
	for i, r := range results {
		if r.err != nil {
			failed = true
			fmt.Printf("%d %s: error: %v\n", i, r.what, r.err)
		} else {
			fmt.Printf("%d %s: %s\n", i, r.what, r.val)
		}
	}
	if failed {
		os.Exit(1)
	}
}

// lookup runs lookup number i; each has its own call site (and marker).
func lookup(i int) result {
	switch i {
	case 0:
		u, err := user.LookupId("1") // expect:par0
		return res("LookupId(1)", u, err)
	case 1:
		u, err := user.Lookup("bin") // expect:par1
		return res("Lookup(bin)", u, err)
	case 2:
		g, err := user.LookupGroupId("3") // expect:par2
		return gres("LookupGroupId(3)", g, err)
	case 3:
		g, err := user.LookupGroup("sys") // expect:par3
		return gres("LookupGroup(sys)", g, err)
	case 4:
		p, err := net.LookupPort("tcp", "http") // expect:par4
		return pres("LookupPort(tcp/http)", p, err)
	case 5:
		u, err := user.LookupId("2") // expect:par5
		return res("LookupId(2)", u, err)
	case 6:
		u, err := user.Lookup("daemon") // expect:par6
		return res("Lookup(daemon)", u, err)
	default:
		p, err := net.LookupPort("udp", "domain") // expect:par7
		return pres("LookupPort(udp/domain)", p, err)
	}
}

func res(what string, u *user.User, err error) result {
	if err != nil {
		return result{what: what, err: err}
	}
	return result{what: what, val: u.Username + " uid=" + u.Uid}
}

func gres(what string, g *user.Group, err error) result {
	if err != nil {
		return result{what: what, err: err}
	}
	return result{what: what, val: g.Name + " gid=" + g.Gid}
}

func pres(what string, p int, err error) result {
	return result{what: what, val: fmt.Sprint(p), err: err}
}
