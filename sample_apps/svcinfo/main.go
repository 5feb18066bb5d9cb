// svcinfo: a service's owner and address, looked up the way a daemon logs them at start-up.
//
// Hidden dependencies exercised: with cgo, user.LookupId of an id the files source lacks goes
// through glibc NSS (nsswitch.conf, passwd, then the NSS modules after `files`, such as
// libnss_systemd.so.2 on Debian) and user.LookupGroup reads /etc/group through getgrnam_r;
// net.LookupHost asks the DNS server of resolv.conf (hosts first) and net.LookupPort goes
// through getaddrinfo (/etc/services). Pure Go reads passwd, group, nsswitch.conf,
// resolv.conf, hosts and services itself. A failed lookup is printed, not fatal: exit 0.
// Resolves a name only the loopback responder knows: run it only in a network namespace
// whose resolv.conf names 127.0.0.1 (needs_dns).
//
// Usage: svcinfo [-uid ID] [-group NAME] [-host NAME] [-service NAME]
package main

import (
	"flag"
	"fmt"
	"net"
	"os/user"
	"strings"
)

func main() {
	uid := flag.String("uid", "4242", "id of the service's user (unknown to /etc/passwd)")
	group := flag.String("group", "root", "the service's group")
	host := flag.String("host", "svc.cgotrace.test", "the service's host name")
	service := flag.String("service", "http", "the service's port name")
	flag.Parse()

	if u, err := user.LookupId(*uid); err != nil { // expect:owner
		fmt.Println("owner:", err)
	} else {
		fmt.Println("owner:", u.Username)
	}
	if g, err := user.LookupGroup(*group); err != nil { // expect:group
		fmt.Println("group:", err)
	} else {
		fmt.Println("group:", g.Name, g.Gid)
	}
	if addrs, err := net.LookupHost(*host); err != nil { // expect:host
		fmt.Println("host:", err)
	} else {
		fmt.Println("host:", *host, strings.Join(addrs, " "))
	}
	if port, err := net.LookupPort("tcp", *service); err != nil { // expect:port
		fmt.Println("port:", err)
	} else {
		fmt.Println("port:", *service, port)
	}
}
