// x509roots: crypto/x509.SystemCertPool.
//
// Hidden dependencies exercised: pure Go on Linux (no cgo), in every build mode: reads the
// first existing CA bundle (/etc/ssl/certs/ca-certificates.crt on Debian) and then every
// entry of /etc/ssl/certs and /etc/pki/tls/certs (readlinkat on symlinks). SSL_CERT_FILE and
// SSL_CERT_DIR replace those lists. On scratch images the pool is silently empty.
package main

import (
	"crypto/x509"
	"fmt"
	"os"
)

func main() {
	pool, err := x509.SystemCertPool() // expect:systemcertpool
	if err != nil {
		fmt.Println("SystemCertPool: error:", err)
		os.Exit(1)
	}
	//lint:ignore SA1019 Subjects lists the roots loaded from files on Linux
	n := len(pool.Subjects())
	fmt.Printf("SystemCertPool: %d certificates\n", n)
}
