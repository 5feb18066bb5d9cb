// userlookup: os/user lookups.
//
// Hidden dependencies exercised: with cgo (cgo, static, musl, stripped, pie, external modes)
// each lookup goes through libc (getpwuid_r, getpwnam_r, getgrnam_r): glibc reads
// /etc/nsswitch.conf, tries the nscd socket, reads /etc/passwd and /etc/group, and dlopens
// NSS modules such as libnss_systemd.so.2 for names the files source lacks; musl opens
// /etc/passwd with open(2). Pure Go (pure, netgo modes) reads /etc/passwd and /etc/group itself.
// The static mode crashes (exit 2, SIGSEGV in getpwuid_r) on Debian: the unknown uid makes the
// static glibc dlopen the host's libnss_systemd.so.2. That hazard is kept on purpose.
package main

import (
	"fmt"
	"os"
	"os/user"
)

func main() {
	u, err := user.LookupId("0") // expect:lookupid
	fmt.Println("LookupId(0):", name(u), err)

	_, err = user.LookupId("4242424") // expect:lookupid-unknown
	fmt.Println("LookupId(4242424):", err)

	cur, err := user.Current() // expect:current
	fmt.Println("Current:", name(cur), err)

	g, err := user.LookupGroup("root") // expect:lookupgroup
	if err == nil {
		fmt.Println("LookupGroup(root):", g.Gid)
	} else {
		fmt.Println("LookupGroup(root):", err)
	}
	os.Exit(0)
}

func name(u *user.User) string {
	if u == nil {
		return "<nil>"
	}
	return u.Username
}
